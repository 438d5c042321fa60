"""``diffuser collect pointmaze ...``: generate a PointMaze dataset with the D4RL/pointmaze-v2 recipe."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_collect_parser"]


def _run_pointmaze(args: argparse.Namespace) -> None:
    from diffuser.collect.pointmaze import collect_pointmaze_report
    from diffuser.data.minari_io import DatasetError
    from diffuser.envs.maze import MazeError

    try:
        report = collect_pointmaze_report(
            maze=args.maze,
            dense=args.dense,
            map_file=args.map,
            steps=args.steps,
            seed=args.seed,
            dataset_id=args.dataset_id,
            planner=args.planner,
            progress=not args.no_progress,
            ref_episodes=args.ref_episodes,
        )
    except (MazeError, DatasetError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"wrote {report.dataset_id} to {report.path}\n"
            f"  {report.steps} steps, {report.episodes} episodes (mean length {report.mean_length:.1f}), "
            f"{report.successes} successes\n"
            f"  reference scores over {report.ref_episodes} episodes: min {report.ref_min_score:.2f} "
            f"(random), max {report.ref_max_score:.2f} (noiseless controller)\n"
            f"  {report.seconds_total:.1f} s (simulate {report.seconds_simulate:.1f}, reference scores "
            f"{report.seconds_reference:.1f}, write {report.seconds_write:.1f})"
        )


def add_collect_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``collect pointmaze`` under ``subparsers``; returns the ``collect`` parser."""
    collect = subparsers.add_parser("collect", help="generate datasets locally (Minari format)")
    kinds = collect.add_subparsers(dest="collect_kind", metavar="KIND")
    kinds.required = True
    p = kinds.add_parser(
        "pointmaze",
        help="a PointMaze dataset with the D4RL/pointmaze-v2 recipe",
        description="Generate a PointMaze dataset with the recipe of D4RL/pointmaze-v2 (waypoint controller, "
        "action noise, goal resampled at every success) and write it as a local Minari dataset, by default "
        "diffuser/pointmaze/<maze>[-dense]-v2.",
    )
    p.add_argument("--maze", choices=("open", "umaze", "medium", "large"), default="umaze",
                   help="preset maze (default umaze); ignored with --map")
    p.add_argument("--dense", action="store_true", help="dense reward exp(-distance) instead of sparse")
    p.add_argument("--map", metavar="FILE", default=None,
                   help="custom maze: text rows of '#' (wall) and '.' (free), or JSON in gymnasium's format")
    p.add_argument("--steps", type=int, default=1_000_000, help="environment steps (default 1,000,000)")
    p.add_argument("--seed", type=int, default=123, help="seed (default 123, the published one)")
    p.add_argument("--dataset-id", default=None, metavar="ID",
                   help="Minari id (default diffuser/pointmaze/<maze>[-dense]-v2)")
    p.add_argument("--planner", choices=("dfs", "shortest"), default="dfs",
                   help="grid path of the waypoint controller: dfs (published) or shortest")
    p.add_argument("--ref-episodes", type=int, default=100,
                   help="episodes per reference score (default 100, as published)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run_pointmaze)
    return collect
