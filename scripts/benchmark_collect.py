"""Time a PointMaze generation (default: 1M-step U-Maze, the published recipe) and write results/collect.json.

    python scripts/benchmark_collect.py                     # 1M steps umaze, seed 123
    python scripts/benchmark_collect.py --maze medium --steps 200000

The dataset goes to a temporary MINARI_DATASETS_PATH (deleted afterwards unless --keep), so the benchmark
never collides with, or leaves, a dataset in your own store. The JSON holds the config, seed, git commit,
wall-clock seconds (total and per phase), episodes, mean length, reference scores, and the published
figures of D4RL/pointmaze-v2 for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

# Published D4RL/pointmaze-v2 (1M steps, seed 123) episode counts, and the statistics that REFERENCE.md
# reports for the recipe reproduced on the modern stack (sparse reference scores).
PUBLISHED = {
    "umaze": {"episodes": 13210, "reproduced_episodes": 13200, "ref_min_score": 14.18, "ref_max_score": 218.66},
    "medium": {"episodes": 4752, "reproduced_episodes": 4763, "ref_min_score": 16.17, "ref_max_score": 360.53},
    "large": {"episodes": None, "reproduced_episodes": 3361, "ref_min_score": 3.30, "ref_max_score": 462.01},
    "open": {"episodes": None, "reproduced_episodes": None, "ref_min_score": None, "ref_max_score": None},
}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maze", default="umaze", choices=sorted(PUBLISHED))
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--dense", action="store_true")
    parser.add_argument("--planner", default="dfs", choices=("dfs", "shortest"))
    parser.add_argument("--ref-episodes", type=int, default=100)
    parser.add_argument("--out", default="results/collect.json")
    parser.add_argument("--keep", action="store_true", help="keep the temporary dataset directory")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="diffuser-collect-bench-")
    os.environ["MINARI_DATASETS_PATH"] = tmp
    from diffuser.collect.pointmaze import collect_pointmaze_report
    from diffuser.data.minari_io import load_episodes
    from diffuser.data.prepare import dataset_stats

    try:
        t0 = time.perf_counter()
        report = collect_pointmaze_report(args.maze, dense=args.dense, steps=args.steps, seed=args.seed,
                                          planner=args.planner, progress=True, ref_episodes=args.ref_episodes)
        wall = time.perf_counter() - t0
        t1 = time.perf_counter()
        episodes = load_episodes(report.dataset_id)
        load_seconds = time.perf_counter() - t1
        stats = dataset_stats(episodes, printer=None)
        size_mb = sum(f.stat().st_size for f in Path(report.path).rglob("*") if f.is_file()) / 2**20
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "benchmark": "collect_pointmaze",
        "config": {"maze": args.maze, "dense": args.dense, "steps": args.steps, "planner": args.planner,
                   "ref_episodes": args.ref_episodes, "reset_interval": report.extra["reset_interval"],
                   "action_noise": report.extra["action_noise"]},
        "seed": args.seed,
        "git_commit": _git_commit(),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "wall_clock_seconds": round(wall, 2),
        "seconds": {"simulate": round(report.seconds_simulate, 2),
                    "reference_scores": round(report.seconds_reference, 2),
                    "write": round(report.seconds_write, 2), "load_back": round(load_seconds, 2)},
        "steps_per_second": round(args.steps / report.seconds_simulate),
        "dataset_size_mb": round(size_mb, 1),
        "episodes": report.episodes,
        "mean_length": round(report.mean_length, 2),
        "median_length": stats.episodes.median_length,
        "success_fraction": round(stats.success_fraction, 4),
        "ref_min_score": report.ref_min_score,
        "ref_max_score": report.ref_max_score,
        "published": PUBLISHED[args.maze] if args.steps == 1_000_000 and args.seed == 123 else None,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
