"""Golden values for CREPA made by SimpleTuner's own code: simpletuner/helpers/training/crepa.py
(CrepaRegularizer.compute_loss and CrepaScheduler, imported unchanged from a SimpleTuner checkout).

usage: python3 crepa_reference.py <path of SimpleTuner's crepa.py> <output dir>

Teacher features are given directly (the VAE decode + DINOv2 of compute_loss are replaced on the
instance by functions returning the prepared features: st caches those features, the math after them
is what is compared). Cases cover equal grids, a finer model grid resampled bilinearly to the teacher's
(both square: SimpleTuner's 2-D path), more teacher frames than latent frames, cumulative neighbours with
the weight-sum normalisation, spatial_align false and a warmup weight. Also the weights of every
CrepaScheduler variant over 12 steps with a scripted similarity sequence.
"""

import importlib.util
import json
import os
import sys
import types

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import save_safetensors  # noqa: E402


def load_crepa(path):
    spec = importlib.util.spec_from_file_location("st_crepa_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


BASE = dict(crepa_enabled=True, crepa_block_index=0, crepa_lambda=0.5, crepa_adjacent_distance=1,
            crepa_adjacent_tau=1.0, crepa_encoder="dinov2_vits14", crepa_encoder_image_size=8,
            crepa_normalize_by_frames=True, crepa_spatial_align=True, crepa_cumulative_neighbors=False,
            crepa_normalize_neighbour_sum=False, crepa_scheduler="constant", crepa_warmup_steps=0,
            crepa_decay_steps=0, crepa_lambda_end=0.0, crepa_power=1.0, crepa_cutoff_step=0,
            crepa_similarity_threshold=None, crepa_similarity_ema_decay=0.99, crepa_threshold_mode="permanent")

# name: (config overrides, B, T model frames, model grid (r, c), T teacher frames, teacher grid, step)
ALIGN_CASES = {
    "equal": ({}, 2, 3, (4, 4), 3, (4, 4), 5),
    "down": ({"crepa_adjacent_distance": 2}, 1, 4, (4, 4), 4, (2, 2), 0),
    "frames": ({}, 1, 3, (2, 2), 5, (2, 2), 3),
    "cumulative": ({"crepa_adjacent_distance": 2, "crepa_cumulative_neighbors": True,
                    "crepa_normalize_neighbour_sum": True, "crepa_adjacent_tau": 0.7}, 2, 4, (3, 3), 4, (3, 3), 1),
    "pooled": ({"crepa_spatial_align": False, "crepa_normalize_by_frames": False}, 1, 3, (4, 4), 3, (2, 2), 2),
    "warmup": ({"crepa_warmup_steps": 10, "crepa_lambda": 0.8}, 1, 2, (2, 2), 2, (2, 2), 4),
}

SCHEDULES = {
    "constant_warmup": {"crepa_warmup_steps": 4},
    "linear": {"crepa_scheduler": "linear", "crepa_warmup_steps": 2, "crepa_decay_steps": 10, "crepa_lambda_end": 0.1},
    "cosine": {"crepa_scheduler": "cosine", "crepa_lambda_end": 0.05},
    "polynomial": {"crepa_scheduler": "polynomial", "crepa_power": 2.0, "crepa_decay_steps": 8},
    "cutoff_step": {"crepa_cutoff_step": 6},
    "threshold_permanent": {"crepa_similarity_threshold": 0.5, "crepa_similarity_ema_decay": 0.5},
    "threshold_recoverable": {"crepa_similarity_threshold": 0.5, "crepa_similarity_ema_decay": 0.5,
                              "crepa_threshold_mode": "recoverable"},
}
SIMILARITIES = [0.1, 0.3, 0.9, 0.95, 0.2, 0.1, 0.0, 0.8, 0.9, 0.1, 0.0, 0.0]
TOTAL_STEPS = 12


def main():
    crepa = load_crepa(sys.argv[1])
    out_dir = sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(20261206)
    tensors, cases = {}, {}
    hidden, enc = 6, 5
    for name, (over, b, t, pgrid, tf, fgrid, step) in ALIGN_CASES.items():
        cfg = types.SimpleNamespace(**{**BASE, **over})
        acc = types.SimpleNamespace(device=torch.device("cpu"))
        reg = crepa.CrepaRegularizer(cfg, acc, hidden, max_train_steps=TOTAL_STEPS)
        reg.projector = torch.nn.Sequential(torch.nn.LayerNorm(hidden), torch.nn.Linear(hidden, enc))
        with torch.no_grad():
            reg.projector[0].weight.copy_(1 + 0.1 * torch.randn(hidden))
            reg.projector[0].bias.copy_(0.1 * torch.randn(hidden))
        h = torch.randn(b, t, pgrid[0] * pgrid[1], hidden)
        feats = torch.randn(b, tf, fgrid[0] * fgrid[1], enc)
        reg._decode_latents_unified = lambda latents, vae: None
        reg._encode_frames = lambda video, f=feats: f
        loss, log = reg.compute_loss(h, torch.zeros(1), vae=object(), step=step)
        loss.backward()
        p = f"{name}_"
        tensors[p + "hidden"] = h
        tensors[p + "features"] = feats
        tensors[p + "ln_weight"] = reg.projector[0].weight.detach().clone()
        tensors[p + "ln_bias"] = reg.projector[0].bias.detach().clone()
        tensors[p + "linear_weight"] = reg.projector[1].weight.detach().clone()
        tensors[p + "linear_bias"] = reg.projector[1].bias.detach().clone()
        tensors[p + "loss"] = loss.detach().reshape(1)
        tensors[p + "grad_linear_weight"] = reg.projector[1].weight.grad.clone()
        cases[name] = {"config": over, "batch": b, "frames": t, "grid": list(pgrid), "teacher_frames": tf,
                       "teacher_grid": list(fgrid), "step": step, "total_steps": TOTAL_STEPS,
                       "log": {k: (float(v) if not isinstance(v, bool) else v) for k, v in log.items()}}
    schedules = {}
    for name, over in SCHEDULES.items():
        cfg = types.SimpleNamespace(**{**BASE, **over})
        s = crepa.CrepaScheduler(cfg, TOTAL_STEPS)
        schedules[name] = {"config": over, "weights": [s.get_weight(i, similarity=SIMILARITIES[i])
                                                       for i in range(TOTAL_STEPS)]}
    save_safetensors(os.path.join(out_dir, "alignment.safetensors"), tensors)
    with open(os.path.join(out_dir, "case.json"), "w") as f:
        json.dump({"producer": "bghira/SimpleTuner simpletuner/helpers/training/crepa.py (CrepaRegularizer."
                               "compute_loss, CrepaScheduler.get_weight), imported unchanged",
                   "hidden": hidden, "encoder_dim": enc, "alignment": cases,
                   "similarities": SIMILARITIES, "total_steps": TOTAL_STEPS, "schedules": schedules},
                  f, indent=1)


if __name__ == "__main__":
    main()
