"""The ``diffuser`` command: one entry point, one sub-command per job.

    diffuser train [hydra overrides]     train a planner (configs/train.yaml)
    diffuser demo                        the quick train-and-plan run on synthetic data
    diffuser plan maze [--maze umaze]    the main job: data, training, maze evaluation, figures
    diffuser plan sample CHECKPOINT ...  sample one plan from a trained checkpoint
    diffuser bench [speed|fast]          speed at the paper's configs | solvers and warm starts
    diffuser collect pointmaze ...       generate a PointMaze dataset (Minari format)
    diffuser collect locomotion ...      generate a Hopper/Walker2d/HalfCheetah dataset (Minari format)
    diffuser collect train-policy|export-policy   SAC behaviour policies for the locomotion datasets
    diffuser datasets list|info          local datasets
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def config_dir() -> Path:
    """The Hydra config folder: $DIFFUSER_CONFIG_DIR, else ``configs/`` beside the package (source checkout)."""
    import os

    env = os.environ.get("DIFFUSER_CONFIG_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parent.parent / "configs")
    for c in candidates:
        if (c / "train.yaml").exists():
            return c
    raise FileNotFoundError(
        "cannot find the Hydra configs (configs/train.yaml); run from a source checkout or set DIFFUSER_CONFIG_DIR")


def run_hydra_train(overrides: list[str]) -> None:
    """Run training through Hydra's own main, so that overrides, multirun and launchers all work."""
    import hydra

    from diffuser.config import register_configs
    from diffuser.training.pipeline import train_diffusion

    register_configs()

    @hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
    def _main(cfg) -> None:
        summary = train_diffusion(cfg)
        print(json.dumps(summary, indent=2, default=str))

    saved = sys.argv
    sys.argv = [saved[0], *overrides]
    try:
        _main()
    finally:
        sys.argv = saved


def _cmd_train(args: argparse.Namespace) -> None:
    run_hydra_train(args.overrides)


def _cmd_demo(args: argparse.Namespace) -> None:
    from diffuser.demo import run_demo

    run_demo(out_dir=args.out, steps=args.steps, seed=args.seed, device=args.device, overrides=args.overrides)


def _cmd_plan(args: argparse.Namespace) -> None:
    import numpy as np

    from diffuser.diffusion.samplers import make_sampler
    from diffuser.planning.planner import Planner
    from diffuser.pretrained import load_model
    from diffuser.utils import resolve_device

    loaded = load_model(args.checkpoint, device=resolve_device(args.device))
    planner = Planner(loaded.model, loaded.normalizer,
                      sampler=make_sampler(args.sampler, args.steps if args.sampler != "ddpm" else None))
    start = np.array([float(v) for v in args.start.split(",")])
    goal = None if args.goal is None else np.array([float(v) for v in args.goal.split(",")])
    goal_dims = None if args.goal_dims is None else [int(d) for d in args.goal_dims.split(",")]
    plan = planner.plan(start, goal, goal_dims=goal_dims, horizon=args.horizon, seed=args.seed)
    out = {"states": plan.states[0].tolist(), "actions": plan.actions[0].tolist()}
    text = json.dumps(out)
    if args.out:
        Path(args.out).write_text(text)
        print(f"plan written to {args.out}")
    else:
        print(text)


def _cmd_plan_maze(args: argparse.Namespace) -> None:
    from diffuser.maze_job import run_maze_job
    from diffuser.planning.maze import MazePlanConfig

    plan_config = MazePlanConfig(num_candidates=args.candidates, horizon=args.horizon, sampler=args.sampler,
                                 sampler_steps=args.sampler_steps, replan_every=args.replan_every,
                                 replan_drift=args.replan_drift, warm_level=args.warm_level)
    run_maze_job(maze=args.maze, out_dir=args.out, checkpoint=args.checkpoint, protocols=args.protocols,
                 seeds=args.seeds, episodes_per_seed=args.episodes, plan_config=plan_config, device=args.device,
                 overrides=args.overrides, record=args.record)


def _cmd_bench(args: argparse.Namespace) -> None:
    if args.suite == "fast":
        from diffuser.benchmark_fast import run_fast_benchmark

        run_fast_benchmark(args.checkpoint, out=args.out or "results/fast.json")
        return
    from diffuser.benchmark import run_benchmark

    run_benchmark(out=args.out or "results/bench.json", repeats=args.repeats, configs=args.configs,
                  compile=args.compile)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffuser", description="Planning with trajectory diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a planner (Hydra overrides follow, e.g. trainer.steps=1000)",
                       add_help=False)
    p.add_argument("overrides", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("demo", help="quick train-and-plan run on synthetic point-mass data")
    p.add_argument("--out", default="runs/demo", help="output folder (checkpoint, JSON, figure)")
    p.add_argument("--steps", type=int, default=3000, help="training steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides of the training config, e.g. model.dim=32")
    p.set_defaults(func=_cmd_demo)

    plan = sub.add_parser("plan", help="plan: the maze job, or one plan from a checkpoint")
    plan_sub = plan.add_subparsers(dest="plan_command", required=True)
    p = plan_sub.add_parser("maze", help="the main job: generate data if absent, train, evaluate in the maze")
    p.add_argument("--maze", default="umaze", choices=["umaze", "medium", "large"])
    p.add_argument("--checkpoint", help="evaluate this export instead of training (trained on the same maze)")
    p.add_argument("--out", help="output folder (default runs/maze/<maze>)")
    p.add_argument("--protocols", nargs="+", default=["single", "multi"], choices=["single", "multi"])
    p.add_argument("--seeds", nargs="+", type=int, default=[1000, 1001, 1002], help="evaluation seeds")
    p.add_argument("--episodes", type=int, default=20, help="episodes per seed and protocol")
    p.add_argument("--candidates", type=int, default=4, help="plans sampled per episode; the best is kept")
    p.add_argument("--horizon", type=int, help="planned states (default: the training horizon)")
    p.add_argument("--sampler", default="ddpm", choices=["ddpm", "ddim", "dpmpp"])
    p.add_argument("--sampler-steps", type=int, help="network calls per plan for ddim / dpmpp")
    p.add_argument("--replan-every", type=int, default=0, help="env steps between plans (0: plan once)")
    p.add_argument("--replan-drift", type=float, help="replan when this far from the tracked plan")
    p.add_argument("--warm-level", type=float,
                   help="replans start from the previous plan, noised to this share of the steps (0-1)")
    p.add_argument("--record", help="merge the scores into this results table, e.g. results/maze2d.json")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the training config, e.g. trainer.steps=2000")
    p.set_defaults(func=_cmd_plan_maze)

    p = plan_sub.add_parser("sample", help="sample one plan from a checkpoint")
    p.add_argument("checkpoint", help="an export folder or a run folder containing checkpoint/")
    p.add_argument("--start", required=True, help="comma-separated start state")
    p.add_argument("--goal", help="comma-separated goal values for --goal-dims (default: all state dims)")
    p.add_argument("--goal-dims", help="comma-separated state dims the goal fixes, e.g. 0,1")
    p.add_argument("--horizon", type=int, help="plan length (default: the training horizon)")
    p.add_argument("--sampler", default="ddpm", choices=["ddpm", "ddim", "dpmpp"])
    p.add_argument("--steps", type=int, help="network calls for ddim / dpmpp")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="write the plan as JSON here")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("bench", help="speed: train step and plan latency at the paper's configs; "
                                      "fast: score and latency vs solver steps and warm starts")
    p.add_argument("suite", nargs="?", default="speed", choices=["speed", "fast"])
    p.add_argument("--checkpoint", default="runs/maze/umaze/train", help="fast: the maze model to evaluate")
    p.add_argument("--out", help="default results/bench.json (speed) or results/fast.json (fast)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--configs", nargs="*", default=None, help="subset of configs to time")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    p.set_defaults(func=_cmd_bench)

    for module, fn in [("diffuser.collect.cli", "add_collect_parser"), ("diffuser.data.cli", "add_datasets_parser")]:
        # These modules import the simulators lazily, inside their handlers.
        getattr(__import__(module, fromlist=[fn]), fn)(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        # Bad input: print the message, not a traceback (set DIFFUSER_DEBUG=1 for the traceback).
        import os

        if os.environ.get("DIFFUSER_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
