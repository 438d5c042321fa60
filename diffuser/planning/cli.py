"""``diffuser plan ...``: planning jobs.

    maze        the main job: data, training (or the shipped checkpoint), maze evaluation, figures
    locomotion  value / classifier-free guided planning on Hopper, Walker2d, HalfCheetah, evaluated
    sample      one plan from a trained checkpoint
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_plan_parser"]


def _run_sample(args: argparse.Namespace) -> None:
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


def _run_maze(args: argparse.Namespace) -> None:
    from diffuser.maze_job import run_maze_job
    from diffuser.planning.maze import MazePlanConfig

    plan_config = MazePlanConfig(num_candidates=args.candidates, horizon=args.horizon, sampler=args.sampler,
                                 sampler_steps=args.sampler_steps, replan_every=args.replan_every,
                                 replan_drift=args.replan_drift, warm_level=args.warm_level)
    run_maze_job(maze=args.maze, out_dir=args.out, checkpoint=args.checkpoint, protocols=args.protocols,
                 seeds=args.seeds, episodes_per_seed=args.episodes, plan_config=plan_config, device=args.device,
                 overrides=args.overrides, record=args.record, train=args.train)


def _run_locomotion(args: argparse.Namespace) -> None:
    from diffuser.locomotion_job import run_locomotion_job
    from diffuser.planning.locomotion import LocomotionPlanConfig, sampler_steps_or_default

    config = LocomotionPlanConfig(scale=args.scale, n_guide_steps=args.n_guide_steps, t_stopgrad=args.t_stopgrad,
                                  cfg_weight=args.cfg_weight, target_return=args.target_return,
                                  candidates=args.candidates, sampler=args.sampler,
                                  sampler_steps=sampler_steps_or_default(args.sampler, args.sampler_steps),
                                  execute=args.execute, select=args.select, warm_level=args.warm_level,
                                  cold_candidates=args.cold_candidates, avoid_falls=args.avoid_falls,
                                  average=args.average, warm_from=args.warm_from, inverse_weight=args.inverse_weight,
                                  speed_limit=args.speed_limit, speed_limit_by=args.speed_limit_by,
                                  speed_weight=args.speed_weight)
    value_overrides = [o[len("value:"):] for o in args.overrides if o.startswith("value:")]
    inverse_overrides = [o[len("inverse:"):] for o in args.overrides if o.startswith("inverse:")]
    overrides = [o for o in args.overrides if not o.startswith(("value:", "inverse:"))]
    run_locomotion_job(env=args.env, level=args.level, out_dir=args.out, checkpoint=args.checkpoint, value=args.value,
                       value_pessimism=args.value_pessimism,
                       guides=args.guides, seeds=args.seeds, episodes=args.episodes, plan_config=config,
                       device=args.device, overrides=overrides, value_overrides=value_overrides, record=args.record,
                       max_episode_steps=args.max_episode_steps, dataset_steps=args.dataset_steps,
                       figures=not args.no_figures, compile=args.compile,
                       dataset_version=args.dataset_version, policy_dir=args.policy_dir, inverse=args.inverse,
                       inverse_overrides=inverse_overrides)


def add_plan_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``plan`` and its sub-commands to the ``diffuser`` parser."""
    plan = subparsers.add_parser("plan", help="plan: the maze job, or one plan from a checkpoint")
    plan_sub = plan.add_subparsers(dest="plan_command", required=True)
    p = plan_sub.add_parser("maze", help="the main job: generate data if absent, train (or take the shipped "
                                                    "checkpoint), evaluate in the maze")
    p.add_argument("--maze", default="umaze", choices=["umaze", "medium", "large"])
    p.add_argument("--checkpoint", help="evaluate this export instead of training (trained on the same maze)")
    p.add_argument("--train", action="store_true",
                   help="train the fast config even where the project ships a checkpoint for the maze")
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
    p.set_defaults(func=_run_maze)

    p = plan_sub.add_parser("locomotion", help="reward-seeking planning: collect data if absent, train a "
                                               "return-conditioned model and a value function, evaluate guides")
    p.add_argument("--env", default="hopper", choices=["hopper", "walker2d", "halfcheetah"])
    p.add_argument("--level", default="medium", choices=["medium", "expert", "medium-replay", "medium-expert"])
    p.add_argument("--checkpoint", help="evaluate this diffusion export instead of training")
    p.add_argument("--value", nargs="+", help="with --checkpoint: the value function trained for it; several "
                                              "(other trainer.seed): an ensemble")
    p.add_argument("--value-pessimism", type=float, default=0.0,
                   help="ensemble: guide and rank by the members' mean value minus this many times their spread")
    p.add_argument("--guides", nargs="+", default=["value", "cfg", "none"], choices=["value", "cfg", "none"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="evaluation seeds")
    p.add_argument("--episodes", type=int, default=10, help="episodes per seed and guide")
    p.add_argument("--scale", type=float, default=1.0, help="value guide scale (on standardised values)")
    p.add_argument("--n-guide-steps", type=int, default=2)
    p.add_argument("--t-stopgrad", type=int, default=2)
    p.add_argument("--cfg-weight", type=float, default=1.5, help="classifier-free guidance weight w")
    p.add_argument("--target-return", default="z0", help="CFG's target return: zK (K stds above the mean of the "
                                                         "training windows' returns), max, q90, or a number")
    p.add_argument("--candidates", type=int, default=16, help="plans per decision (ranked by the value function)")
    p.add_argument("--sampler", default="ddim", choices=["ddpm", "ddim", "dpmpp"])
    p.add_argument("--sampler-steps", type=int, help="network calls per plan for ddim / dpmpp (default 5; ddpm "
                                                     "always takes every training step)")
    p.add_argument("--execute", type=int, default=1, help="actions executed per plan before replanning")
    p.add_argument("--warm-level", type=float, help="replans start from the previous plan shifted by --execute, "
                                                    "noised to this share of the sampler's steps (0-1; default cold)")
    p.add_argument("--cold-candidates", type=int, default=0,
                   help="with --warm-level and --select value: this many of the candidates start from pure noise, "
                        "so the ranking can leave a plan that has gone wrong (default 0: all warm)")
    p.add_argument("--average", type=int, default=1,
                   help="execute the mean of this many of the best candidates by --select (default 1: the best "
                        "alone; --candidates: all of them, whose noise then averages out)")
    p.add_argument("--warm-from", default="executed", choices=["executed", "best"],
                   help="with --warm-level: the plan the next decision refines, the executed one (default; with "
                        "--average, the mean) or the best candidate alone")
    p.add_argument("--avoid-falls", action="store_true",
                   help="Hopper, Walker2d: choose only among the candidates whose planned states stay inside the "
                        "env's healthy ranges the longest (its termination rule applied to the plans)")
    p.add_argument("--inverse-weight", type=float, default=0.0,
                   help="share of each executed action read off an inverse-dynamics model g(s_t, planned s_t+1) "
                        "instead of the plan (default 0: the plan's own; 1: g's alone). The job fits g on the "
                        "dataset (30-50 s per member on a CPU; inverse:KEY=V overrides, e.g. inverse:members=5) "
                        "unless --inverse gives one")
    p.add_argument("--speed-limit", type=float,
                   help="keep planned forward speeds under this many m/s (--speed-limit-by): plans that accelerate "
                        "past what the data sustains are pushed back or passed over (default: no limit)")
    p.add_argument("--speed-limit-by", default="cost", choices=["cost", "choice"],
                   help="with --speed-limit: cost (default: a cost pulls the planned speeds down) or choice (execute "
                        "a candidate whose planned speeds stay under it; where none does, the one over it least)")
    p.add_argument("--speed-weight", type=float, default=1.0, help="with --speed-limit by cost: the cost's weight (default 1)")
    p.add_argument("--inverse", help="with --inverse-weight: an inverse-dynamics export to use instead of fitting one")
    p.add_argument("--select", default="auto", choices=["auto", "value", "guide", "first", "consensus"],
                   help="which candidate to execute: value (highest predicted return of the final plans), guide "
                        "(highest value at the value guide's last step: no extra network call), first, consensus "
                        "(the plan nearest the candidates' mean), or auto "
                        "(value for value guidance, first otherwise)")
    p.add_argument("--max-episode-steps", type=int, help="shorter episodes than the env's 1000 (quick checks)")
    p.add_argument("--dataset-steps", type=int, help="steps of a dataset collected here (default 200,000)")
    p.add_argument("--dataset-version", default="v0",
                   help="dataset set: diffuser/mujoco/<env>/<level>-<version> (default v0, from assets/policies)")
    p.add_argument("--policy-dir", help="behaviour policies to collect a missing dataset from (default: the "
                                        "version's set, assets/policies for v0, assets/policies_vN for vN)")
    p.add_argument("--record", help="merge the scores into this results table, e.g. results/locomotion.json")
    p.add_argument("--out", help="output folder (default runs/locomotion/<env>-<level>)")
    p.add_argument("--no-figures", action="store_true", help="skip the video and plots")
    p.add_argument("--compile", action="store_true", help="plan with torch.compile'd networks (same math; two to three "
                                                          "minutes of compiling; no faster on the README's CPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the training config, e.g. trainer.steps=2000; "
                                                "value:KEY=V for the value function's, e.g. value:trainer.steps=500; "
                                                "inverse:KEY=V for the inverse-dynamics fit's, e.g. inverse:steps=8000")
    p.set_defaults(func=_run_locomotion)

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
    p.set_defaults(func=_run_sample)
