"""Closed-loop evaluation of a locomotion planner in Gymnasium MuJoCo envs.

Episodes of one evaluation seed run side by side: each decision plans for every live env in one batched
call, executes the first ``execute`` actions of each plan, and replans. Episode ``i`` of seed ``s`` resets
with seed ``s * 1000 + i``, disjoint from the collection seeds. With ``warm_level`` set in the planner, each
replan starts from that env's previous plan shifted by the executed steps. Per-episode records (seed, return,
length, termination, normalised scores, and the forward speed over each 100 steps: a slow start or a stall
shows there) are what the aggregates are computed from.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from diffuser.envs.health import HealthRule
from diffuser.evaluation.stats import mean_se
from diffuser.envs.body import forward_speed_index
from diffuser.planning.locomotion import LocomotionPlanner
from diffuser.utils import atomic_path, progress

__all__ = ["LocomotionEpisode", "evaluate_locomotion", "write_episodes", "summarize_episodes"]

SPEED_WINDOW = 100  # env steps per entry of an episode's speed profile


@dataclass
class LocomotionEpisode:
    seed: int  # env.reset seed
    eval_seed: int  # the evaluation seed (planner noise) this episode belongs to
    ret: float  # undiscounted return
    length: int
    terminated: bool  # fell (True) or ran out of time
    score: float  # 100 · (R − ref_min) / (ref_max − ref_min) with the dataset's reference scores
    d4rl_score: float | None  # the same with D4RL's reference scores of this env (None when unknown)
    plan_seconds: float  # wall time spent planning for this episode's batch, shared equally
    speed: list[float] = field(default_factory=list)  # mean forward speed (m/s) over each 100 steps: where score is lost
    trace: dict[str, Any] | None = field(default=None, repr=False)  # observations, x, plans (recorded episodes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("trace")
        return d


def evaluate_locomotion(planner: LocomotionPlanner, env_id: str, *, episodes: int = 10, eval_seed: int = 0,
                        ref_scores: tuple[float, float], d4rl_ref: tuple[float, float] | None = None,
                        max_episode_steps: int | None = None, record: int = 1, record_every: int = 25,
                        show_progress: bool | None = None) -> list[LocomotionEpisode]:
    """Run ``episodes`` episodes side by side with planner noise seeded by ``eval_seed``.

    ``record``: how many episodes keep a trace (their observations, x positions and the plan made every
    ``record_every`` steps) for videos and plots.
    """
    import gymnasium as gym

    envs = [gym.make(env_id, **({"max_episode_steps": max_episode_steps} if max_episode_steps else {}))
            for _ in range(episodes)]
    space = envs[0].observation_space
    planner.check_env(space.shape[0], envs[0].action_space.shape[0])
    planner.set_action_bounds(envs[0].action_space.low, envs[0].action_space.high)
    planner.set_health_rule(HealthRule.from_env(envs[0]))
    planner.set_forward_speed_index(forward_speed_index(envs[0]))
    seeds = [eval_seed * 1000 + i for i in range(episodes)]
    obs = np.stack([env.reset(seed=s)[0] for env, s in zip(envs, seeds)])
    generator = torch.Generator(planner.device).manual_seed(eval_seed)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=int)
    terminated, alive = np.zeros(episodes, dtype=bool), np.ones(episodes, dtype=bool)
    traces = [{"observations": [o.tolist()], "x": [_x(env)], "plans": []} for env, o in zip(envs[:record], obs)]
    marks = [[_x(env)] for env in envs]  # x at steps 0, 100, 200, ... and at the episode's end
    limit = envs[0].spec.max_episode_steps or 1000
    plan_seconds = 0.0
    bar = progress(total=limit, desc=f"{env_id} seed {eval_seed}", disable=None if show_progress is None else not show_progress)
    step, next_record = 0, 0
    last = None  # (episodes, H, A+S) each env's last chosen plan, normalised: warm starts
    while alive.any():
        live = np.flatnonzero(alive)
        started = time.perf_counter()
        warm = planner.shift(last[live]) if last is not None and planner.config.warm_level is not None else None
        plans = planner.plan(obs[live], generator, warm_start=warm)
        if last is None:
            last = plans.trajectories.new_zeros((episodes, *plans.trajectories.shape[1:]))
        last[torch.as_tensor(live, device=last.device)] = plans.trajectories
        plan_seconds += time.perf_counter() - started
        for j, i in enumerate(live):
            if i < record and step >= next_record:
                traces[i]["plans"].append({"step": step, "states": plans.states[j].tolist()})
            for action in plans.actions[j]:
                o, r, term, trunc, _ = envs[i].step(action)
                returns[i] += r
                lengths[i] += 1
                obs[i] = o
                if i < record:
                    traces[i]["observations"].append(o.tolist())
                    traces[i]["x"].append(_x(envs[i]))
                if term or trunc or lengths[i] % SPEED_WINDOW == 0:
                    marks[i].append(_x(envs[i]))
                if term or trunc:
                    alive[i], terminated[i] = False, bool(term)
                    break
        if step >= next_record:
            next_record += record_every
        step += planner.config.execute
        bar.update(planner.config.execute)
    bar.close()
    for env in envs:
        env.close()
    lo, hi = ref_scores
    out = []
    for i in range(episodes):
        d4rl = None if d4rl_ref is None else 100 * (returns[i] - d4rl_ref[0]) / (d4rl_ref[1] - d4rl_ref[0])
        out.append(LocomotionEpisode(seeds[i], eval_seed, float(returns[i]), int(lengths[i]), bool(terminated[i]),
                                     float(100 * (returns[i] - lo) / (hi - lo)), d4rl, plan_seconds / episodes,
                                     _speeds(marks[i], int(lengths[i]), envs[i].unwrapped.dt),
                                     traces[i] if i < record else None))
    return out


def _speeds(marks: list[float], length: int, dt: float) -> list[float]:
    """Mean forward speed over each ``SPEED_WINDOW`` steps (the last window may be shorter) from the x
    positions at the windows' ends."""
    ends = [*range(SPEED_WINDOW, length, SPEED_WINDOW), length] if length else []
    steps = np.diff([0, *ends])
    return [round(float(d / (n * dt)), 4) for d, n in zip(np.diff(marks[: len(ends) + 1]), steps)]


def _x(env) -> float:
    """The body's x position (not part of the observation): for videos of the rollout."""
    return float(env.unwrapped.data.qpos[0])


def summarize_episodes(records: Sequence[LocomotionEpisode]) -> dict[str, Any]:
    """Mean ± standard error of scores and returns over episodes; per-seed means too."""
    scores = [r.score for r in records]
    score, se = mean_se(scores)
    ret, ret_se = mean_se([r.ret for r in records])
    d4 = [r.d4rl_score for r in records if r.d4rl_score is not None]
    by_seed = {}
    for r in records:
        by_seed.setdefault(r.eval_seed, []).append(r.score)
    out = {"episodes": len(records), "score": score, "score_se": se, "return": ret, "return_se": ret_se,
           "length": float(np.mean([r.length for r in records])),
           "fell": float(np.mean([r.terminated for r in records])),
           "seed_scores": {str(k): float(np.mean(v)) for k, v in sorted(by_seed.items())},
           "plan_seconds": float(sum(r.plan_seconds for r in records))}
    if d4:
        out["d4rl_score"], out["d4rl_score_se"] = mean_se(d4)
    if len(by_seed) > 1:
        out["score_se_over_seeds"] = mean_se(list(out["seed_scores"].values()))[1]
    return out


def write_episodes(records: Sequence[LocomotionEpisode], path: str | Path) -> Path:
    """Per-episode records as JSON lines, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    return path
