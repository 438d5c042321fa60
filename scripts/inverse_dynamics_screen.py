"""Screen: execute the action an inverse-dynamics model infers from the plan's states, not the plan's own.

    python scripts/inverse_dynamics_screen.py --env walker2d --level medium-expert --dataset-version v1 \
        --checkpoint RUN/train/diffusion --value RUN/train/value --seeds 10 11 --episodes 17 \
        --out results/locomotion_ablations/NAME.json

A diffusion plan's actions need not drive the body to its planned next state. Decision Diffuser's remedy
is an inverse-dynamics model a_t = g(s_t, s_{t+1}) learned from the dataset's transitions; this script
fits one (an MLP on the state and the state change, both standardised), then runs the classifier-free
planner (value-ranked, warm DPM-Solver++ 3, as the Walker2d medium-expert-v1 recipe) with each candidate's
actions replaced by g(planned s_t, planned s_{t+1}), so ranking and ``--average`` work as before. It writes
the scores, falls, per-episode records (with speed profiles), the fit's error, config, seed and git commit.
It made the README's first inverse-dynamics screen; the planner option that grew out of it,
``diffuser plan locomotion --inverse-weight W`` (``diffuser/models/inverse_dynamics.py``), reads g's action
off the chosen plan alone, so the value ranking sees the plans as sampled. The model is refit on every run
(about 30 CPU seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from diffuser.data.minari_io import dataset_info, load_episodes
from diffuser.evaluation.locomotion import evaluate_locomotion, summarize_episodes, write_episodes
from diffuser.planning.locomotion import LocomotionPlanConfig, LocomotionPlanner
from diffuser.planning.planner import Plan
from diffuser.training.inverse_dynamics import transitions
from diffuser.utils import atomic_path, git_commit


class InverseDynamics(nn.Module):
    """a_t = g(s_t, s_{t+1}) on standardised inputs: the state and the state's change."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, action_dim: int, hidden: int = 256):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        s = mean.shape[0]
        self.net = nn.Sequential(nn.Linear(2 * s, hidden), nn.Mish(), nn.Linear(hidden, hidden), nn.Mish(),
                                 nn.Linear(hidden, action_dim))

    def forward(self, state: torch.Tensor, next_state: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([(state - self.mean) / self.std, (next_state - state) / self.std], -1))


def fit(dataset_id: str, steps: int, batch: int, lr: float, seed: int) -> tuple[InverseDynamics, dict]:
    torch.manual_seed(seed)
    s, s1, a = transitions(load_episodes(dataset_id))
    held = torch.randperm(len(s))[: len(s) // 20]  # 5 % held out for the fit's error
    train = torch.ones(len(s), dtype=torch.bool)
    train[held] = False
    model = InverseDynamics(s[train].mean(0), s[train].std(0) + 1e-6, a.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr)
    ts, ts1, ta = s[train], s1[train], a[train]
    started = time.perf_counter()
    for _ in range(steps):
        i = torch.randint(len(ts), (batch,))
        loss = (model(ts[i], ts1[i]) - ta[i]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        mse = float((model(s[held], s1[held]) - a[held]).square().mean())
    return model, {"transitions": len(s), "held_out_mse": mse, "action_variance": float(a[held].var(0).mean()),
                   "seconds": round(time.perf_counter() - started, 1)}


def with_inverse_actions(planner: LocomotionPlanner, model: InverseDynamics) -> None:
    """Make the planner's sampler return, for every candidate, g(s_k, s_{k+1}) along its planned states."""
    sample = planner.planner.plan

    def plan(*args, **kwargs) -> Plan:
        out = sample(*args, **kwargs)
        with torch.no_grad():
            states = out.states.to(torch.float32).cpu()
            actions = model(states[:, :-1], states[:, 1:]).clamp(-1, 1)
        # The last step has no next state: it keeps the plan's own action (never executed with execute < H).
        actions = torch.cat([actions, out.actions[:, -1:].cpu().to(actions.dtype)], 1).to(out.actions)
        return Plan(out.states, actions, out.trajectories)

    planner.planner.plan = plan


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", required=True)
    p.add_argument("--level", required=True)
    p.add_argument("--dataset-version", default="v1")
    p.add_argument("--checkpoint", required=True, help="the diffusion model's export or run directory")
    p.add_argument("--value", required=True, help="the value function's (it ranks the candidates)")
    p.add_argument("--cfg-weight", type=float, default=3.0)
    p.add_argument("--target-return", default="q90")
    p.add_argument("--average", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[10, 11])
    p.add_argument("--episodes", type=int, default=17)
    p.add_argument("--fit-steps", type=int, default=4000)
    p.add_argument("--fit-seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the report, a .json file (episodes go beside it, .jsonl)")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".json":
        raise SystemExit(f"--out {out} should be a .json file")
    dataset_id = f"diffuser/mujoco/{args.env}/{args.level}-{args.dataset_version}"
    info = dataset_info(dataset_id)
    model, fit_report = fit(dataset_id, args.fit_steps, 1024, 1e-3, args.fit_seed)
    print(f"inverse dynamics: held-out MSE {fit_report['held_out_mse']:.4f} (action variance "
          f"{fit_report['action_variance']:.4f}), {fit_report['seconds']} s", flush=True)
    config = LocomotionPlanConfig(guide="cfg", cfg_weight=args.cfg_weight, target_return=args.target_return,
                                  select="value", average=args.average, sampler="dpmpp", sampler_steps=3,
                                  warm_level=0.67)
    planner = LocomotionPlanner.from_checkpoints(args.checkpoint, args.value, config)
    with_inverse_actions(planner, model)
    refs = (info["ref_min_score"], info["ref_max_score"])
    records = []
    for seed in args.seeds:
        records += evaluate_locomotion(planner, info["eval_env_id"] or info["env_id"], episodes=args.episodes,
                                       eval_seed=seed, ref_scores=refs, record=0)
    summary = summarize_episodes(records)
    report = {"dataset": dataset_id, "checkpoint": args.checkpoint, "value": args.value, "seeds": args.seeds,
              "episodes_per_seed": args.episodes, "planner": {**planner.describe(), "actions": "inverse dynamics"},
              "inverse_dynamics": {"fit_steps": args.fit_steps, "fit_seed": args.fit_seed, "hidden": 256, **fit_report},
              "result": summary, "git_commit": git_commit(), "command": "python " + " ".join(sys.argv)}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    write_episodes(records, out.with_suffix(".jsonl"))
    print(f"score {summary['score']:.1f} ± {summary['score_se']:.1f}, fell {summary['fell']:.0%} -> {out}")


if __name__ == "__main__":
    main()
