"""Planner ablations on one trained maze checkpoint: candidates, samplers, replanning, horizon.

    python scripts/maze_ablation.py runs/maze/umaze/train --maze umaze --out results/maze_ablation.json
    python scripts/maze_ablation.py --table results/maze_ablation.json    # the README's Markdown table

Every variant runs the same episodes (same seeds) of both protocols; the JSON holds each variant's
planner settings, scores (mean ± s.e.), success rate, median steps to goal and planning wall time, with
the checkpoint, seeds and git commit.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from diffuser.data.minari_io import dataset_info
from diffuser.evaluation.maze import evaluate_protocol
from diffuser.planning.maze import MazePlanConfig, MazePlanner
from diffuser.utils import atomic_path, git_commit

VARIANTS = {
    "default (4 candidates, DDPM 20 steps, plan once)": {},
    "1 candidate": {"num_candidates": 1},
    "16 candidates": {"num_candidates": 16},
    "DDIM 10 steps": {"sampler": "ddim", "sampler_steps": 10},
    "DDIM 5 steps": {"sampler": "ddim", "sampler_steps": 5},
    "DDIM 2 steps": {"sampler": "ddim", "sampler_steps": 2},
    "replan every 20 steps": {"replan_every": 20},
    "replan on drift > 0.3": {"replan_drift": 0.3},
    "half horizon": {"horizon": "half"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("--maze", default="umaze")
    parser.add_argument("--out", default="results/maze_ablation.json")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1000, 1001, 1002])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--variants", nargs="*", help="subset of variant names")
    parser.add_argument("--table", metavar="JSON", help="print the Markdown table of a written result and exit")
    args = parser.parse_args()
    if args.table:
        print(markdown_table(json.loads(Path(args.table).read_text())))
        return
    if not args.checkpoint:
        parser.error("give a trained checkpoint (e.g. runs/maze/umaze/train), or --table RESULT.json")

    commit = git_commit()
    base = MazePlanner.from_checkpoint(args.checkpoint, args.maze)
    trained = _train_info(args.checkpoint)
    info = dataset_info(trained["dataset"])
    refs = (info["ref_min_score"], info["ref_max_score"])
    rows = {}
    for name, change in VARIANTS.items():
        if args.variants and name not in args.variants:
            continue
        change = dict(change)
        if change.get("horizon") == "half":
            change["horizon"] = base.horizon // 2
        planner = MazePlanner(base.planner, base.maze, base.stride, MazePlanConfig(**change))
        row = {"planner": planner.describe()}
        for protocol in ("single", "multi"):
            t0 = time.time()
            res = evaluate_protocol(planner, protocol, refs, seeds=args.seeds, episodes_per_seed=args.episodes,
                                    show_progress=False)
            s = res.summary
            row[protocol] = {k: s[k] for k in ("score_mean", "score_se", "success_rate", "episodes",
                                                 "steps_to_goal_median", "plans_per_episode")}
            row[protocol]["wall_seconds"] = round(time.time() - t0, 2)
        rows[name] = row
        print(f"{name:<50} single {row['single']['score_mean']:6.1f} ± {row['single']['score_se']:.1f}   "
              f"multi {row['multi']['score_mean']:6.1f} ± {row['multi']['score_se']:.1f}")
    report = {"script": "scripts/maze_ablation.py", "checkpoint": str(args.checkpoint), "maze": args.maze,
              "trained": trained,
              "seeds": args.seeds, "episodes_per_seed": args.episodes, "git_commit": commit,
              "reference_scores": {"min": refs[0], "max": refs[1]}, "variants": rows}
    with atomic_path(Path(args.out)) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    print(f"written {args.out}")


def markdown_table(report: dict) -> str:
    """One row per variant: single and multi score (mean ± s.e.), success, plans per episode, wall time."""
    lines = ["| variant | single | multi | success (single / multi) | plans per episode (multi) | wall s (multi) |",
             "|---|---|---|---|---|---|"]
    for name, row in report["variants"].items():
        s, m = row["single"], row["multi"]
        lines.append(f"| {name} | {s['score_mean']:.1f} ± {s['score_se']:.1f} | {m['score_mean']:.1f} ± "
                     f"{m['score_se']:.1f} | {100 * s['success_rate']:.0f} % / {100 * m['success_rate']:.0f} % | "
                     f"{m['plans_per_episode']:.1f} | {m['wall_seconds']:.0f} |")
    return "\n".join(lines)


def _train_info(checkpoint) -> dict:
    cfg = json.loads((Path(checkpoint) / "checkpoint" / "config.json").read_text()
                     if (Path(checkpoint) / "checkpoint").is_dir() else (Path(checkpoint) / "config.json").read_text())
    return {"steps": cfg.get("step"), "seconds": cfg.get("train_seconds"), "name": cfg.get("name"),
            "dataset": cfg.get("dataset"), "data": cfg.get("data")}


if __name__ == "__main__":
    main()
