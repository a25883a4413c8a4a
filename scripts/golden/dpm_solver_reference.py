"""Golden values for st's DPMSolverMultistepSampler made by diffusers' own
DPMSolverMultistepScheduler (src/diffusers/schedulers/scheduling_dpmsolver_multistep.py, loaded unchanged
from a diffusers checkout; the few diffusers imports it needs are stubbed in an in-memory package).

usage: /usr/bin/python3 dpm_solver_reference.py <diffusers>/src/diffusers/schedulers/scheduling_dpmsolver_multistep.py <output dir>

The base configuration is Sana Video 480p's scheduler (Efficient-Large-Model/SANA-Video_2B_480p_diffusers,
scheduler/scheduler_config.json: what diffusers' scripts/convert_sana_video_to_diffusers.py saves for
DPMSolverMultistepScheduler(flow_shift=8.0, use_flow_sigmas=True, prediction_type="flow_prediction")).
Each case overrides a few keys, is written to <case>/scheduler_config.json the way save_config() writes it
(Python json: lambda_min_clipped is the non-standard literal -Infinity) and is sampled with the analytic fake
model v = 0.3 x + 0.2 tanh(x) t / 1000 + 0.1 t / 1000 (t = the scheduler's int64 timestep as a float), from
initial_noise (torch.manual_seed(0), randn [1, 4, 2, 4, 4]).
"""

import dataclasses
import enum
import functools
import importlib.util
import inspect
import json
import math
import os
import sys
import types

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import save_safetensors  # noqa: E402

SANA_480P = {
    "_class_name": "DPMSolverMultistepScheduler",
    "_diffusers_version": "0.36.0.dev0",
    "algorithm_type": "dpmsolver++",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "dynamic_thresholding_ratio": 0.995,
    "euler_at_final": False,
    "final_sigmas_type": "zero",
    "flow_shift": 8.0,
    "lambda_min_clipped": -math.inf,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "prediction_type": "flow_prediction",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "solver_order": 2,
    "solver_type": "midpoint",
    "steps_offset": 0,
    "thresholding": False,
    "time_shift_type": "exponential",
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "use_beta_sigmas": False,
    "use_dynamic_shifting": False,
    "use_exponential_sigmas": False,
    "use_flow_sigmas": True,
    "use_karras_sigmas": False,
    "use_lu_lambdas": False,
    "variance_type": None,
}

# name: (config overrides, steps). Steps >= 15 switch off lower_order_final's second-to-last lowering.
CASES = {
    "sana_n10": ({}, 10),
    "sana_n50": ({}, 50),
    "shift3_n10": ({"flow_shift": 3.0}, 10),
    "order1_n10": ({"solver_order": 1}, 10),
    "order3_n10": ({"solver_order": 3}, 10),
    "order3_n50": ({"solver_order": 3}, 50),
    "order3_nolof_n10": ({"solver_order": 3, "lower_order_final": False}, 10),
    "heun_n10": ({"solver_type": "heun"}, 10),
}
SHAPE = [1, 4, 2, 4, 4]


def fake_model(x, t):
    tf = float(t)
    return x * 0.3 + torch.tanh(x) * (0.2 * tf / 1000.0) + 0.1 * tf / 1000.0


class _Config(dict):
    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as e:
            raise AttributeError(key) from e


class ConfigMixin:
    config_name = "scheduler_config.json"

    def register_to_config(self, **kwargs):
        if not hasattr(self, "_internal_dict"):
            self._internal_dict = _Config()
        self._internal_dict.update(kwargs)

    @property
    def config(self):
        return self._internal_dict


def register_to_config(init):
    signature = inspect.signature(init)

    @functools.wraps(init)
    def inner(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        params = dict(bound.arguments)
        params.pop("self")
        ConfigMixin.register_to_config(self, **params)
        init(self, *args, **kwargs)

    return inner


def make_stub_package(root):
    """The modules scheduling_dpmsolver_multistep.py imports from, as in-memory packages."""

    def package(name):
        mod = types.ModuleType(name)
        mod.__path__ = []
        sys.modules[name] = mod
        return mod

    package(root)
    cfg = types.ModuleType(root + ".configuration_utils")
    cfg.ConfigMixin, cfg.register_to_config = ConfigMixin, register_to_config
    sys.modules[cfg.__name__] = cfg
    utils = package(root + ".utils")
    utils.deprecate = lambda *args, **kwargs: None
    utils.is_scipy_available = lambda: False
    torch_utils = types.ModuleType(root + ".utils.torch_utils")
    torch_utils.randn_tensor = lambda shape, generator=None, device=None, dtype=None: torch.randn(
        shape, generator=generator, device=device, dtype=dtype)
    sys.modules[torch_utils.__name__] = torch_utils
    utils.torch_utils = torch_utils
    package(root + ".schedulers")
    su = types.ModuleType(root + ".schedulers.scheduling_utils")
    su.KarrasDiffusionSchedulers = enum.Enum("KarrasDiffusionSchedulers", "DDIMScheduler EulerDiscreteScheduler")

    class SchedulerMixin:
        pass

    @dataclasses.dataclass
    class SchedulerOutput:
        prev_sample: torch.Tensor

    su.SchedulerMixin, su.SchedulerOutput = SchedulerMixin, SchedulerOutput
    sys.modules[su.__name__] = su


def load_scheduler_class(path):
    root = "st_diffusers_stub"
    make_stub_package(root)
    name = root + ".schedulers.scheduling_dpmsolver_multistep"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod.DPMSolverMultistepScheduler


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    cls = load_scheduler_class(sys.argv[1])
    out_dir = sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    noise = torch.randn(SHAPE, dtype=torch.float32)
    outputs, checks = {}, {}
    for case, (overrides, steps) in CASES.items():
        config = dict(SANA_480P, **overrides)
        os.makedirs(os.path.join(out_dir, case), exist_ok=True)
        with open(os.path.join(out_dir, case, "scheduler_config.json"), "w") as f:
            f.write(json.dumps(config, indent=2, sort_keys=True) + "\n")
        kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
        unknown = set(kwargs) - set(inspect.signature(cls.__init__).parameters)
        if unknown:
            sys.exit(f"{case}: keys unknown to this DPMSolverMultistepScheduler: {sorted(unknown)}")
        sched = cls(**kwargs)
        sched.set_timesteps(steps)
        x = noise.clone()
        traj, model_outputs = [x.clone()], []
        for t in sched.timesteps:
            v = fake_model(x, t.item())
            model_outputs.append(v.clone())
            x = sched.step(v, t, x).prev_sample
            traj.append(x.clone())
        outputs[case + "_timesteps"] = sched.timesteps.to(torch.int64)
        outputs[case + "_sigmas"] = sched.sigmas.to(torch.float32)
        outputs[case + "_trajectory"] = torch.stack(traj)
        outputs[case + "_model_outputs"] = torch.stack(model_outputs)
        assert torch.isfinite(outputs[case + "_trajectory"]).all(), case
        checks[case] = {
            "steps": steps,
            "timesteps_head": sched.timesteps[:4].tolist(),
            "sigma_0": sched.sigmas[0].item(),
            "final_absmax": x.abs().max().item(),
        }
    save_safetensors(os.path.join(out_dir, "inputs.safetensors"), {"initial_noise": noise})
    save_safetensors(os.path.join(out_dir, "outputs.safetensors"), outputs)
    with open(os.path.join(out_dir, "checks.json"), "w") as f:
        json.dump(checks, f, indent=1, sort_keys=True)
        f.write("\n")
    print(json.dumps(checks, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
