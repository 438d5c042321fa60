"""Maze2D-style evaluation of a goal-conditioned planner in PointMaze.

Protocols (shared/REFERENCE.md §1):

- ``single``: the maze's fixed evaluation goal cell (D4RL maze2d), starts drawn by the env;
- ``multi``: a random goal and start per episode (Multi2D).

Every episode runs the full length (300 / 600 / 800 steps); the sparse reward (1 per step within 0.45 of
the goal) keeps accruing once there, so the return counts the steps spent at the goal, and the
normalized score is ``100 · (R − ref_min) / (ref_max − ref_min)`` with the dataset's reference scores.
The episodes of one seed run side by side: one batched planning call for all of them, then the envs are
stepped together with the vectorized tracker. Episode ``j`` of seed ``s`` resets its env with seed
``s · 10000 + j`` and plans draw noise from a generator seeded with ``s``, so a run is reproducible.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from diffuser.envs.registry import make_pointmaze_env, make_pointmaze_eval_env, pointmaze_episode_steps
from diffuser.envs.stepping import pointmaze_step_fn
from diffuser.planning.controller import TrackingController
from diffuser.planning.maze import MazePlanner
from diffuser.utils import progress

__all__ = ["PROTOCOLS", "EpisodeRecord", "ProtocolResult", "evaluate_protocol", "summarize"]

PROTOCOLS = ("single", "multi")


@dataclass
class EpisodeRecord:
    protocol: str
    seed: int  # the env's reset seed
    eval_seed: int  # the seed block it belongs to
    start: list[float]
    goal: list[float]
    episode_return: float
    score: float
    success: bool  # reached the goal at least once
    steps_to_goal: int | None
    final_distance: float
    plans: int  # planning calls for this episode
    plan_arrival: int  # the first plan's arrival step (plan_steps when it never arrives)
    plan_feasible: bool  # the first plan stays in free cells
    plan_clear: bool = True  # the first plan enters no region a hard cost expert avoids (test-time obstacle)
    path_clear: bool = True  # nor does the executed path
    extra: dict = field(default_factory=dict)  # what ``path_metrics`` measured on the executed path


@dataclass
class ProtocolResult:
    protocol: str
    records: list[EpisodeRecord]
    summary: dict[str, Any]
    # For figures: a few episodes' first plans (L, S), executed paths (T+1, S), starts, goals.
    plans: list[np.ndarray] = field(default_factory=list)
    paths: list[np.ndarray] = field(default_factory=list)
    chain: np.ndarray | None = None  # denoising chain of the first episode's first plan


def _make_env(maze, protocol: str, steps: int):
    if protocol == "single":
        return make_pointmaze_eval_env(maze, max_episode_steps=steps)
    if protocol == "multi":
        return make_pointmaze_env(maze, continuing_task=True, reset_target=False, max_episode_steps=steps)
    raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")


def summarize(scores: Sequence[float], successes: Sequence[bool] | None = None) -> dict[str, float]:
    """Mean and standard error (ddof 1) of per-episode scores, plus the success fraction."""
    s = np.asarray(scores, dtype=np.float64)
    out = {"score_mean": float(s.mean()), "score_se": float(s.std(ddof=1) / np.sqrt(len(s))) if len(s) > 1 else 0.0,
           "episodes": int(len(s))}
    if successes is not None:
        out["success_rate"] = float(np.mean(successes))
    return out


def evaluate_protocol(
    planner: MazePlanner,
    protocol: str,
    ref_scores: tuple[float, float],
    *,
    seeds: Sequence[int] = (1000, 1001, 1002),
    episodes_per_seed: int = 20,
    episode_steps: int | None = None,
    controller: TrackingController | None = None,
    keep: int = 8,
    show_progress: bool = True,
    path_metrics: Callable[[np.ndarray, np.ndarray], dict] | None = None,
    obstacles: Sequence | None = None,
) -> ProtocolResult:
    """Run ``len(seeds) * episodes_per_seed`` episodes of ``protocol``; see the module docstring.

    ``path_metrics(path (T+1, S), goal (2,)) -> dict`` adds measurements of each executed path to its
    record's ``extra`` (e.g. the time spent in a preferred region). ``obstacles``: hard cost experts
    (e.g. a DiscAvoid) whose regions count as collisions (default: the planner's own hard costs, so a
    planner without the obstacle expert can be measured against the same obstacle); the summary reports
    how often first plans and executed paths enter them.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    lo, hi = (float(v) for v in ref_scores)
    if not hi > lo:
        raise ValueError(f"reference scores must satisfy max > min, got min {lo}, max {hi}")
    if episodes_per_seed < 1 or not seeds:
        raise ValueError("need at least one seed and one episode per seed")
    maze = planner.maze
    T = int(episode_steps or pointmaze_episode_steps(maze))
    ctl = controller or TrackingController()
    cfg = planner.config
    n = episodes_per_seed
    envs = [_make_env(maze, protocol, T) for _ in range(n)]
    records: list[EpisodeRecord] = []
    kept_plans, kept_paths, chain = [], [], None
    t0 = time.time()
    bar = progress(total=len(seeds) * T, desc=f"{maze.name} {protocol}", disable=None if show_progress else True)
    for eval_seed in seeds:
        gen = torch.Generator(planner.planner.device).manual_seed(int(eval_seed))
        env_seeds = [int(eval_seed) * 10_000 + j for j in range(n)]
        states, goals = np.zeros((n, 4)), np.zeros((n, 2))
        for j, (env, s) in enumerate(zip(envs, env_seeds)):
            obs, _ = env.reset(seed=s)
            states[j], goals[j] = obs["observation"], obs["desired_goal"]
        steps = [pointmaze_step_fn(env) for env in envs]
        starts = states.copy()
        paths = np.zeros((n, T + 1, 4))
        paths[:, 0] = states
        returns = np.zeros(n)
        first_success = np.full(n, -1)
        num_plans = np.zeros(n, dtype=int)

        want_chain = chain is None and len(records) == 0
        first = planner.plan(states, goals, generator=gen, return_chain=want_chain)
        if want_chain and first.chain is not None:
            chain = first.chain[0]
        dense = first.dense.copy()  # (n, L, S): the plan each env follows
        sampled = first.trajectories.clone()  # (n, H, D) the same plans, normalised: warm starts
        since = np.zeros(n, dtype=int)  # env steps since that plan began
        num_plans += 1
        for t in range(T):
            if t > 0 and (cfg.replan_every or cfg.replan_drift):
                due = np.zeros(n, dtype=bool)
                if cfg.replan_every:
                    due |= since >= cfg.replan_every
                if cfg.replan_drift:
                    target = ctl.targets(dense, since - 1)  # where the agent should be now
                    due |= np.linalg.norm(states[:, :2] - target[:, :2], axis=-1) > cfg.replan_drift
                if not cfg.replan_at_goal:
                    due &= first_success < 0  # at the goal: keep holding it
                if due.any():
                    rows = torch.as_tensor(np.flatnonzero(due))
                    warm = planner.shift(sampled[rows], since[due]) if cfg.warm_level is not None else None
                    new = planner.plan(states[due], goals[due], generator=gen, warm_start=warm)
                    dense[due] = new.dense  # same horizon, same length
                    sampled[rows] = new.trajectories
                    since[due] = 0
                    num_plans[due] += 1
            actions = ctl(states, ctl.targets(dense, since))
            for j in range(n):
                x, y, vx, vy, _, _, reward, success = steps[j](actions[j])
                states[j] = (x, y, vx, vy)
                returns[j] += reward
                if success and first_success[j] < 0:
                    first_success[j] = t + 1
            paths[:, t + 1] = states
            since += 1
            bar.update(1)
        plan_clear = planner.clear_of_hard_costs(first.dense, obstacles)
        path_clear = planner.clear_of_hard_costs(paths, obstacles)
        for j in range(n):
            R = float(returns[j])
            records.append(EpisodeRecord(
                protocol=protocol, seed=env_seeds[j], eval_seed=int(eval_seed),
                start=starts[j].round(4).tolist(), goal=goals[j].round(4).tolist(), episode_return=R,
                score=100.0 * (R - lo) / (hi - lo), success=bool(first_success[j] >= 0),
                steps_to_goal=int(first_success[j]) if first_success[j] >= 0 else None,
                final_distance=float(np.linalg.norm(states[j, :2] - goals[j])), plans=int(num_plans[j]),
                plan_arrival=int(first.arrival[j]), plan_feasible=bool(first.feasible[j]),
                plan_clear=bool(plan_clear[j]), path_clear=bool(path_clear[j]),
                extra=path_metrics(paths[j], goals[j]) if path_metrics is not None else {}))
        if len(kept_plans) < keep:
            k = min(keep - len(kept_plans), n)
            kept_plans += list(first.dense[:k])
            kept_paths += list(paths[:k])
    bar.close()
    for env in envs:
        env.close()
    scores = [r.score for r in records]
    summary = summarize(scores, [r.success for r in records])
    reached = [r.steps_to_goal for r in records if r.steps_to_goal is not None]
    summary.update({
        "protocol": protocol, "seeds": [int(s) for s in seeds], "episode_steps": T,
        "return_mean": float(np.mean([r.episode_return for r in records])),
        "steps_to_goal_median": float(np.median(reached)) if reached else None,
        "first_plan_feasible": float(np.mean([r.plan_feasible for r in records])),
        "plans_per_episode": float(np.mean([r.plans for r in records])),
        "plan_collision_rate": float(np.mean([not r.plan_clear for r in records])),
        "path_collision_rate": float(np.mean([not r.path_clear for r in records])),
        "ref_min_score": lo, "ref_max_score": hi, "wall_seconds": round(time.time() - t0, 2),
    })
    return ProtocolResult(protocol, records, summary, kept_plans, kept_paths, chain)


def write_records(records: Sequence[EpisodeRecord], path: str | Path) -> Path:
    """One JSON object per line, one line per episode."""
    from diffuser.utils import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(asdict(r)) + "\n" for r in records))
    return path
