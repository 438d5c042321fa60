"""Score vs value-guide scale and t_stopgrad (or, with --guide cfg, vs the CFG target return and weight):
the sweeps users pick these settings from.

    python scripts/guide_sweep.py --checkpoint runs/locomotion/hopper-medium/train/diffusion \
        --value runs/locomotion/hopper-medium/train/value --env hopper --level medium \
        --scales 0 0.01 0.1 1 --t-stopgrad 0 2 --seeds 0 1 --episodes 10

    python scripts/guide_sweep.py --guide cfg --targets z0 z0.5 max --weights 1.5 ...

writes results/guide_sweep_<env>-<level>.json (config, seeds, git commit, every cell's score) and
assets/guide_sweep_<env>-<level>.png (cfg: results/cfg_sweep_<env>-<level>.json, no figure). Scale 0 is
unguided sampling ranked by the value function.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from diffuser.collect.behaviour import env_id_for, env_name_for
from diffuser.collect.locomotion import default_dataset_id
from diffuser.data.minari_io import dataset_info
from diffuser.envs.registry import D4RL_REF_SCORES
from diffuser.evaluation.locomotion import evaluate_locomotion, summarize_episodes
from diffuser.planning.locomotion import LocomotionPlanConfig, LocomotionPlanner, sampler_steps_or_default
from diffuser.pretrained import RETURN_TARGET_KEYS, load_model, load_values
from diffuser.utils import atomic_path, git_commit
from diffuser.viz.values import plot_guide_sweep


def _run_name(env: str, args) -> str:
    """``hopper-medium`` for v0 datasets, ``hopper-medium-v1`` for others: names the default outputs."""
    return f"{env}-{args.level}" + ("" if args.dataset_version == "v0" else f"-{args.dataset_version}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--value", required=True, nargs="+",
                   help="the value function; several (trained for the same checkpoint, other seeds): an ensemble")
    p.add_argument("--pessimism", type=float, default=0.0,
                   help="ensemble: rank and guide by mean - pessimism x spread of the members' values")
    p.add_argument("--env", default="hopper")
    p.add_argument("--level", default="medium")
    p.add_argument("--dataset-version", default="v0", help="dataset diffuser/mujoco/<env>/<level>-vN (default v0)")
    p.add_argument("--scales", nargs="+", type=float, default=[0.0, 0.01, 0.1, 1.0])
    p.add_argument("--t-stopgrad", nargs="+", type=int, default=[0, 2])
    p.add_argument("--n-guide-steps", type=int, default=2)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--candidates", type=int, default=16)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--sampler-steps", type=int, help="default 5 for ddim / dpmpp; ddpm takes every step")
    p.add_argument("--warm-level", type=float, help="warm-start replanning from this noise level (default cold)")
    p.add_argument("--guide", default="value", choices=["value", "cfg"])
    p.add_argument("--targets", nargs="+", default=["z0", "z0.5", "max"], help="cfg: target returns")
    p.add_argument("--weights", nargs="+", type=float, default=[1.5], help="cfg: guidance weights")
    p.add_argument("--out", help="default results/guide_sweep_<env>-<level>[-vN].json")
    p.add_argument("--figure", help="default assets/guide_sweep_<env>-<level>[-vN].png")
    args = p.parse_args(argv)

    env, env_id = env_name_for(args.env), env_id_for(args.env)
    dataset = default_dataset_id(env, args.level, args.dataset_version)
    name = _run_name(env, args)
    info = dataset_info(dataset)
    refs = (info["ref_min_score"], info["ref_max_score"])
    model, value = load_model(args.checkpoint, dataset=dataset), load_values(args.value, pessimism=args.pessimism)
    if args.guide == "cfg":
        return cfg_sweep(args, env, env_id, dataset, refs, model, value)
    out = Path(args.out or f"results/guide_sweep_{name}.json")
    figure = Path(args.figure or f"assets/guide_sweep_{name}.png")
    from diffuser.locomotion_job import dataset_average

    behaviour = dataset_average(dataset, refs, D4RL_REF_SCORES.get(env))
    # What the value function was trained to predict, kept with its scores.
    targets = {k: value.config.get(k) for k in RETURN_TARGET_KEYS}
    rows = []
    for tsg in args.t_stopgrad:
        for scale in args.scales:
            if scale == 0 and tsg != args.t_stopgrad[0]:
                continue  # without guidance t_stopgrad changes nothing
            config = LocomotionPlanConfig(guide="value", scale=scale, t_stopgrad=tsg, n_guide_steps=args.n_guide_steps,
                                          candidates=args.candidates, sampler=args.sampler,
                                          sampler_steps=sampler_steps_or_default(args.sampler, args.sampler_steps),
                                          warm_level=args.warm_level)
            summary = _evaluate(LocomotionPlanner(model, value, config), args, env, env_id, refs)
            rows.append({"scale": scale, "t_stopgrad": tsg, **{k: summary[k] for k in
                         ("score", "score_se", "return", "length", "fell", "episodes", "seed_scores", "plan_seconds")}})
            print(f"scale {scale:g}, t_stopgrad {tsg}: score {summary['score']:.1f} ± {summary['score_se']:.1f}",
                  flush=True)
            # Written after every cell: a long sweep cut short keeps the cells it finished ("complete": false).
            _write_sweep(rows, args, env, dataset, behaviour, targets, out, figure, complete=False)
    _write_sweep(rows, args, env, dataset, behaviour, targets, out, figure, complete=True)
    print(f"wrote {out} and {figure}")


def _write_sweep(rows, args, env, dataset, behaviour, targets, out: Path, figure: Path, complete: bool) -> None:
    """The sweep's report and figure for the cells measured so far."""
    unguided = [r for r in rows if r["scale"] == 0]
    # The unguided point is drawn on every t_stopgrad's line (measured once: t_stopgrad changes nothing there).
    drawn = rows + [{**r, "t_stopgrad": t} for r in unguided for t in args.t_stopgrad if t != r["t_stopgrad"]]
    plot_guide_sweep(drawn, figure, baseline=behaviour["score"],
                     title=f"{_run_name(env, args)}: value guidance, {len(args.seeds)} seeds x {args.episodes} episodes")
    report = {"env": env, "level": args.level, "dataset": dataset, "checkpoint": args.checkpoint,
              "value": args.value[0] if len(args.value) == 1 else args.value, "value_targets": targets,
              "args": vars(args), "git_commit": git_commit(), "command": "python " + " ".join(sys.argv),
              "complete": complete, "behaviour": behaviour, "rows": drawn, "figure": str(figure)}
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(report, indent=2))


def _evaluate(planner, args, env, env_id, refs) -> dict:
    """Summary of ``args.episodes`` episodes for each of ``args.seeds``."""
    records = [r for s in args.seeds for r in evaluate_locomotion(
        planner, env_id, episodes=args.episodes, eval_seed=s, ref_scores=refs, d4rl_ref=D4RL_REF_SCORES.get(env),
        record=0)]
    return summarize_episodes(records)


def cfg_sweep(args, env, env_id, dataset, refs, model, value) -> None:
    rows = []
    for weight in args.weights:
        for target in args.targets:
            config = LocomotionPlanConfig(guide="cfg", cfg_weight=weight, target_return=target, select="first",
                                          candidates=args.candidates, sampler=args.sampler,
                                          sampler_steps=sampler_steps_or_default(args.sampler, args.sampler_steps),
                                          warm_level=args.warm_level)
            planner = LocomotionPlanner(model, value, config)
            summary = _evaluate(planner, args, env, env_id, refs)
            rows.append({"target_return": target, "target_return_value": planner.target_return(), "cfg_weight": weight,
                         **{k: summary[k] for k in ("score", "score_se", "return", "length", "episodes", "seed_scores")}})
            print(f"w {weight:g}, target {target} ({planner.target_return():.1f}): score {summary['score']:.1f} ± "
                  f"{summary['score_se']:.1f}", flush=True)
    name = _run_name(env, args)
    out = Path(args.out or f"results/cfg_sweep_{name}.json")
    report = {"env": env, "level": args.level, "dataset": dataset, "checkpoint": args.checkpoint, "args": vars(args),
              "git_commit": git_commit(), "command": "python " + " ".join(sys.argv), "rows": rows}
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
