"""``diffuser bench``: train-step time and single-plan latency at the original Diffuser's configs.

Same math as the original (temporal U-Net at its widths, x0 prediction, cosine schedule, DDPM through
all T steps, inpainting after every step); what differs is the code path. Each figure is the median of
``repeats`` timed runs after warm-up. Results go to ``results/bench.json`` with the original
implementation's timings on this machine (shared/REFERENCE.md §2) for comparison.
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


def _median_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench_config(name: str, repeats: int = 10, compile: bool = False) -> dict:
    spec = CONFIGS[name]
    torch.manual_seed(0)
    layout = TrajectoryLayout(*spec["layout"])
    model = build_diffusion(layout, spec["horizon"], UNetConfig(dim=32, dim_mults=spec["dim_mults"]),
                            DiffusionConfig(num_steps=spec["num_steps"], prediction_type="x0"))
    if compile:
        model.denoiser = torch.compile(model.denoiser)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    H, D, S = spec["horizon"], layout.transition_dim, layout.observation_dim
    batch = {"trajectories": torch.randn(spec["batch"], H, D),
             "conditions": {0: torch.randn(spec["batch"], S)}}

    def train_step():
        loss, _ = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    train_ms = _median_ms(train_step, repeats)

    model.eval()
    n = spec["samples"]
    conditions = {0: torch.randn(1, S).expand(n, S)}
    if spec["conditions"] == "start_goal":
        conditions[H - 1] = torch.randn(1, S).expand(n, S)
    gen = torch.Generator().manual_seed(0)
    plan_ms = _median_ms(lambda: model.sample(n, conditions=conditions, generator=gen), max(3, repeats // 2), warmup=1)
    return {
        "train_step_ms": round(train_ms, 1),
        "plan_ms": round(plan_ms, 1),
        "original_train_step_ms": spec["original_train_step_ms"],
        "original_plan_ms": spec["original_plan_ms"],
        "train_speedup": round(spec["original_train_step_ms"] / train_ms, 2),
        "plan_speedup": round(spec["original_plan_ms"] / plan_ms, 2),
        "setup": {k: v for k, v in spec.items() if not k.startswith("original")},
        "parameters": sum(p.numel() for p in model.denoiser.parameters()),
        "compiled": compile,
    }


def run_benchmark(out: str = "results/bench.json", repeats: int = 10, configs=None, compile: bool = False) -> dict:
    configs = configs or list(CONFIGS)
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        raise ValueError(f"unknown bench configs {sorted(unknown)}; valid: {', '.join(CONFIGS)}")
    results = {}
    for name in configs:
        results[name] = bench_config(name, repeats)
        if compile:
            results[name + "_compiled"] = bench_config(name, repeats, compile=True)
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
        print(f"{name:<22} train step {r['train_step_ms']:7.1f} ms (original {r['original_train_step_ms']}, "
              f"{r['train_speedup']}x)   plan {r['plan_ms']:7.1f} ms (original {r['original_plan_ms']}, {r['plan_speedup']}x)")
    print(f"written to {path}")
    return report
