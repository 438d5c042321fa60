"""``diffuser collect ...``: generate datasets locally.

    pointmaze       a PointMaze dataset with the D4RL/pointmaze-v2 recipe
    locomotion      a Hopper/Walker2d/HalfCheetah dataset from the exported behaviour policies
    train-policy    train a SAC behaviour policy (torch on any device, or stable-baselines3)
    export-policy   pick medium/expert checkpoints of a run and export them to assets/policies
"""

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


def _run_locomotion(args: argparse.Namespace) -> None:
    from diffuser.collect.locomotion import collect_locomotion_report
    from diffuser.data.minari_io import DatasetError

    steps = args.steps if args.steps is not None else (None if args.level == "medium-replay" else 200_000)
    try:
        report = collect_locomotion_report(
            env=args.env, level=args.level, steps=steps, seed=args.seed, dataset_id=args.dataset_id,
            policy_dir=args.policy_dir, replay=args.replay, action_noise=args.action_noise,
            ref_episodes=args.ref_episodes, overwrite=args.overwrite, progress=not args.no_progress)
    except (DatasetError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"wrote {report.dataset_id} to {report.path} ({report.size_bytes / 2**20:.1f} MiB)\n"
            f"  {report.steps} steps, {report.episodes} episodes ({report.terminated_episodes} terminated, "
            f"{report.truncated_episodes} truncated; mean length {report.mean_length:.1f}, mean return "
            f"{report.mean_return:.1f})\n"
            f"  reference scores over {report.ref_episodes} episodes: min {report.ref_min_score:.2f} (random), "
            f"max {report.ref_max_score:.2f} (expert actor)\n"
            f"  {report.seconds_total:.1f} s (collect {report.seconds_simulate:.1f}, reference scores "
            f"{report.seconds_reference:.1f}, write {report.seconds_write:.1f})"
        )


def _run_train_policy(args: argparse.Namespace) -> None:
    from diffuser.collect.behaviour import TrainConfig, env_name_for, train_behaviour
    from diffuser.collect.sac import SACConfig, train_sac

    run_dir = args.run_dir or f"runs/behaviour/{env_name_for(args.env)}-s{args.seed}"
    common = dict(env=args.env, steps=args.steps, seed=args.seed, checkpoint_every=args.checkpoint_every,
                  eval_episodes=args.eval_episodes, run_dir=run_dir)
    show = False if args.no_progress else None
    try:
        if args.trainer == "sb3":
            if args.time_limit is not None or args.device != "cpu":
                raise ValueError("--time-limit and --device are options of --trainer torch")
            records = train_behaviour(TrainConfig(**common), show_progress=show)
        else:
            cfg = SACConfig(**common, device=args.device, cuda_graph=not args.no_cuda_graph,
                            time_limit_s=args.time_limit, learning_starts=args.learning_starts)
            records = train_sac(cfg, show_progress=show)
    except (FileExistsError, ValueError, ImportError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    best = max(records, key=lambda r: r["eval_return"]) if records else None
    steps = records[-1]["step"] if records else 0
    print(f"trained {steps} steps into {run_dir}; best checkpoint: {json.dumps(best)}")


def _run_export_policy(args: argparse.Namespace) -> None:
    from diffuser.collect.behaviour import env_name_for, export_levels

    out = args.out or f"assets/policies/{env_name_for(args.env)}"
    try:
        summary = export_levels(args.run_dir, out, eval_episodes=args.eval_episodes, medium_step=args.medium_step,
                                expert_step=args.expert_step, replay_out=args.replay_out,
                                show_progress=False if args.no_progress else None,
                                expert_noise=args.expert_noise, expert_candidates=args.expert_candidates)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(summary, indent=2))


def add_collect_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``collect pointmaze|locomotion|train-policy|export-policy``; returns the ``collect`` parser."""
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

    envs = ("hopper", "walker2d", "halfcheetah")
    p = kinds.add_parser(
        "locomotion", help="a Hopper/Walker2d/HalfCheetah dataset with the D4RL recipe (exported SAC policies)",
        description="Collect a locomotion dataset with the exported behaviour policies of assets/policies/<env>/ "
        "and write it as a local Minari dataset, by default diffuser/mujoco/<env>/<level>-v0. Levels: medium and "
        "expert (the actor + Gaussian action noise), medium-replay (the SAC replay buffer up to the medium "
        "checkpoint), medium-expert (the local medium and expert datasets concatenated).")
    p.add_argument("--env", choices=envs, default="hopper", help="environment (default hopper)")
    p.add_argument("--level", choices=("medium", "expert", "medium-replay", "medium-expert"), default="medium",
                   help="dataset level (default medium)")
    p.add_argument("--steps", type=int, default=None,
                   help="environment steps for medium/expert (default 200,000; D4RL used 1,000,000); for "
                        "medium-replay at most this many buffer transitions (default all)")
    p.add_argument("--seed", type=int, default=0, help="seed of resets and action noise (default 0)")
    p.add_argument("--dataset-id", default=None, metavar="ID",
                   help="Minari id (default diffuser/mujoco/<env>/<level>-v0)")
    p.add_argument("--policy-dir", default=None,
                   help="folder of <env>/{medium,expert}.* (default assets/policies)")
    p.add_argument("--replay", default=None,
                   help="medium-replay buffer npz (default <policy-dir>/<env>/medium_replay.npz)")
    p.add_argument("--action-noise", type=float, default=0.1, help="std of the Gaussian action noise (default 0.1)")
    p.add_argument("--ref-episodes", type=int, default=50, help="episodes per reference score (default 50)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that id")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run_locomotion)

    p = kinds.add_parser(
        "train-policy", help="train a SAC behaviour policy for the locomotion datasets",
        description="Train SAC (stable-baselines3's defaults) on a Gymnasium MuJoCo env, with the project's own "
        "torch SAC (any device; on CUDA the update is one CUDA graph) or with stable-baselines3 (--trainer sb3, "
        "CPU, the locomotion extra). Every --checkpoint-every steps the deterministic actor is exported "
        "(safetensors + JSON) and evaluated, a line goes to <run-dir>/log.jsonl and the replay buffer so far to "
        "<run-dir>/replay.npz.")
    p.add_argument("--env", choices=envs, default="hopper", help="environment (default hopper)")
    p.add_argument("--steps", type=int, default=300_000, help="environment steps (default 300,000)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--checkpoint-every", type=int, default=10_000,
                   help="steps between checkpoints (default 10,000)")
    p.add_argument("--eval-episodes", type=int, default=5, help="deterministic episodes per checkpoint (default 5)")
    p.add_argument("--run-dir", default=None, help="output folder (default runs/behaviour/<env>-s<seed>)")
    p.add_argument("--trainer", choices=("torch", "sb3"), default="torch",
                   help="torch: diffuser.collect.sac (default); sb3: stable-baselines3, as the committed policies")
    p.add_argument("--device", default="cpu", help="torch trainer: cpu | cuda[:N] | auto (default cpu)")
    p.add_argument("--no-cuda-graph", action="store_true", help="torch trainer on CUDA: eager updates")
    p.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="torch trainer: stop after S seconds of wall time, with a last checkpoint")
    p.add_argument("--learning-starts", type=int, default=5000,
                   help="torch trainer: random-action steps before the first update (default 5,000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train_policy)

    p = kinds.add_parser(
        "export-policy", help="pick medium/expert checkpoints of a training run and export them to assets/policies",
        description="Pick expert (best evaluated checkpoint, or with --expert-noise the front-runner most robust to the "
        "collector's action noise) and medium (the checkpoint before it closest to a third of its return) "
        "from a train-policy run, re-evaluate them, write <out>/{medium,expert}.{safetensors,json} and the "
        "medium part of the replay buffer (<out>/medium_replay.npz).")
    p.add_argument("--env", choices=envs, default="hopper", help="environment (names the default --out)")
    p.add_argument("--run-dir", required=True, help="the train-policy run folder")
    p.add_argument("--out", default=None, help="output folder (default assets/policies/<env>)")
    p.add_argument("--eval-episodes", type=int, default=20, help="episodes of the final evaluation (default 20)")
    p.add_argument("--medium-step", type=int, default=None, help="force the medium checkpoint (training step)")
    p.add_argument("--expert-step", type=int, default=None, help="force the expert checkpoint (training step)")
    p.add_argument("--expert-noise", type=float, default=0.0,
                   help="pick the expert among the best-evaluated checkpoints by its return with N(0, SIGMA^2) "
                   "action noise, the collector's (use 0.1); 0 (default): best evaluated return")
    p.add_argument("--expert-candidates", type=int, default=5,
                   help="with --expert-noise: how many best-evaluated checkpoints to compare (default 5)")
    p.add_argument("--replay-out", default=None, help="medium replay npz (default <out>/medium_replay.npz)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_export_policy)
    return collect
