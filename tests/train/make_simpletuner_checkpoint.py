"""Writes the checkpoint SimpleTuner would have written for the state of an st checkpoint, the way
SimpleTuner writes it (simpletuner/helpers/training/save_hooks.py, accelerate's save_state):

  pytorch_lora_weights.safetensors  diffusers names (transformer.blocks.0.attn1.to_q.lora_A.weight)
  optimizer.bin                     torch.save(torch.optim.AdamW(...).state_dict()): parameter ids in
                                    the order peft's model gives them to the optimizer
  scheduler.bin, random_states_0.pkl, training_state.json

The optimizer's parameter order is computed here from diffusers' module registration order of
WanTransformer3DModel (models/transformers/transformer_wan.py: blocks in index order; in a block
attn1, attn2, ffn; in WanAttention to_q, to_k, to_v, to_out, norm_q, norm_k, add_k_proj,
add_v_proj; in FeedForward net.0.proj, net.2) with peft's lora_A before lora_B; it shares no code
with st's mapping.

usage: make_simpletuner_checkpoint.py ST_CHECKPOINT OUT_DIR [--order diffusers|reversed]
                                      [--extra-state KEY] [--epoch N --epoch-step N]
"""

import argparse
import json
import os
import pickle
import shutil
import struct

import torch

ATTENTION = ["to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj"]
FFN = ["net.0.proj", "net.2"]
BLOCK = ["attn1", "attn2", "ffn"]


def read_safetensors(path):
    kinds = {"F32": (torch.float32, "f", 4), "F64": (torch.float64, "d", 8), "I64": (torch.int64, "q", 8)}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        dtype, fmt, size = kinds[info["dtype"]]
        a, b = info["data_offsets"]
        values = struct.unpack("<%d%s" % ((b - a) // size, fmt), data[a:b])
        out[name] = torch.tensor(values, dtype=dtype).reshape(info["shape"])
    return out, meta


def diffusers_rank(name):
    """Position of an st LoRA parameter name (blocks.0.attn1.to_q.lora_A.weight) in peft's order."""
    parts = name.split(".")
    assert parts[0] == "blocks", name
    block, sub = int(parts[1]), parts[2]
    module = ".".join(parts[3:-2])
    within = (ATTENTION if sub != "ffn" else FFN).index(module)
    return (block, BLOCK.index(sub), within, ["lora_A", "lora_B"].index(parts[-2]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("st_checkpoint")
    ap.add_argument("out")
    ap.add_argument("--order", default="diffusers")
    ap.add_argument("--extra-state", default="")
    ap.add_argument("--epoch", type=int, default=1)
    ap.add_argument("--epoch-step", type=int, default=0)
    args = ap.parse_args()

    tensors, meta = read_safetensors(os.path.join(args.st_checkpoint, "optimizer.safetensors"))
    state_meta = json.loads(meta["st_state_meta"])
    names = sorted(state_meta["params"], key=diffusers_rank)
    if args.order == "reversed":
        names.reverse()
    state = {}
    for i, name in enumerate(names):
        entry = {"step": torch.tensor(float(state_meta["params"][name]["step"]))}
        for key in ("exp_avg", "exp_avg_sq"):
            entry[key] = tensors[name + "::" + key]
        if args.extra_state:
            entry[args.extra_state] = torch.zeros_like(entry["exp_avg"])
        state[i] = entry
    group = dict(lr=state_meta["groups"][0]["lr"], betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=state_meta["groups"][0]["weight_decay"], amsgrad=False, maximize=False,
                 foreach=None, capturable=False, differentiable=False, fused=None,
                 params=list(range(len(names))))
    os.makedirs(args.out, exist_ok=True)
    torch.save({"state": state, "param_groups": [group]}, os.path.join(args.out, "optimizer.bin"))
    step = max(p["step"] for p in state_meta["params"].values())
    torch.save({"base_lrs": [group["lr"]], "last_epoch": step, "_step_count": step + 1, "verbose": False,
                "_get_lr_called_within_step": False, "_last_lr": [group["lr"]], "lr_lambdas": [None]},
               os.path.join(args.out, "scheduler.bin"))
    with open(os.path.join(args.out, "random_states_0.pkl"), "wb") as f:
        pickle.dump({"random_state": None, "torch_manual_seed": torch.get_rng_state()}, f)
    with open(os.path.join(args.out, "training_state.json"), "w") as f:
        json.dump({"global_step": step, "epoch_step": args.epoch_step, "epoch": args.epoch,
                   "exhausted_backends": [], "repeats": {}}, f)
    shutil.copyfile(os.path.join(args.st_checkpoint, "pytorch_lora_weights_diffusers.safetensors"),
                    os.path.join(args.out, "pytorch_lora_weights.safetensors"))


if __name__ == "__main__":
    main()
