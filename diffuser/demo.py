"""The quick demo: train a small planner on synthetic point-mass data, then plan start → goal.

It runs in a few CPU minutes and exercises the whole path (data → normalizer → windows → training with
EMA and checkpoints → export → load → inpainted sampling → execution), writing ``demo.json`` (config,
seed, git commit, metrics) and figures. The maze-planning job (`diffuser plan maze`) is the real one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from diffuser.data.synthetic import PointMassDynamics
from diffuser.diffusion.samplers import DDIM, DDPM
from diffuser.planning.planner import Planner
from diffuser.pretrained import load_model
from diffuser.utils import git_commit, resolve_device

SUCCESS_RADIUS = 0.1


def compose_train_config(overrides: list[str], config_name: str = "train"):
    """configs/<config_name>.yaml (train or train_value) composed with Hydra's compose API (no run-dir management)."""
    from hydra import compose, initialize_config_dir

    from diffuser.cli import config_dir
    from diffuser.config import register_configs

    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    # Inside a running Hydra app (a `diffuser job`), Hydra is initialised already and refuses a second
    # initialisation: set the app's instance aside while composing, then put it back.
    outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)
    finally:
        if outer is not None:
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(outer)


def track(plan_states: np.ndarray, start: np.ndarray, steps: int, dyn: PointMassDynamics) -> np.ndarray:
    """Execute a plan (H, 4) with a dead-beat tracker: each step aims at the next planned position;
    past the plan's end it holds the last planned position. Returns executed states (steps+1, 4)."""
    s = start.copy()
    out = [s]
    for t in range(steps):
        target = plan_states[min(t + 1, len(plan_states) - 1), :2]
        v_needed = (target - s[:2]) / dyn.dt
        a = np.clip((v_needed - dyn.damping * s[2:]) / (dyn.dt * dyn.gain), -1.0, 1.0)
        s = dyn.step(s, a)
        out.append(s)
    return np.asarray(out)


def run_demo(out_dir: str = "runs/demo", steps: int = 3000, seed: int = 0, device: str = "auto",
             num_pairs: int = 32, overrides: list[str] | None = None) -> dict:
    from diffuser.config import to_container
    from diffuser.training.pipeline import train_diffusion
    from diffuser.viz.plans import plot_chain, plot_plans

    out = Path(out_dir)
    device = resolve_device(device)
    cfg = compose_train_config(["experiment=demo_pointmass", f"trainer.steps={steps}", f"trainer.seed={seed}",
                                f"run_dir={out / 'train'}", f"trainer.device={device}", *(overrides or [])])
    t0 = time.time()
    summary = train_diffusion(cfg)
    train_minutes = (time.time() - t0) / 60

    loaded = load_model(summary["checkpoint"], device=device)
    planner = Planner(loaded.model, loaded.normalizer)
    dyn = PointMassDynamics()
    rng = np.random.default_rng(10_000 + seed)  # evaluation pairs disjoint from the training data's seed
    starts = np.concatenate([rng.uniform(-0.9, 0.9, (num_pairs, 2)), np.zeros((num_pairs, 2))], axis=1)
    goals = rng.uniform(-0.9, 0.9, (num_pairs, 2))
    goal_state = np.concatenate([goals, np.zeros((num_pairs, 2))], axis=1)  # arrive and stay: zero velocity

    results = {}
    for name, sampler in [("ddpm", DDPM()), ("ddim_5", DDIM(5))]:
        t1 = time.time()
        plan = planner.plan(starts, goal_state, sampler=sampler, seed=seed, return_chain=(name == "ddpm"))
        latency = (time.time() - t1) / num_pairs * 1000
        states, actions = plan.states.cpu().numpy(), plan.actions.cpu().numpy()
        # How physical is the plan: distance between each planned next state and the dynamics' answer.
        predicted = dyn.step(states[:, :-1], actions[:, :-1])
        dynamics_error = float(np.abs(predicted[..., :2] - states[:, 1:, :2]).mean())
        executed = [track(states[i], starts[i], states.shape[1] + 16, dyn) for i in range(num_pairs)]
        final_dist = np.array([np.linalg.norm(e[-1, :2] - g) for e, g in zip(executed, goals)])
        results[name] = {
            "success_rate": float((final_dist <= SUCCESS_RADIUS).mean()),
            "final_distance_mean": float(final_dist.mean()),
            "plan_dynamics_error": dynamics_error,
            "plan_ms_per_pair_batched": latency,
        }
        if name == "ddpm":
            figure = plot_plans(states[:8], executed[:8], goals[:8], path=out / "demo_plans.png",
                                titles=[f"final dist {d:.2f}" for d in final_dist[:8]])
            chain_fig = plot_chain(plan.chain[0].cpu().numpy(), path=out / "demo_chain.png")

    report = {
        "job": "demo",
        "git_commit": git_commit(),
        "seed": seed,
        "device": str(device),
        "train_steps": steps,
        "train_minutes": round(train_minutes, 2),
        "config": to_container(cfg),
        "checkpoint": summary["checkpoint"],
        "num_pairs": num_pairs,
        "success_radius": SUCCESS_RADIUS,
        "results": results,
        "figures": [str(figure), str(chain_fig)],
    }
    (out / "demo.json").write_text(json.dumps(report, indent=2))
    print(f"\n{'sampler':<8} {'success':>8} {'final dist':>11} {'dyn. error':>11} {'ms/plan':>8}")
    for name, r in results.items():
        print(f"{name:<8} {r['success_rate']:>8.2f} {r['final_distance_mean']:>11.3f} "
              f"{r['plan_dynamics_error']:>11.4f} {r['plan_ms_per_pair_batched']:>8.1f}")
    print(f"\ntrained {steps} steps in {train_minutes:.1f} min; results: {out / 'demo.json'}; figures: {figure}, {chain_fig}")
    return report
