"""``diffuser bench``: train-step time and single-plan latency at the original Diffuser's configs.

Same math as the original (temporal U-Net at its widths, x0 prediction, cosine schedule, DDPM through
all T steps, inpainting after every step); what differs is the code path. Each figure is the median of
``repeats`` timed runs after warm-up. Two comparisons go to ``results/bench.json``: against
:mod:`diffuser.benchmark_baseline` (the original's code path re-created, timed in the same run on the
same machine: the fair one), and the original implementation's own timings as reported on the
reference machine of shared/REFERENCE.md §2 (another CPU: context, not a like-for-like ratio).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch

from diffuser.data.layout import TrajectoryLayout
from diffuser.diffusion.model import DiffusionConfig
from diffuser.models.temporal_unet import UNetConfig
from diffuser.pretrained import build_diffusion
from diffuser.utils import git_commit

# The original implementation's figures on this machine (2 CPU cores, torch 2.13 CPU, fp32).
CONFIGS = {
    "maze2d_umaze": dict(layout=(4, 2), horizon=128, num_steps=64, dim_mults=(1, 4, 8), batch=32, samples=1,
                         conditions="start_goal", original_train_step_ms=176.0, original_plan_ms=366.0),
    "hopper": dict(layout=(11, 3), horizon=32, num_steps=20, dim_mults=(1, 2, 4, 8), batch=32, samples=64,
                   conditions="start", original_train_step_ms=73.0, original_plan_ms=805.0),
}


def _interleaved_median_ms(fns: dict, repeats: int, warmup: int = 2) -> dict:
    """Median wall-clock ms of each function, timed in alternation so that the machine's drift
    (other processes, frequency changes) affects every contender alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _diffuser_jobs(spec: dict, compile: bool):
    """(train_step, plan, parameter count) for this library at ``spec``."""
    torch.manual_seed(0)
    layout = TrajectoryLayout(*spec["layout"])
    H, S = spec["horizon"], layout.observation_dim
    model = build_diffusion(layout, H, UNetConfig(dim=32, dim_mults=spec["dim_mults"]),
                            DiffusionConfig(num_steps=spec["num_steps"], prediction_type="x0", clip_denoised=True))
    if compile:
        model.denoiser = torch.compile(model.denoiser)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, fused=True)  # as the Trainer does
    batch = {"trajectories": torch.randn(spec["batch"], H, layout.transition_dim),
             "conditions": {0: torch.randn(spec["batch"], S)}}

    def train_step():
        model.train()
        loss, _ = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    n = spec["samples"]
    conditions = {0: torch.randn(1, S).expand(n, S)}
    if spec["conditions"] == "start_goal":
        conditions[H - 1] = torch.randn(1, S).expand(n, S)
    gen = torch.Generator().manual_seed(0)

    def plan():
        model.eval()
        model.sample(n, conditions=conditions, generator=gen)

    return train_step, plan, sum(p.numel() for p in model.denoiser.parameters())


def _baseline_jobs(spec: dict):
    """(train_step, plan, parameter count) for the re-created original code path."""
    from diffuser.benchmark_baseline import BaselineDiffusion, BaselineUnet
    from diffuser.diffusion.schedules import NoiseSchedule

    torch.manual_seed(0)
    S, A = spec["layout"]
    H = spec["horizon"]
    model = BaselineDiffusion(BaselineUnet(S + A, 32, spec["dim_mults"]), NoiseSchedule(spec["num_steps"]), S, A)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4, foreach=False)  # the for-loop update
    x0, train_cond = torch.randn(spec["batch"], H, S + A), {0: torch.randn(spec["batch"], S)}

    def train_step():
        model.train()
        loss = model.loss(x0, train_cond)
        loss.backward()
        opt.step()
        opt.zero_grad()

    n = spec["samples"]
    cond = {0: torch.randn(1, S).expand(n, S)}
    if spec["conditions"] == "start_goal":
        cond[H - 1] = torch.randn(1, S).expand(n, S)

    def plan():
        model.eval()
        model.sample(n, H, cond)

    return train_step, plan, sum(p.numel() for p in model.net.parameters())


def bench_config(name: str, repeats: int = 10, compile: bool = False) -> dict:
    """Time this library and the same-machine baseline on one config, interleaved."""
    spec = CONFIGS[name]
    jobs = {"baseline": _baseline_jobs(spec), "diffuser": _diffuser_jobs(spec, compile=False)}
    if compile:
        jobs["compiled"] = _diffuser_jobs(spec, compile=True)
    if jobs["baseline"][2] != jobs["diffuser"][2]:
        raise AssertionError(f"baseline has {jobs['baseline'][2]} parameters, diffuser {jobs['diffuser'][2]}: "
                             "not the same network")
    train = _interleaved_median_ms({k: v[0] for k, v in jobs.items()}, repeats)
    plan = _interleaved_median_ms({k: v[1] for k, v in jobs.items()}, max(3, repeats // 2), warmup=1)
    out = {
        "train_step_ms": round(train["diffuser"], 1),
        "plan_ms": round(plan["diffuser"], 1),
        "baseline_train_step_ms": round(train["baseline"], 1),
        "baseline_plan_ms": round(plan["baseline"], 1),
        "train_speedup_vs_baseline": round(train["baseline"] / train["diffuser"], 2),
        "plan_speedup_vs_baseline": round(plan["baseline"] / plan["diffuser"], 2),
        "original_train_step_ms_reference_machine": spec["original_train_step_ms"],
        "original_plan_ms_reference_machine": spec["original_plan_ms"],
        "setup": {k: v for k, v in spec.items() if not k.startswith("original")},
        "parameters": jobs["diffuser"][2],
    }
    if compile:
        out.update({"compiled_train_step_ms": round(train["compiled"], 1), "compiled_plan_ms": round(plan["compiled"], 1),
                    "compiled_train_speedup_vs_baseline": round(train["baseline"] / train["compiled"], 2),
                    "compiled_plan_speedup_vs_baseline": round(plan["baseline"] / plan["compiled"], 2)})
    return out


def run_benchmark(out: str = "results/bench.json", repeats: int = 10, configs=None, compile: bool = False) -> dict:
    configs = configs or list(CONFIGS)
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        raise ValueError(f"unknown bench configs {sorted(unknown)}; valid: {', '.join(CONFIGS)}")
    results = {}
    for name in configs:
        results[name] = bench_config(name, repeats, compile=compile)
    report = {
        "benchmark": "train step (batch 32, Adam) and one plan (DDPM, all T steps, inpainting)",
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "repeats": repeats,
        "configs": results,
    }
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    for name, r in results.items():
        print(f"{name}: train step {r['train_step_ms']:.1f} ms (baseline {r['baseline_train_step_ms']:.1f}, "
              f"{r['train_speedup_vs_baseline']}x); plan {r['plan_ms']:.1f} ms (baseline {r['baseline_plan_ms']:.1f}, "
              f"{r['plan_speedup_vs_baseline']}x)")
        if "compiled_plan_ms" in r:
            print(f"{'':{len(name)}}  compiled: train step {r['compiled_train_step_ms']:.1f} ms, plan {r['compiled_plan_ms']:.1f} ms "
                  f"({r['compiled_plan_speedup_vs_baseline']}x)")
    print(f"written to {path}")
    return report
