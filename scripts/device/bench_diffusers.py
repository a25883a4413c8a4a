"""The reference side of the GPU benchmark (scripts/device/check.sh, issue #24): one LoRA training
step of diffusers' WanTransformer3DModel (Wan 2.1 T2V 1.3B shapes, random weights) in PyTorch eager,
bf16, gradient checkpointing on every block, LoRA rank 16 on the attention projections (SimpleTuner's
Wan targets), AdamW on the LoRA weights, at 832x480x81 (21x60x104 latents = 32,760 tokens).

diffusers comes from .device/src/diffusers-<commit>.tar.xz (carried: the GPU machine has none).
Prints and writes one JSON object: s/step (median of the timed steps), peak GPU memory, model FLOPs
per step (3x the forward's matrix products and attention) and MFU against the card's bf16 peak.
"""
import argparse
import glob
import json
import os
import statistics
import sys
import tarfile
import time

# H100 SXM and H200 dense bf16 peak (NVIDIA data sheets); other cards: pass --peak_tflops.
PEAKS = {"H100": 989.0, "H200": 989.0}


def model_flops(tokens, text_tokens=512, dim=1536, ffn=8960, layers=30):
    """Forward FLOPs of the Wan transformer blocks (2 per multiply-add): self-attention projections
    (q, k, v, o), cross-attention q/o on the video tokens and k/v on the text, the feed-forward, and
    the two attention products of self (L x L) and cross (L x text) attention."""
    per_layer = (
        tokens * (8 * dim * dim + 4 * dim * dim + 4 * dim * ffn)
        + text_tokens * 4 * dim * dim
        + 4 * tokens * tokens * dim
        + 4 * tokens * text_tokens * dim
    )
    return per_layer * layers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--tiny", action="store_true", help="2 blocks of width 64 (CPU rehearsal)")
    ap.add_argument("--peak_tflops", type=float, default=0.0)
    a = ap.parse_args()

    src = sorted(glob.glob(".device/src/diffusers-*.tar.xz"))
    if src:
        dest = "/tmp/st-diffusers"
        if not os.path.isdir(dest):
            with tarfile.open(src[-1]) as t:
                t.extractall(dest)
        sys.path.insert(0, os.path.join(dest, "diffusers", "src"))
    import torch
    from diffusers import WanTransformer3DModel
    from peft import LoraConfig

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    dt = torch.bfloat16
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
               out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
               cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
    if a.tiny:
        cfg.update(num_attention_heads=2, attention_head_dim=32, text_dim=32, freq_dim=32, ffn_dim=128, num_layers=2)
    torch.manual_seed(0)
    model = WanTransformer3DModel(**cfg).to(dev, dt)
    model.requires_grad_(False)
    model.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian",
                                 target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    lora = [p for p in model.parameters() if p.requires_grad]
    for p in lora:
        p.data = p.data.float()  # SimpleTuner keeps the trained LoRA weights in fp32
    model.enable_gradient_checkpointing()
    model.train()
    opt = torch.optim.AdamW(lora, lr=1e-4)

    lat_f, lat_h, lat_w = (a.frames - 1) // 4 + 1, a.height // 8, a.width // 8
    tokens = lat_f * (lat_h // 2) * (lat_w // 2)
    x = torch.randn(1, 16, lat_f, lat_h, lat_w, device=dev, dtype=dt)
    text = torch.randn(1, 512, cfg["text_dim"], device=dev, dtype=dt)
    target = torch.randn(1, 16, lat_f, lat_h, lat_w, device=dev, dtype=torch.float32)
    t = torch.tensor([500], device=dev)

    def step():
        with torch.autocast(dev.type, dtype=dt):
            out = model(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(out.float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    times = []
    for i in range(a.warmup + a.steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = a.peak_tflops or next((v for k, v in PEAKS.items() if k in name), 0.0)
    flops = 3 * model_flops(tokens, 512, cfg["num_attention_heads"] * cfg["attention_head_dim"], cfg["ffn_dim"],
                            cfg["num_layers"])
    r = {
        "impl": "diffusers WanTransformer3DModel (PyTorch eager)",
        "torch": torch.__version__,
        "device": name,
        "tokens": tokens,
        "s_per_step": round(s, 4),
        "step_times": [round(v, 4) for v in times],
        "model_tflop_per_step": round(flops / 1e12, 2),
        "mfu": round(flops / s / (peak * 1e12), 4) if peak else None,
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
    }
    print(json.dumps(r))
    with open(a.out, "w") as f:
        json.dump(r, f)


if __name__ == "__main__":
    main()
