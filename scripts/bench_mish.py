"""Interleaved A/B of the Mish activation in whole locomotion decisions: PyTorch's kernel against this
library's CPU form (diffuser.models.layers.mish, one exponential), same planner, same inputs.

    python scripts/bench_mish.py --checkpoint RUN/diffusion --value RUN/value [--repeats 20]

Writes results/bench_mish.json (medians and minima per guide, git commit, thread count).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

import diffuser.models.layers as layers
from diffuser.planning.locomotion import LocomotionPlanConfig, LocomotionPlanner
from diffuser.utils import atomic_path, git_commit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--value", required=True)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default="results/bench_mish.json")
    args = p.parse_args()
    ours = layers.mish
    contenders = {"torch_kernel": F.mish, "one_exponential": ours}
    rows = []
    for guide, grad_steps in (("value", 1), ("none", 2)):
        config = LocomotionPlanConfig(guide=guide, candidates=64, sampler="dpmpp", sampler_steps=3, warm_level=0.67,
                                      n_guide_steps=grad_steps, select="value")
        planner = LocomotionPlanner.from_checkpoints(args.checkpoint, args.value, config)
        obs = np.zeros((1, planner.layout.observation_dim), np.float32)
        warm = planner.shift(planner.plan(obs, torch.Generator().manual_seed(1)).trajectories)
        times = {k: [] for k in contenders}
        for _ in range(args.repeats):
            for name, fn in contenders.items():  # interleaved, so drift of this shared CPU hits both alike
                layers.mish = fn
                planner.plan(obs, torch.Generator().manual_seed(0), warm_start=warm)  # warm-up
                t0 = time.perf_counter()
                planner.plan(obs, torch.Generator().manual_seed(0), warm_start=warm)
                times[name].append((time.perf_counter() - t0) * 1e3)
        layers.mish = ours
        row = {"guide": guide, "n_guide_steps": grad_steps if guide == "value" else None,
               **{f"{k}_median_ms": round(float(np.median(v)), 1) for k, v in times.items()},
               **{f"{k}_min_ms": round(float(np.min(v)), 1) for k, v in times.items()}}
        rows.append(row)
        print(row, flush=True)
    report = {"benchmark": "mish", "checkpoint": args.checkpoint, "value": args.value, "repeats": args.repeats,
              "decision": "1 env x 64 candidates, dpmpp 3 warm 0.67", "torch_threads": torch.get_num_threads(),
              "git_commit": git_commit(), "rows": rows}
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
