"""``diffuser bench locomotion``: a locomotion decision's latency and score vs solver steps.

On one trained locomotion diffusion model and its value function: for DDPM (all T steps), DDIM and
DPM-Solver++ at several step counts, cold and warm-started (from the last plan), and for each guide, the
latency of one decision (one env, 64 candidates: the original's protocol) and of a batched decision
(10 envs × 16 candidates), and the score of closed-loop episodes. Next to them, one decision at the
original's config (H 32, T 20, width 32, (1, 2, 4, 8), 64 samples, DDPM 20 with value guidance) timed with
this code. Everything goes to ``results/fast_locomotion.json`` with the checkpoints, seeds, git commit and
thread count.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from diffuser.benchmark_fast import _median_ms
from diffuser.data.layout import TrajectoryLayout
from diffuser.diffusion.guides import ValueGuide
from diffuser.diffusion.model import DiffusionConfig
from diffuser.evaluation.locomotion import evaluate_locomotion, summarize_episodes
from diffuser.models.temporal_unet import UNetConfig
from diffuser.models.value_net import ValueConfig
from diffuser.planning.locomotion import LocomotionPlanConfig, LocomotionPlanner
from diffuser.pretrained import build_diffusion, build_value, compile_for_planning, load_model, load_value
from diffuser.utils import atomic_path, git_commit

# (sampler, steps, warm level, value-gradient steps per level): a warm decision starts from the last plan
# shifted by one step and runs round(level · steps) of the sampler's steps; None keeps the planner's
# default of 2 gradient steps (Diffuser's). Rows with 1 gradient step are value-guided only.
SOLVERS = [("ddpm", None, None, None), ("ddim", 5, None, None), ("ddim", 3, None, None), ("dpmpp", 3, None, None),
           ("ddim", 3, None, 1), ("dpmpp", 3, None, 1), ("ddim", 5, 0.4, None), ("dpmpp", 3, 0.67, None),
           ("dpmpp", 3, 0.67, 1), ("ddim", 3, 0.34, 1)]


def solver_key(sampler: str, steps: int | None, warm_level: float | None, guide_steps: int | None) -> str:
    """A solver row's name on the command line (``--configs``): "ddpm", "ddim5", "dpmpp3-warm0.67-grad1"."""
    key = f"{sampler}{steps or ''}"
    if warm_level is not None:
        key += f"-warm{warm_level:g}"
    if guide_steps is not None:
        key += f"-grad{guide_steps}"
    return key


def select_solvers(keys: Sequence[str] | None) -> list[tuple]:
    """The rows of SOLVERS named by ``keys`` (all of them for None), in SOLVERS' order."""
    if not keys:
        return list(SOLVERS)
    known = {solver_key(*s): s for s in SOLVERS}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ValueError(f"unknown solver row(s) {unknown} for bench locomotion; choose from {sorted(known)}")
    return [s for s in SOLVERS if solver_key(*s) in keys]


def _original_config_ms(repeats: int) -> float:
    """One 64-sample value-guided decision at the original Hopper config (untrained weights)."""
    torch.manual_seed(0)
    layout = TrajectoryLayout(11, 3)
    model = build_diffusion(layout, 32, UNetConfig(dim=32, dim_mults=(1, 2, 4, 8)),
                            DiffusionConfig(num_steps=20, prediction_type="x0")).eval()
    value = build_value(layout, 32, ValueConfig(dim=32, dim_mults=(1, 2, 4, 8)), 20).eval()
    guide = ValueGuide(value, scale=0.1, n_guide_steps=2, t_stopgrad=2)
    s0 = {0: torch.zeros(64, 11)}
    return _median_ms(lambda: model.sample(64, conditions=s0, experts=[guide]), repeats, warmup=1)


def run_locomotion_benchmark(checkpoint: str, value: str, out: str = "results/fast_locomotion.json",
                             guides: Sequence[str] = ("value", "none"), seeds: Sequence[int] = (0,),
                             episodes: int = 10, repeats: int = 10, scale: float = 1.0,
                             figure: bool = True, solvers: Sequence[str] | None = None,
                             select: str = "auto", compile: bool = False) -> dict:
    """Run the solver rows (``solvers``: names from :func:`solver_key`, default all) and write ``out``;
    ``select`` chooses the value-guided rows' candidate (see LocomotionPlanConfig; other guides take "auto");
    with ``figure`` also ``assets/<out's stem>.png``, so a run into another file keeps the README's figure.
    With ``compile`` every row is also timed with a ``torch.compile``'d copy of the two networks, interleaved
    with the eager one in the same run, and its score is that of the compiled planner."""
    from diffuser.data.minari_io import dataset_info

    chosen = select_solvers(solvers)  # first: a typo fails before anything loads
    commit = git_commit()
    model, val = load_model(checkpoint), load_value(value)
    compiled = None
    if compile:  # a second copy: the eager rows keep their own networks
        compiled = load_model(checkpoint), load_value(value)
        compile_for_planning(*compiled)
    info = dataset_info(model.config["dataset"])
    refs = (info["ref_min_score"], info["ref_max_score"])
    env_id = info["env_id"]
    S = model.model.layout.observation_dim
    rng = np.random.default_rng(0)
    obs1, obs10 = rng.normal(0, 0.1, (1, S)).astype(np.float32), rng.normal(0, 0.1, (10, S)).astype(np.float32)
    rows = []
    for guide in guides:
        for name, steps, warm_level, guide_steps in chosen:
            if guide_steps is not None and guide != "value":
                continue  # gradient steps change nothing without the value guide
            config = LocomotionPlanConfig(guide=guide, scale=scale, sampler=name, sampler_steps=steps, candidates=64,
                                          warm_level=warm_level, n_guide_steps=guide_steps or 2,
                                          select=select if guide == "value" else "auto")
            timings = {"eager": _decision_ms(model, val, config, obs1, obs10, repeats)}
            if compiled:
                t0 = time.perf_counter()
                timings["compiled"] = _decision_ms(*compiled, config, obs1, obs10, repeats)
                timings["compiled_seconds"] = round(time.perf_counter() - t0, 1)  # compiling included
                timings["eager_again"] = _decision_ms(model, val, config, obs1, obs10, repeats)  # the drift meanwhile
            one, ten, batched = timings["eager"]
            t0 = time.perf_counter()
            if compiled:
                batched = timings["compiled"][2]  # the score of the compiled planner
            records = [r for s in seeds for r in evaluate_locomotion(batched, env_id, episodes=episodes, eval_seed=s,
                                                                     ref_scores=refs, record=0)]
            summary = summarize_episodes(records)
            all_steps = steps or model.model.schedule.num_steps
            row = {"guide": guide, "sampler": name, "steps": all_steps, "warm_level": warm_level,
                   "n_guide_steps": config.n_guide_steps if guide == "value" else None, "select": batched.select,
                   "network_calls_per_decision": all_steps if warm_level is None else int(round(warm_level * all_steps)),
                   "decision_ms_1env_64cand": round(one, 1), "decision_ms_10env_16cand": round(ten, 1),
                   "score": summary["score"], "score_se": summary["score_se"], "episodes": summary["episodes"],
                   "eval_seconds": round(time.perf_counter() - t0, 1)}
            if compiled:
                row.update({"compiled_decision_ms_1env_64cand": round(timings["compiled"][0], 1),
                            "compiled_decision_ms_10env_16cand": round(timings["compiled"][1], 1),
                            "eager_again_decision_ms_1env_64cand": round(timings["eager_again"][0], 1),
                            "eager_again_decision_ms_10env_16cand": round(timings["eager_again"][1], 1),
                            "compiled_timing_seconds_with_compiling": timings["compiled_seconds"],
                            "scored": "compiled"})
            rows.append(row)
            warm = (f" warm {warm_level}" if warm_level else "") + (f" {guide_steps} grad step" if guide_steps else "")
            compiled_ms = (f", compiled {row['compiled_decision_ms_1env_64cand']:.1f} / "
                           f"{row['compiled_decision_ms_10env_16cand']:.1f} ms") if compiled else ""
            print(f"{guide:>5} {name:>5} {row['steps']:>2}{warm}: {one:7.1f} ms (64 cand.), {ten:7.1f} ms (10 x 16)"
                  f"{compiled_ms}, score {row['score']:.1f} ± {row['score_se']:.1f}", flush=True)
    report = {"benchmark": "fast_locomotion", "checkpoint": str(checkpoint), "value": str(value),
              "dataset": model.config["dataset"], "git_commit": commit, "torch_threads": torch.get_num_threads(),
              "value_parameters": sum(p.numel() for p in val.value.parameters()),
              "seeds": list(seeds), "episodes_per_seed": episodes, "repeats": repeats, "scale": scale,
              "compiled": compile, "rows": rows,
              "original_config_decision_ms": round(_original_config_ms(max(3, repeats // 2)), 1),
              "original_config": "H 32, T 20, width 32, (1, 2, 4, 8), 64 samples, DDPM 20, value guide (2 steps)",
              "original_implementation_decision_ms_reference": 805.0}
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    written = str(out)
    if figure:
        figure_path = f"assets/{Path(out).stem}.png"
        plot_decisions(rows, figure_path, report["original_config_decision_ms"])
        written += f" and {figure_path}"
    print(f"original config with this code: {report['original_config_decision_ms']} ms; written {written}")
    return report


def _decision_ms(model, val, config: LocomotionPlanConfig, obs1: np.ndarray, obs10: np.ndarray,
                 repeats: int) -> tuple[float, float, LocomotionPlanner]:
    """Median ms of one decision for 1 env × 64 candidates and for 10 envs × 16, and the 10-env planner."""
    planner = LocomotionPlanner(model, val, config)
    batched = LocomotionPlanner(model, val, LocomotionPlanConfig(**{**config.__dict__, "candidates": 16}))
    # A warm decision starts from the previous decision's plan, shifted by the executed step.
    warm1 = planner.shift(planner.plan(obs1, torch.Generator().manual_seed(1)).trajectories) if config.warm_level else None
    warm10 = batched.shift(batched.plan(obs10, torch.Generator().manual_seed(1)).trajectories) if config.warm_level else None
    one = _median_ms(lambda: planner.plan(obs1, torch.Generator().manual_seed(0), warm_start=warm1), repeats)
    ten = _median_ms(lambda: batched.plan(obs10, torch.Generator().manual_seed(0), warm_start=warm10),
                     max(3, repeats // 2))
    return one, ten, batched


def _label(r: dict) -> str:
    """A row's solver in words: "dpmpp 3", "ddim 5 warm 0.4", "ddim 3, 1 grad step"."""
    label = f"{r['sampler']} {r['steps']}"
    if r.get("warm_level"):
        label += f" warm {r['warm_level']:g}"
    if r.get("n_guide_steps") not in (None, 2):
        label += f", {r['n_guide_steps']} grad step"
    if r.get("select") == "guide":
        label += ", ranked by the guide's values"
    return label


def plot_decisions(rows: list[dict], path: str, original_ms: float | None = None):
    """Score against the latency of a 64-candidate decision, one point per solver row, per guide; with
    ``original_ms`` (the original's config timed in the same run) also that latency and the target's share
    of it (100 of the original's 805 ms), since this machine's absolute speed drifts between days."""
    from diffuser.viz.plans import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for guide, color in [("value", "tab:blue"), ("none", "tab:gray"), ("cfg", "tab:orange")]:
        rs = [r for r in rows if r["guide"] == guide]
        for r in rs:
            warm = bool(r.get("warm_level"))
            ax.errorbar(r["decision_ms_1env_64cand"], r["score"], r["score_se"], fmt="o", capsize=2, color=color,
                        mfc="white" if warm else color, label=None)
            ax.annotate(_label(r), (r["decision_ms_1env_64cand"], r["score"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
        if rs:
            ax.plot([], [], "o", color=color, label=f"guide: {guide}")
    ax.plot([], [], "o", color="black", mfc="white", label="warm start")
    if original_ms:
        ax.axvline(original_ms, color="black", lw=0.8, ls=":", label=f"original config, same run ({original_ms:.0f} ms)")
        ax.axvline(original_ms * 100 / 805, color="red", lw=0.8, ls="--",
                   label=f"target: 100/805 of it ({original_ms * 100 / 805:.0f} ms)")
    else:
        ax.axvline(100, color="red", lw=0.8, ls="--", label="100 ms target")
    ax.set_xscale("log")
    ax.set_xlabel("ms per decision (1 env, 64 candidates)")
    ax.set_ylabel("normalized score")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def markdown(report: dict) -> str:
    """The README's table from a ``results/fast_locomotion.json`` report."""
    compiled = report.get("compiled", False)
    extra = " compiled: ms (1 env × 64) | compiled: ms (10 × 16) | eager again: ms (1 env × 64) |" if compiled else ""
    lines = ["| guide | solver | network calls | ms per decision (1 env, 64 candidates) "
             f"| ms per decision (10 envs × 16) |{extra} score |", "|---|---|---|---|---|" + "---|" * (3 * compiled + 1)]
    for r in report["rows"]:
        calls = r.get("network_calls_per_decision", r["steps"])
        cells = (f" {r['compiled_decision_ms_1env_64cand']:.1f} | {r['compiled_decision_ms_10env_16cand']:.1f} "
                 f"| {r['eager_again_decision_ms_1env_64cand']:.1f} |") if compiled else ""
        lines.append(f"| {r['guide']} | {_label(r)} | {calls} | {r['decision_ms_1env_64cand']:.1f} "
                     f"| {r['decision_ms_10env_16cand']:.1f} |{cells} {r['score']:.1f} ± {r['score_se']:.1f} |")
    return "\n".join(lines)
