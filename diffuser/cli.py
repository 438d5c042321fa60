"""The ``diffuser`` command: one entry point, one sub-command per job.

    diffuser train [hydra overrides]     train a planner (configs/train.yaml); under torchrun: data-parallel
    diffuser train-value checkpoint=PATH train a value function for that diffusion checkpoint (configs/train_value.yaml)
    diffuser demo                        the quick train-and-plan run on synthetic data
    diffuser plan maze [--maze umaze]    the main job: data, training, maze evaluation, figures
    diffuser plan locomotion [--env hopper --level medium]   value / classifier-free guided planning, evaluated
    diffuser plan sample CHECKPOINT ...  sample one plan from a trained checkpoint
    diffuser bench [speed|fast|locomotion]  speed at the paper's configs | solvers and warm starts | Hopper decisions
    diffuser compose toy|maze|split      composition experiments (products of experts) -> results/compose.json
    diffuser collect pointmaze ...       generate a PointMaze dataset (Minari format)
    diffuser collect locomotion ...      generate a Hopper/Walker2d/HalfCheetah dataset (Minari format)
    diffuser collect train-policy|export-policy   SAC behaviour policies for the locomotion datasets
    diffuser datasets list|info          local datasets
    diffuser job [-m] [hydra overrides]  one sweep run (train + evaluate a maze config); -m: a sweep
    diffuser results aggregate DIRS...   the table of many runs: mean ± s.e. over seeds, IQM with CI
    diffuser results training-runs DIRS --guide G   one locomotion planner across independently trained models
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


def _run_hydra(config_name: str, task, overrides: list[str]) -> None:
    """Run ``task(cfg)`` through Hydra's own main on ``configs/<config_name>.yaml``, so that overrides,
    multirun (``-m``), sweeps and launchers all work."""
    import hydra

    main = hydra.main(config_path=str(config_dir()), config_name=config_name, version_base="1.3")(task)
    saved = sys.argv
    sys.argv = [saved[0], *overrides]
    try:
        main()
    finally:
        sys.argv = saved


def _train_task(cfg) -> None:
    from diffuser.training import distributed
    from diffuser.training.pipeline import train_diffusion

    try:
        summary = train_diffusion(cfg)  # data-parallel when started by torchrun / srun
        if distributed.current().is_main:
            print(json.dumps(summary, indent=2, default=str))
    finally:
        distributed.shutdown()


def _job_task(cfg) -> None:
    from diffuser.job import run_job

    run_job(cfg)


def run_hydra_train(overrides: list[str]) -> None:
    """``diffuser train``: configs/train.yaml with Hydra overrides."""
    from diffuser.config import register_configs

    register_configs()
    _run_hydra("train", _train_task, overrides)


def _cmd_train(args: argparse.Namespace) -> None:
    run_hydra_train(args.overrides)


def _train_value_task(cfg) -> None:
    from diffuser.training.pipeline import train_value

    print(json.dumps(train_value(cfg), indent=2, default=str))


def _cmd_train_value(args: argparse.Namespace) -> None:
    from diffuser.config import register_configs

    register_configs()
    _run_hydra("train_value", _train_value_task, args.overrides)


def _cmd_job(args: argparse.Namespace) -> None:
    from diffuser.job import register_job_configs

    register_job_configs()
    _run_hydra("job", _job_task, args.overrides)


def _cmd_results_aggregate(args: argparse.Namespace) -> None:
    from diffuser.evaluation.aggregate import aggregate_runs

    group_by = None
    if args.group_by:
        group_by = [key for item in args.group_by for key in item.split(",") if key]
    aggregate_runs(args.run_dirs, out=args.out, group_by=group_by, bootstrap=args.bootstrap, seed=args.seed)


def _cmd_results_training_runs(args: argparse.Namespace) -> None:
    import shlex

    from diffuser.evaluation.training_runs import write_training_runs

    command = "diffuser " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_training_runs(args.run_dirs, args.guide, out=args.out, bootstrap=args.bootstrap, seed=args.seed,
                        command=command)


def _cmd_demo(args: argparse.Namespace) -> None:
    from diffuser.demo import run_demo

    run_demo(out_dir=args.out, steps=args.steps, seed=args.seed, device=args.device, overrides=args.overrides)


def _cmd_bench(args: argparse.Namespace) -> None:
    if args.suite == "locomotion":
        from diffuser.benchmark_locomotion import markdown, run_locomotion_benchmark

        if args.table:
            print(markdown(json.loads(Path(args.table).read_text())))
            return
        if not args.value:
            raise ValueError("bench locomotion needs --checkpoint (a locomotion diffusion export) and --value")
        run_locomotion_benchmark(args.checkpoint, args.value, out=args.out or "results/fast_locomotion.json",
                                 repeats=args.repeats, solvers=args.configs, seeds=args.seeds,
                                 episodes=args.episodes, guides=args.guides, select=args.select,
                                 compile=args.compile)
        return
    if args.suite == "fast":
        from diffuser.benchmark_fast import run_fast_benchmark

        if args.table:
            from diffuser.benchmark_fast import markdown

            print(markdown(json.loads(Path(args.table).read_text())))
            return
        run_fast_benchmark(args.checkpoint, out=args.out or "results/fast.json")
        return
    from diffuser.benchmark import run_benchmark

    run_benchmark(out=args.out or "results/bench.json", repeats=args.repeats, configs=args.configs,
                  compile=args.compile)


def _cmd_compose(args: argparse.Namespace) -> None:
    from diffuser.experiments.results import record

    if args.experiment == "toy":
        from diffuser.experiments.toy2d import run_toy

        entry = run_toy(out_dir=args.assets, seed=args.seed, num_samples=args.samples,
                        train_steps=args.train_steps or 1500)
        for r in entry["rows"]:
            print(f"{r['experts']:<7} {r['sampler']:<6} MMD² {r['mmd2']:.4f}  grid KL {r['grid_kl']:.3f}  "
                  f"score evals {r['score_evals']}  energy evals {r['energy_evals']}  acceptance {r['acceptance_mean']}")
        key = "toy2d"
    elif args.experiment == "maze":
        from diffuser.experiments.maze_costs import run_obstacle, run_prefer

        common = dict(seeds=args.seeds, episodes_per_seed=args.episodes, num_candidates=args.candidates)
        if args.what == "obstacle":
            entry = run_obstacle(args.checkpoint, corrector=args.corrector, margin=args.margin,
                                 figure=f"{args.assets}/compose_obstacle.png",
                                 **({"weights": args.weights} if args.weights else {}), **common)
            key = "maze_obstacle"
        else:
            entry = run_prefer(args.checkpoint, figure=f"{args.assets}/compose_prefer.png",
                               **({"weights": args.weights} if args.weights else {}), **common)
            key = "maze_prefer"
    else:
        from diffuser.experiments.maze_split import run_split

        entry = run_split(args.checkpoint, out_dir=args.runs, seed=args.seed, train_steps=args.train_steps or 1500,
                          seeds=args.seeds, episodes_per_seed=args.episodes, figure=f"{args.assets}/compose_split.png")
        key = "maze_split"
    path = record(key, entry, args.out)
    print(f"{key} written to {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffuser", description="Planning with trajectory diffusion models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a planner (Hydra overrides follow, e.g. trainer.steps=1000)",
                       add_help=False)
    p.add_argument("overrides", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("train-value", help="train a value function for a diffusion checkpoint "
                                            "(checkpoint=PATH, then Hydra overrides)", add_help=False)
    p.add_argument("overrides", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_train_value)

    p = sub.add_parser("job", help="one sweep run (configs/job.yaml): train a maze config, evaluate, write "
                                   "result.json; -m sweeps (Hydra multirun)", add_help=False)
    p.add_argument("overrides", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_job)

    results = sub.add_parser("results", help="tables from many runs")
    results_sub = results.add_subparsers(dest="results_command", required=True)
    p = results_sub.add_parser("aggregate", help="group runs (result.json + episodes_*.jsonl, found recursively) "
                                                 "and write the table as JSON, Markdown and PNG")
    p.add_argument("run_dirs", nargs="+", help="run folders, or folders above them (a multirun folder)")
    p.add_argument("--out", help="output prefix: writes PREFIX.json, PREFIX.md, PREFIX.png "
                                 "(default: <first RUN_DIR>/aggregate)")
    p.add_argument("--group-by", nargs="+", metavar="KEYS",
                   help="config keys that define a group, e.g. maze plan.model_weight (default: maze, "
                        "protocol and every key that differs between runs, except seed)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the IQM's 95%% CI")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.set_defaults(func=_cmd_results_aggregate)
    p = results_sub.add_parser("training-runs", help="one locomotion planner's score across models trained "
                                                     "apart: mean ± s.e. across training runs")
    p.add_argument("run_dirs", nargs="+", help="folders written by `diffuser plan locomotion --out`, one per "
                                               "training run (same dataset, planner and recipe)")
    p.add_argument("--guide", required=True, choices=("value", "cfg", "none"), help="whose episodes to pool")
    p.add_argument("--out", help="output JSON (default: results/training_runs/<dataset row>_<guide>.json)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the IQM's 95%% CI")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.set_defaults(func=_cmd_results_training_runs)

    p = sub.add_parser("demo", help="quick train-and-plan run on synthetic point-mass data")
    p.add_argument("--out", default="runs/demo", help="output folder (checkpoint, JSON, figure)")
    p.add_argument("--steps", type=int, default=3000, help="training steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides of the training config, e.g. model.dim=32")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("bench", help="speed: train step and plan latency at the paper's configs; "
                                      "fast: score and latency vs solver steps and warm starts")
    p.add_argument("suite", nargs="?", default="speed", choices=["speed", "fast", "locomotion"])
    p.add_argument("--value", help="locomotion: the value function of --checkpoint")
    p.add_argument("--checkpoint", default="assets/checkpoints/maze_umaze", help="fast: the maze model to evaluate")
    p.add_argument("--out", help="default results/bench.json (speed), results/fast.json (fast) or "
                                 "results/fast_locomotion.json (locomotion; its figure: assets/<name>.png)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--configs", nargs="*", default=None,
                   help="speed: subset of configs to time; locomotion: subset of solver rows, e.g. ddim5 "
                        "dpmpp3-warm0.67-grad1")
    p.add_argument("--compile", action="store_true", help="speed: also time torch.compile'd models; locomotion: "
                                                          "also time every row compiled, and score it compiled")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="locomotion: evaluation seeds of the score")
    p.add_argument("--episodes", type=int, default=10, help="locomotion: episodes per seed")
    p.add_argument("--guides", nargs="+", default=["value", "none"], choices=["value", "cfg", "none"],
                   help="locomotion: guides to time and score")
    p.add_argument("--select", default="auto", choices=["auto", "value", "guide", "first", "consensus"],
                   help="locomotion: the value-guided rows' candidate choice (guide: the guide's last values)")
    p.add_argument("--table", help="fast, locomotion: print the Markdown tables of this results file instead of running")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("compose", help="composition experiments: toy (2-D product of two models), "
                                         "maze obstacle|prefer (test-time cost experts), split (two planners)")
    p.add_argument("experiment", choices=["toy", "maze", "split"])
    p.add_argument("what", nargs="?", default="obstacle", choices=["obstacle", "prefer"], help="maze: which experiment")
    p.add_argument("--checkpoint", default="assets/checkpoints/maze_umaze", help="maze / split: the trained U-Maze model")
    p.add_argument("--weights", nargs="+", type=float, help="maze: expert weights to compare (0: without it)")
    p.add_argument("--corrector", choices=["ula", "uhmc"], help="maze obstacle: also run with this corrector")
    p.add_argument("--margin", type=float, default=0.3, help="maze obstacle: clearance the DiscAvoid cost asks for")
    p.add_argument("--seeds", nargs="+", type=int, default=[1000, 1001, 1002], help="evaluation seeds")
    p.add_argument("--episodes", type=int, default=20, help="episodes per seed")
    p.add_argument("--candidates", type=int, default=4, help="plans sampled per episode")
    p.add_argument("--seed", type=int, default=0, help="toy / split: training and sampling seed")
    p.add_argument("--samples", type=int, default=2000, help="toy: samples per sampler")
    p.add_argument("--train-steps", type=int, help="toy / split: training steps per model (default 1500)")
    p.add_argument("--runs", default="runs/compose", help="split: where the two models are trained")
    p.add_argument("--assets", default="assets", help="figure folder")
    p.add_argument("--out", default="results/compose.json", help="results file (one key per experiment)")
    p.set_defaults(func=_cmd_compose)

    for module, fn in [("diffuser.planning.cli", "add_plan_parser"), ("diffuser.collect.cli", "add_collect_parser"),
                       ("diffuser.data.cli", "add_datasets_parser")]:
        # These modules import the simulators lazily, inside their handlers.
        getattr(__import__(module, fromlist=[fn]), fn)(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    hydra_commands = {"train": _cmd_train, "train-value": _cmd_train_value, "job": _cmd_job}
    if argv and argv[0] in hydra_commands:
        # Everything after the command goes to Hydra as it is (argparse would refuse a leading -m;
        # --help shows Hydra's help with the config).
        args = argparse.Namespace(overrides=argv[1:], func=hydra_commands[argv[0]])
    else:
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
