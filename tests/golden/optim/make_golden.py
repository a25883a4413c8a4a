#!/usr/bin/python3
"""Golden values for tests/optim (plugins/optim).

Run with Debian's interpreter (it has torch 1.13):  /usr/bin/python3 tests/golden/optim/make_golden.py
Writes tests/golden/optim/optim_golden.json (small: ~60 parameters, 25 steps).

What is in it:
  * adamw          torch.optim.AdamW itself, fp32, two param groups (one with weight decay), a learning
                   rate that changes every step (exercises set_lr).
  * lion, optimi-adamw, optimi-lion
                   float64 reference implementations of the published update rules (written below),
                   on the same fp32 inputs.
  * optimi-adamw-bf16, optimi-lion-bf16
                   the same float64 references, for bf16 parameters (tests check Kahan summation keeps
                   the bf16 weights within bf16 rounding of the float64 trajectory).
  * adamw_bf16     (a) a bf16 replica with the exact torch operations of the published AdamW_BF16 step
                   (deterministic rounding), (b) a float64 "ideal" run of the same rule; tests check
                   p + shift tracks (b) and p matches (a).
  * schedulers     lr of updates 0..N for each scheduler, from SimpleTuner's/diffusers' code paths
                   re-written here (SimpleTuner's T_cur arithmetic included literally).
Inputs are generated from torch.manual_seed(1234) and stored, so the C++ side needs no RNG.
"""
import json
import math
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 25
CHECKPOINTS = [1, 2, 10, 25]
DECAY_THRESHOLD = 5e-3


def name_fraction(name):
    """FNV-1a 64 of the name, top 53 bits / 2^53 (same as st::plugins::optim::name_fraction)."""
    h = 0xCBF29CE484222325
    for c in name.encode("utf-8"):
        h ^= c
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return (h >> 11) / 9007199254740992.0


def make_inputs():
    torch.manual_seed(1234)
    specs = [("blocks.0.weight", [4, 6], 0), ("blocks.0.bias", [6], 0), ("head.weight", [3, 5], 1)]
    params = {}
    for name, shape, group in specs:
        params[name] = {"shape": shape, "group": group, "values": torch.randn(shape).flatten().tolist()}
    grads = []
    for t in range(STEPS):
        step = {}
        for name, shape, _ in specs:
            # A consistent direction plus noise, so the moments build up like in training.
            g = 0.3 * torch.tensor(params[name]["values"]).view(shape) + 0.5 * torch.randn(shape)
            step[name] = g.flatten().tolist()
        grads.append(step)
    return specs, params, grads


def lr_factor(t):
    """Per-step multiplier of the group lrs (tests call set_lr with base * factor before step t)."""
    return 1.0 - t / 50.0


def to_list(t):
    return t.detach().to(torch.float64).flatten().tolist()


def run_torch_adamw(specs, params, grads, groups, hp):
    tensors = {n: torch.tensor(params[n]["values"], dtype=torch.float32).view(s).requires_grad_(True)
               for n, s, _ in specs}
    pg = []
    for gi, g in enumerate(groups):
        pg.append({"params": [tensors[n] for n, _, grp in specs if grp == gi], "lr": g["lr"],
                   "weight_decay": g["weight_decay"]})
    opt = torch.optim.AdamW(pg, betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"])
    out = {}
    for t in range(STEPS):
        for gi, g in enumerate(opt.param_groups):
            g["lr"] = groups[gi]["lr"] * lr_factor(t)
        for n, s, _ in specs:
            tensors[n].grad = torch.tensor(grads[t][n], dtype=torch.float32).view(s)
        opt.step()
        if t + 1 in CHECKPOINTS:
            out[str(t + 1)] = {n: to_list(tensors[n]) for n, _, _ in specs}
    return out


def run_f64(specs, params, grads, groups, hp, rule, dtype=torch.float64):
    """Float64 reference of `rule` (state in float64). `dtype` = the dtype the initial params are
    rounded to first (bf16 runs start from the bf16-rounded weights)."""
    p = {n: torch.tensor(params[n]["values"], dtype=torch.float32).to(dtype).to(torch.float64) for n, _, _ in specs}
    g64 = lambda t, n: torch.tensor(grads[t][n], dtype=torch.float32).to(dtype).to(torch.float64)
    state = {n: {"m": torch.zeros_like(p[n]), "v": torch.zeros_like(p[n]),
                 "acc": name_fraction(n) * DECAY_THRESHOLD} for n, _, _ in specs}
    out = {}
    for t in range(STEPS):
        step = t + 1
        for n, _, grp in specs:
            lr = groups[grp]["lr"] * lr_factor(t)
            wd = groups[grp]["weight_decay"]
            rule(p, n, g64(t, n), state[n], lr, wd, hp, step)
        if step in CHECKPOINTS:
            out[str(step)] = {n: p[n].tolist() for n, _, _ in specs}
    return out


def rule_lion(p, n, g, s, lr, wd, hp, step):
    # Chen et al. 2023, Algorithm 2 (decoupled weight decay).
    b1, b2 = hp["beta1"], hp["beta2"]
    p[n] = p[n] * (1 - lr * wd)
    c = b1 * s["m"] + (1 - b1) * g
    p[n] = p[n] - lr * torch.sign(c)
    s["m"] = b2 * s["m"] + (1 - b2) * g


def rule_optimi_adamw(p, n, g, s, lr, wd, hp, step):
    # Adam with bias-corrected moments (optimi's debiased betas are exactly this) and decoupled decay.
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    p[n] = p[n] * (1 - lr * wd)
    s["m"] = b1 * s["m"] + (1 - b1) * g
    s["v"] = b2 * s["v"] + (1 - b2) * g * g
    m_hat = s["m"] / (1 - b1 ** step)
    v_hat = s["v"] / (1 - b2 ** step)
    p[n] = p[n] - lr * m_hat / (v_hat.sqrt() + eps)


def rule_adamw_bf16_ideal(p, n, g, s, lr, wd, hp, step):
    # AdamW_BF16's rule without rounding: no beta1 bias correction, step lr * sqrt(1 - beta2^t),
    # weight decay applied lazily once the accumulated lr * wd passes 5e-3.
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    s["acc"] += wd * lr
    decay_now = s["acc"] if s["acc"] > DECAY_THRESHOLD else 0.0
    s["acc"] -= decay_now
    s["m"] = b1 * s["m"] + (1 - b1) * g
    s["v"] = b2 * s["v"] + (1 - b2) * g * g
    p[n] = p[n] - lr * math.sqrt(1 - b2 ** step) * s["m"] / (s["v"].sqrt() + eps)
    if decay_now > 0:
        p[n] = p[n] - decay_now * p[n]


def run_adamw_bf16_replica(specs, params, grads, groups, hp):
    """The published AdamW_BF16 step with deterministic rounding, op by op, in bf16."""
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    p = {n: torch.tensor(params[n]["values"], dtype=torch.float32).view(s).to(torch.bfloat16) for n, s, _ in specs}
    st = {n: {"m": torch.zeros_like(p[n]), "v": torch.zeros_like(p[n]), "shift": torch.zeros_like(p[n]),
              "acc": name_fraction(n) * DECAY_THRESHOLD} for n, _, _ in specs}
    out = {}
    for t in range(STEPS):
        step = t + 1
        for n, shape, grp in specs:
            lr = groups[grp]["lr"] * lr_factor(t)
            wd = groups[grp]["weight_decay"]
            g = torch.tensor(grads[t][n], dtype=torch.float32).view(shape).to(torch.bfloat16)
            s = st[n]
            s["acc"] += wd * lr
            decay_now = s["acc"] if s["acc"] > DECAY_THRESHOLD else 0.0
            s["acc"] -= decay_now
            s["m"].mul_(b1).add_(g, alpha=1 - b1)
            s["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
            corr = (1 - b2 ** float(step)) ** 0.5
            s["shift"].addcdiv_(s["m"], s["v"].sqrt().add_(eps), value=-lr * corr)
            before = p[n].clone()
            p[n].add_(s["shift"])
            s["shift"].add_(before.sub_(p[n]))
            if decay_now > 0:
                s["shift"].add_(p[n], alpha=-decay_now)
        if step in CHECKPOINTS:
            out[str(step)] = {n: {"param": to_list(p[n]), "shift": to_list(st[n]["shift"])} for n, _, _ in specs}
    return out


# ---------------------------------------------------------------------------------------------
# Schedulers: lr of update k, as the upstream objects would set it (construction sets update 0).

def sched_lambda_lr(lmbda, base_lr, n):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base_lr)
    sch = torch.optim.lr_scheduler.LambdaLR(opt, lmbda)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    return out


def diffusers_constant_with_warmup(w):
    def f(step):
        if step < w:
            return float(step) / float(max(1.0, w))
        return 1.0
    return f


def diffusers_linear(w, total):
    def f(step):
        if step < w:
            return float(step) / float(max(1, w))
        return max(0.0, float(total - step) / float(max(1, total - w)))
    return f


def simpletuner_polynomial(w, total, lr_init, lr_end, power):
    def f(step):
        if step < w:
            return float(step) / float(max(1, w))
        elif step > total:
            return float(lr_end) / float(lr_init)
        lr_range = float(lr_init) - float(lr_end)
        decay_steps = int(total) - int(w)
        pct_remaining = 1 - (step - int(w)) / decay_steps
        decay = lr_range * pct_remaining ** power + float(lr_end)
        return decay / float(lr_init)
    return f


def simpletuner_cosine(base_lr, t0, eta_min, n):
    out = []
    for step in range(n):
        steps_per_epoch = -1
        t_cur = (step // steps_per_epoch) + (step % steps_per_epoch) / steps_per_epoch
        lr = eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t_cur / t0)) / 2
        out.append(math.floor(lr * 1e9) / 1e9)
    return out


def simpletuner_sine(base_lr, t0, eta_min, n):
    return [math.floor((eta_min + (base_lr - eta_min) * (0.5 * (1 + math.sin(math.pi * s / t0)))) * 1e9) / 1e9
            for s in range(n)]


def hard_restarts(base_lr, t0, eta_min, n):
    # The documented SGDR schedule (T_mult = 1) of SimpleTuner's CosineAnnealingHardRestarts.
    out = []
    for step in range(n):
        t_cur = step % t0
        lr = eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * t_cur / t0)) / 2
        out.append(math.floor(lr * 1e9) / 1e9)
    return out


def make_schedulers():
    cases = []
    base, lr_end, power = 1e-4, 4e-7, 0.8
    for w, total in [(0, 40), (10, 40), (7, 23), (1, 5)]:
        n = total + 8
        common = {"warmup": w, "total": total, "lr_end": lr_end, "power": power, "base_lr": base, "steps": n}
        cases.append(dict(common, name="constant", lrs=sched_lambda_lr(lambda _: 1.0, base, n)))
        cases.append(dict(common, name="constant_with_warmup",
                          lrs=sched_lambda_lr(diffusers_constant_with_warmup(w), base, n)))
        cases.append(dict(common, name="linear", lrs=sched_lambda_lr(diffusers_linear(w, total), base, n)))
        if total != w:
            cases.append(dict(common, name="polynomial",
                              lrs=sched_lambda_lr(simpletuner_polynomial(w, total, base, lr_end, power), base, n)))
        t0 = w if w > 0 else 1000
        cases.append(dict(common, name="cosine", lrs=simpletuner_cosine(base, t0, lr_end, n)))
        if w > 0:
            cases.append(dict(common, name="sine", lrs=simpletuner_sine(base, w, lr_end, n)))
            cases.append(dict(common, name="cosine_with_restarts", lrs=hard_restarts(base, w, lr_end, n)))
    # The quickstart pattern: lr_warmup_steps == max_train_steps, cosine decays over the whole run.
    cases.append({"name": "cosine", "warmup": 400, "total": 400, "lr_end": lr_end, "power": power,
                  "base_lr": 5e-5, "steps": 801, "lrs": simpletuner_cosine(5e-5, 400, lr_end, 801)})
    return cases


def main():
    specs, params, grads = make_inputs()
    groups_fp32 = [{"lr": 1e-2, "weight_decay": 0.1}, {"lr": 5e-3, "weight_decay": 0.0}]
    groups_bf16 = [{"lr": 1e-3, "weight_decay": 0.1}, {"lr": 5e-4, "weight_decay": 0.0}]
    hp_adam = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    hp_optimi = {"beta1": 0.9, "beta2": 0.99, "eps": 1e-6}
    hp_lion = {"beta1": 0.9, "beta2": 0.99}
    hp_bf16 = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-6}
    cases = {
        "adamw": {"hparams": hp_adam, "groups": groups_fp32, "dtype": "float32",
                  "checkpoints": run_torch_adamw(specs, params, grads, groups_fp32, hp_adam)},
        "lion": {"hparams": hp_lion, "groups": groups_fp32, "dtype": "float32",
                 "checkpoints": run_f64(specs, params, grads, groups_fp32, hp_lion, rule_lion)},
        "optimi-lion": {"hparams": hp_lion, "groups": groups_fp32, "dtype": "float32",
                        "checkpoints": run_f64(specs, params, grads, groups_fp32, hp_lion, rule_lion)},
        "optimi-adamw": {"hparams": hp_optimi, "groups": groups_fp32, "dtype": "float32",
                         "checkpoints": run_f64(specs, params, grads, groups_fp32, hp_optimi, rule_optimi_adamw)},
        "optimi-adamw-bf16": {"hparams": hp_optimi, "groups": groups_bf16, "dtype": "bfloat16",
                              "checkpoints": run_f64(specs, params, grads, groups_bf16, hp_optimi,
                                                     rule_optimi_adamw, torch.bfloat16)},
        "optimi-lion-bf16": {"hparams": hp_lion, "groups": groups_bf16, "dtype": "bfloat16",
                             "checkpoints": run_f64(specs, params, grads, groups_bf16, hp_lion, rule_lion,
                                                    torch.bfloat16)},
        "adamw_bf16": {"hparams": hp_bf16, "groups": groups_bf16, "dtype": "bfloat16",
                       "checkpoints": run_f64(specs, params, grads, groups_bf16, hp_bf16, rule_adamw_bf16_ideal,
                                              torch.bfloat16),
                       "replica": run_adamw_bf16_replica(specs, params, grads, groups_bf16, hp_bf16)},
    }
    golden = {
        "generator": "tests/golden/optim/make_golden.py",
        "torch": torch.__version__,
        "steps": STEPS,
        "lr_factor": [lr_factor(t) for t in range(STEPS)],
        "params": {n: params[n] for n, _, _ in specs},
        "grads": grads,
        "cases": cases,
        "schedulers": make_schedulers(),
        "name_fraction": {n: name_fraction(n) for n, _, _ in specs},
    }
    path = os.path.join(HERE, "optim_golden.json")
    with open(path, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
