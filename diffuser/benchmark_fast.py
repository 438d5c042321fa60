"""``diffuser bench fast``: score and plan latency vs network calls, per solver, with and without warm starts.

On one trained maze checkpoint (U-Maze by default):

1. **Solvers.** For DDPM (all T steps), DDIM and DPM-Solver++(2M) at several step counts: the Maze2D
   (single) and Multi2D (multi) scores of the full evaluation protocol, and the latency of one plan
   (one start, the job's 4 candidates, batch of 1) and of a batch of 20 plans (per plan).
2. **Warm starts.** Replanning every 10 env steps from pure noise vs from the previous plan shifted and
   noised to an intermediate level: score and planning time per episode.
3. **Replanning at every step** of 300-step episodes with DPM-Solver++ at 3 steps and one candidate: at
   all 300 steps (also after the goal is reached), and until the goal only; wall time per episode and score.
4. **The original's config** (H 128, T 64, width 32, (1, 4, 8), 1 sample, DDPM) timed with this code,
   next to this project's default plan.

Latencies are medians of repeated runs after warm-up; everything goes to ``results/fast.json`` with the
checkpoint, seeds, git commit and thread count, and a figure of score and latency vs network calls.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from diffuser.data.layout import TrajectoryLayout
from diffuser.diffusion.model import DiffusionConfig
from diffuser.evaluation.maze import evaluate_protocol
from diffuser.models.temporal_unet import UNetConfig
from diffuser.planning.maze import MazePlanConfig, MazePlanner
from diffuser.pretrained import build_diffusion
from diffuser.utils import atomic_path, git_commit

SOLVERS: list[tuple[str, int | None]] = [
    ("ddpm", None), ("ddim", 10), ("ddim", 5), ("ddim", 3), ("ddim", 2), ("ddim", 1),
    ("dpmpp", 10), ("dpmpp", 5), ("dpmpp", 3), ("dpmpp", 2),
]


def _median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _planner(base: MazePlanner, **changes) -> MazePlanner:
    return MazePlanner(base.planner, base.maze, base.stride, MazePlanConfig(**changes))


def _latency(planner: MazePlanner, repeats: int) -> dict:
    """ms for one plan (batch 1) and per plan in a batch of 20, from fixed free-cell starts and goals."""
    cells = np.array(planner.maze.free_cells())
    rng = np.random.default_rng(0)
    pairs = cells[rng.integers(len(cells), size=(20, 2))]
    starts = np.concatenate([planner.maze.cell_to_xy(pairs[:, 0]), np.zeros((20, 2))], 1)
    goals = planner.maze.cell_to_xy(pairs[:, 1])
    one = _median_ms(lambda: planner.plan(starts[:1], goals[:1], seed=0), repeats)
    batch = _median_ms(lambda: planner.plan(starts, goals, seed=0), max(3, repeats // 4)) / 20
    return {"plan_ms": round(one, 2), "plan_ms_per_plan_batch20": round(batch, 2)}


def _evaluate(planner: MazePlanner, refs, seeds, episodes) -> dict:
    out = {}
    for protocol in ("single", "multi"):
        t0 = time.perf_counter()
        s = evaluate_protocol(planner, protocol, refs, seeds=seeds, episodes_per_seed=episodes,
                              show_progress=False).summary
        out[protocol] = {k: s[k] for k in ("score_mean", "score_se", "success_rate", "plans_per_episode")}
        out[protocol]["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _original_config_latency(repeats: int) -> dict:
    """One plan at the original U-Maze config (untrained weights: latency does not depend on them)."""
    torch.manual_seed(0)
    model = build_diffusion(TrajectoryLayout(4, 2), 128, UNetConfig(dim=32, dim_mults=(1, 4, 8)),
                            DiffusionConfig(num_steps=64, prediction_type="x0", clip_denoised=True)).eval()
    start, goal = torch.zeros(1, 4), torch.zeros(1, 4)
    from diffuser.diffusion.constraints import Constraint

    cons = [Constraint(-1, model.layout.state_dims(range(4)), goal)]
    fn = lambda: model.sample(1, conditions={0: start}, constraints=cons)  # noqa: E731
    return {"config": "H 128, T 64, width 32, (1, 4, 8), 1 sample, DDPM 64 steps",
            "plan_ms": round(_median_ms(fn, max(3, repeats // 4), warmup=1), 1),
            # Not measured by this script: the original code's latency on this machine, from shared/REFERENCE.md
            # (measured on another day; this machine's speed varies several-fold from day to day).
            "original_implementation_plan_ms_reference": 366.0}


def run_fast_benchmark(checkpoint: str, maze: str | None = None, out: str = "results/fast.json",
                       seeds: Sequence[int] = (1000, 1001, 1002), episodes: int = 20, repeats: int = 30,
                       figure: str | None = "assets/fast_solvers.png") -> dict:
    from diffuser.data.minari_io import dataset_info
    from diffuser.pretrained import load_model

    commit = git_commit()
    cfg = load_model(checkpoint).config
    base = MazePlanner.from_checkpoint(checkpoint, maze)
    info = dataset_info(cfg["dataset"])
    refs = (info["ref_min_score"], info["ref_max_score"])
    T = base.planner.model.schedule.num_steps

    solvers = []
    for name, steps in SOLVERS:
        planner = _planner(base, sampler=name, sampler_steps=steps)
        row = {"sampler": name, "steps": steps or T, "network_calls": steps or T}
        row.update(_latency(planner, repeats))
        row.update(_evaluate(planner, refs, seeds, episodes))
        solvers.append(row)
        print(f"{name:>6} {row['network_calls']:>3} calls: {row['plan_ms']:6.2f} ms/plan, "
              f"single {row['single']['score_mean']:6.1f} ± {row['single']['score_se']:.1f}, "
              f"multi {row['multi']['score_mean']:6.1f} ± {row['multi']['score_se']:.1f}")

    warm = []
    for name, steps, level in [("ddim", 5, None), ("ddim", 5, 0.4), ("ddim", 5, 0.6), ("dpmpp", 5, None),
                               ("dpmpp", 5, 0.4), ("dpmpp", 5, 0.6), ("ddpm", None, None), ("ddpm", None, 0.3),
                               ("ddpm", None, 0.6)]:
        planner = _planner(base, sampler=name, sampler_steps=steps, replan_every=10, warm_level=level)
        row = {"sampler": name, "steps": steps or T, "replan_every": 10, "warm_level": level}
        row.update(_evaluate(planner, refs, seeds, episodes))
        warm.append(row)
        print(f"replan every 10, {name} {steps or T}, warm {level}: single {row['single']['score_mean']:6.1f}, "
              f"multi {row['multi']['score_mean']:6.1f}, {row['multi']['wall_seconds']:.1f} s")

    # Replanning at every env step: one episode alone (its wall time: planning + simulation), then the
    # score of 20 episodes (one seed) replanned the same way.
    replan_every_step = []
    # At every one of the 300 steps (the latency target), and until the goal only (the default: hold it).
    for level, at_goal in [(None, True), (0.4, True), (0.7, True), (None, False), (0.4, False)]:
        every = _planner(base, sampler="dpmpp", sampler_steps=3, replan_every=1, warm_level=level, num_candidates=1,
                         replan_at_goal=at_goal)
        t0 = time.perf_counter()
        one = evaluate_protocol(every, "single", refs, seeds=seeds[:1], episodes_per_seed=1, show_progress=False)
        seconds = time.perf_counter() - t0
        many = evaluate_protocol(every, "single", refs, seeds=seeds[:1], episodes_per_seed=episodes,
                                 show_progress=False).summary
        row = {"sampler": "dpmpp", "steps": 3, "warm_level": level, "candidates": 1, "replan_at_goal": at_goal,
               "episode_steps": one.summary["episode_steps"], "plans_per_episode": one.records[0].plans,
               "episode_seconds": round(seconds, 2), "score_mean": many["score_mean"], "score_se": many["score_se"],
               "success_rate": many["success_rate"], "episodes": many["episodes"]}
        replan_every_step.append(row)
        print(f"replanning at every step (warm {level}, at goal {at_goal}): {row['episode_seconds']} s per "
              f"{row['episode_steps']}-step episode; score {row['score_mean']:.1f} ± {row['score_se']:.1f}")

    default = {"config": f"H {base.horizon} (stride {base.stride}), T {T}, {cfg['model']['dim']}-wide "
                         f"{tuple(cfg['model']['dim_mults'])}, 4 candidates, DDPM {T} steps",
               **_latency(_planner(base), repeats)}
    report = {
        "benchmark": "fast_planning", "checkpoint": str(checkpoint), "dataset": cfg["dataset"],
        "git_commit": commit, "torch_threads": torch.get_num_threads(), "seeds": list(seeds),
        "episodes_per_seed": episodes, "repeats": repeats, "solvers": solvers, "warm_starts": warm,
        "replan_every_step": replan_every_step, "latency_this_default": default,
        "latency_original_config": _original_config_latency(repeats),
        "locomotion": "not measured: the Hopper pipeline (value guidance, locomotion datasets) has not landed",
    }
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    if figure:
        plot_solvers(solvers, figure)
    print(f"written {out}" + (f" and {figure}" if figure else ""))
    return report


def plot_solvers(rows: list[dict], path: str) -> Path:
    from diffuser.viz.plans import _plt, _save

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, marker in [("ddim", "o"), ("dpmpp", "s"), ("ddpm", "*")]:
        rs = sorted((r for r in rows if r["sampler"] == name), key=lambda r: r["network_calls"])
        if not rs:
            continue
        n = [r["network_calls"] for r in rs]
        for protocol, style in [("single", "-"), ("multi", "--")]:
            axes[0].errorbar(n, [r[protocol]["score_mean"] for r in rs], [r[protocol]["score_se"] for r in rs],
                             fmt=marker + style, capsize=2, label=f"{name} {protocol}", ms=8 if name == "ddpm" else 5)
        axes[1].plot(n, [r["plan_ms"] for r in rs], marker + "-", label=name, ms=8 if name == "ddpm" else 5)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("network calls per plan")
    axes[0].set_ylabel("normalized score")
    axes[0].legend(fontsize=7)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("network calls per plan")
    axes[1].set_ylabel("ms per plan (1 start, 4 candidates)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def markdown(report: dict) -> str:
    """The README's tables from a ``results/fast.json`` report."""
    def score(r: dict) -> str:
        return f"{r['score_mean']:.1f} ± {r['score_se']:.1f}"

    lines = ["| solver | network calls | ms per plan (1 start, 4 candidates) | ms per plan (batch of 20) "
             "| single | multi | success (single) |", "|---|---|---|---|---|---|---|"]
    for r in report["solvers"]:
        lines.append(f"| {r['sampler']} | {r['network_calls']} | {r['plan_ms']:.1f} | {r['plan_ms_per_plan_batch20']:.1f} "
                     f"| {score(r['single'])} | {score(r['multi'])} | {100 * r['single']['success_rate']:.0f} % |")
    lines += ["", "| replan every 10 steps | warm level | single | multi | plans per episode (single) "
              "| wall s (60 single episodes) |", "|---|---|---|---|---|---|"]
    for r in report["warm_starts"]:
        level = "cold" if r["warm_level"] is None else f"{r['warm_level']:g}"
        lines.append(f"| {r['sampler']} {r['steps']} | {level} | {score(r['single'])} | {score(r['multi'])} "
                     f"| {r['single']['plans_per_episode']:.1f} | {r['single']['wall_seconds']:.1f} |")
    lines += ["", "| replan at every step (DPM-Solver++ 3, 1 candidate) | warm level | plans per episode "
              "| s per 300-step episode | single (20 episodes) |", "|---|---|---|---|---|"]
    for r in report["replan_every_step"]:
        level = "cold" if r["warm_level"] is None else f"{r['warm_level']:g}"
        when = "all 300 steps" if r.get("replan_at_goal") else "until the goal, then hold"
        lines.append(f"| {when} | {level} | {r['plans_per_episode']} | {r['episode_seconds']:.2f} | {score(r)} |")
    return "\n".join(lines)
