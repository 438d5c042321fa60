"""Behaviour policies for the locomotion datasets: SAC with stable-baselines3, checkpoints, export.

The D4RL recipe (shared/REFERENCE.md §1, §3): train SAC online; the final/best actor is the ``expert``,
an actor stopped at about a third of the expert's return is the ``medium`` one, and the replay buffer
of that run up to the medium checkpoint is ``medium-replay``.

:func:`train_behaviour` trains SAC (SB3 defaults, one torch thread) and every ``checkpoint_every`` steps
exports the deterministic actor (safetensors + JSON, :mod:`diffuser.collect.policy`), evaluates that
exported actor, appends a line to ``<run>/log.jsonl`` and saves the replay buffer so far
(``<run>/replay.npz``). Nothing is pickled, so :func:`export_levels` — which picks ``expert`` (best
evaluated return, or the front-runner most robust to the collector's action noise) and ``medium`` (the
checkpoint before it closest to a third of its return, earliest on ties) and copies them to
``assets/policies/<env>/<level>`` with the medium part of the buffer (stored compactly,
:func:`compact_replay`) — needs no SB3.

SB3 is imported only inside :func:`train_behaviour` (extra ``locomotion``).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffuser.collect.policy import MLPActor, PolicyCard, load_policy, save_policy
from diffuser.utils import atomic_path, atomic_write_bytes, progress, require_package

__all__ = ["LOCOMOTION_ENVS", "env_id_for", "evaluate_policy", "train_behaviour", "export_levels",
           "actor_from_sb3", "read_log", "compact_replay", "expand_replay"]

# Short names used on the command line and in dataset ids -> Gymnasium ids.
LOCOMOTION_ENVS = {"hopper": "Hopper-v5", "walker2d": "Walker2d-v5", "halfcheetah": "HalfCheetah-v5"}
MEDIUM_FRACTION = 1 / 3  # D4RL: medium = a policy trained to about 1/3 of the expert's return
REPLAY_KEYS = ("observations", "next_observations", "actions", "rewards", "terminations", "truncations")


def _episode_ends(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Rows that end an episode: terminated or truncated, and the buffer's last row (it may stop mid-episode)."""
    ends = np.asarray(arrays["terminations"], bool) | np.asarray(arrays["truncations"], bool)
    ends[-1:] = True
    return ends


def compact_replay(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A replay buffer that stores each observation once.

    Inside an episode ``next_observations[i]`` is ``observations[i + 1]``, so only the rows that end an
    episode (:func:`_episode_ends`) keep theirs, as ``final_observations``: the committed medium-replay
    buffers are half the size. :func:`expand_replay` restores the full arrays.
    """
    ends = _episode_ends(arrays)
    inner = np.flatnonzero(~ends)
    if not np.array_equal(arrays["next_observations"][inner], arrays["observations"][inner + 1]):
        raise ValueError("next_observations differ from the following observations inside an episode; "
                         "the buffer is not in time order and cannot be compacted")
    out = {k: v for k, v in arrays.items() if k != "next_observations"}
    out["final_observations"] = arrays["next_observations"][ends]
    return out


def expand_replay(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The inverse of :func:`compact_replay`; a buffer that already has ``next_observations`` is returned as is."""
    if "next_observations" in arrays:
        return dict(arrays)
    if "final_observations" not in arrays:
        raise ValueError("replay buffer has neither next_observations nor final_observations")
    out = {k: v for k, v in arrays.items() if k != "final_observations"}
    obs = arrays["observations"]
    nxt = np.empty_like(obs)
    nxt[:-1] = obs[1:]
    ends = _episode_ends(arrays)
    if ends.sum() != len(arrays["final_observations"]):
        raise ValueError(f"replay buffer has {ends.sum()} episode ends but {len(arrays['final_observations'])} "
                         "final_observations")
    nxt[ends] = arrays["final_observations"]
    out["next_observations"] = nxt
    return out


def env_id_for(env: str) -> str:
    """``hopper`` -> ``Hopper-v5``; a full Gymnasium id of one of the three is accepted as is."""
    if env in LOCOMOTION_ENVS:
        return LOCOMOTION_ENVS[env]
    if env in LOCOMOTION_ENVS.values():
        return env
    raise ValueError(f"unknown locomotion env {env!r}; expected one of {sorted(LOCOMOTION_ENVS)}")


def env_name_for(env: str) -> str:
    """``Hopper-v5`` or ``hopper`` -> ``hopper``."""
    env_id = env_id_for(env)
    return next(k for k, v in LOCOMOTION_ENVS.items() if v == env_id)


def evaluate_policy(act, env_id: str, episodes: int, seed: int, progress_desc: str | None = None,
                    show_progress: bool | None = None, action_noise: float = 0.0) -> np.ndarray:
    """Returns of ``episodes`` episodes of ``act(obs) -> action`` (episode i reset with ``seed + i``).

    ``act=None`` is the uniform random policy (action_space seeded with ``seed``). ``action_noise`` adds
    N(0, action_noise²) to each action, clipped to the bounds, as the dataset collector does.
    """
    import gymnasium as gym

    env = gym.make(env_id)
    env.action_space.seed(seed)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    returns = np.zeros(episodes)
    try:
        for i in progress(range(episodes), desc=progress_desc, disable=None if show_progress else True):
            obs, _ = env.reset(seed=seed + i)
            done = False
            while not done:
                action = env.action_space.sample() if act is None else act(obs)
                if action_noise > 0:
                    action = np.clip(action + action_noise * rng.standard_normal(action.shape), low, high)
                obs, reward, terminated, truncated, _ = env.step(action)
                returns[i] += float(reward)
                done = terminated or truncated
    finally:
        env.close()
    return returns


def actor_from_sb3(model, card: PolicyCard) -> MLPActor:
    """Copy SB3 SAC's actor (latent_pi Linear layers + mu) into an :class:`MLPActor` described by ``card``."""
    linears = [m for m in model.actor.latent_pi if isinstance(m, torch.nn.Linear)]
    actor = MLPActor(card)
    with torch.no_grad():
        for dst, src in zip(actor.layers, linears, strict=True):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        actor.mu.weight.copy_(model.actor.mu.weight)
        actor.mu.bias.copy_(model.actor.mu.bias)
    return actor.eval()


def _replay_arrays(buffer, n: int) -> dict[str, np.ndarray]:
    """The first ``n`` transitions of an SB3 ReplayBuffer (one env), as flat arrays."""
    timeouts = buffer.timeouts[:n, 0].astype(bool)
    dones = buffer.dones[:n, 0].astype(bool)
    return {
        "observations": buffer.observations[:n, 0].astype(np.float32),
        "next_observations": buffer.next_observations[:n, 0].astype(np.float32),
        "actions": buffer.actions[:n, 0].astype(np.float32),
        "rewards": buffer.rewards[:n, 0].astype(np.float32),
        # SB3 stores dones = terminated or truncated, and timeouts = truncated (time limit)
        "terminations": dones & ~timeouts,
        "truncations": timeouts,
    }


def _save_npz(path: Path, arrays: dict[str, np.ndarray], compressed: bool) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            (np.savez_compressed if compressed else np.savez)(handle, **arrays)


def read_log(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The checkpoint records of a training run (one dict per checkpoint, in order)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no training log at {path}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class TrainConfig:
    env: str = "hopper"
    steps: int = 300_000            # environment steps (= gradient steps with SB3's defaults)
    seed: int = 0
    checkpoint_every: int = 10_000
    eval_episodes: int = 5          # deterministic episodes per checkpoint
    run_dir: str = "runs/behaviour/hopper-s0"
    command: str | None = None


def train_behaviour(cfg: TrainConfig, show_progress: bool | None = None) -> list[dict[str, Any]]:
    """Train SAC (SB3 defaults) on ``cfg.env``; checkpoints, log and replay buffer under ``cfg.run_dir``.

    Returns the checkpoint records (also in ``<run_dir>/log.jsonl``).
    """
    sb3 = require_package("stable_baselines3", "locomotion")
    import gymnasium as gym
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor

    torch.set_num_threads(1)
    env_id = env_id_for(cfg.env)
    run = Path(cfg.run_dir)
    if (run / "log.jsonl").exists():
        raise FileExistsError(f"{run} already holds a training run; pick another --run-dir")
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    command = cfg.command or " ".join(shlex.quote(a) for a in sys.argv)
    atomic_write_bytes(run / "config.json", (json.dumps({**cfg.__dict__, "command": command, "env_id": env_id,
                                                         "sb3": sb3.__version__}, indent=2) + "\n").encode())
    env = Monitor(gym.make(env_id))
    env.reset(seed=cfg.seed)
    model = sb3.SAC("MlpPolicy", env, seed=cfg.seed, device="cpu", verbose=0)
    space = env.action_space
    hidden = [m.out_features for m in model.actor.latent_pi if isinstance(m, torch.nn.Linear)]
    records: list[dict[str, Any]] = []
    start = time.time()
    bar = progress(total=cfg.steps, desc=f"SAC {env_id}", disable=True if show_progress is False else None,
                   unit="step", mininterval=5.0)

    class _Checkpoints(BaseCallback):
        def _on_step(self) -> bool:
            bar.update(1)
            n = self.num_timesteps
            if n % cfg.checkpoint_every == 0 or n == cfg.steps:
                card = PolicyCard(env_id=env_id, obs_dim=int(env.observation_space.shape[0]),
                                  act_dim=int(space.shape[0]), hidden=hidden,
                                  action_low=[float(x) for x in space.low], action_high=[float(x) for x in space.high],
                                  train_steps=n, seed=cfg.seed, command=command)
                actor = actor_from_sb3(model, card)
                eval_seed = 1_000_000 + cfg.seed * 10_000 + len(records) * 100  # disjoint from training
                t0 = time.time()
                returns = evaluate_policy(actor.act, env_id, cfg.eval_episodes, eval_seed)
                card.eval_return, card.eval_return_std = float(returns.mean()), float(returns.std())
                card.eval_episodes = cfg.eval_episodes
                card.extra = {"eval_seed": eval_seed}
                save_policy(actor, run / "checkpoints" / f"step_{n:08d}")
                _save_npz(run / "replay.npz", _replay_arrays(model.replay_buffer, n), compressed=False)
                recent = [float(r) for r in env.get_episode_rewards()[-10:]]
                rec = {"step": n, "wall_s": round(time.time() - start, 1), "eval_s": round(time.time() - t0, 1),
                       "eval_return": card.eval_return, "eval_return_std": card.eval_return_std,
                       "train_return_last10": float(np.mean(recent)) if recent else None,
                       "train_episodes": len(env.get_episode_rewards())}
                records.append(rec)
                with open(run / "log.jsonl", "a") as handle:
                    handle.write(json.dumps(rec) + "\n")
                print(json.dumps(rec), flush=True)
            return True

    try:
        model.learn(total_timesteps=cfg.steps, callback=_Checkpoints())
    finally:
        bar.close()
        env.close()
    return records


def _pick(records: list[dict[str, Any]], expert: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(medium, expert): expert = best evaluated return (latest on ties) unless given; medium = the checkpoint
    before it closest to a third of its evaluated return."""
    expert = expert or max(records, key=lambda r: (r["eval_return"], r["step"]))
    target = MEDIUM_FRACTION * expert["eval_return"]
    before = [r for r in records if r["step"] < expert["step"]] or [expert]
    medium = min(before, key=lambda r: (abs(r["eval_return"] - target), r["step"]))
    return medium, expert


def _pick_noise_robust_expert(run: Path, records: list[dict[str, Any]], noise: float, candidates: int,
                              episodes: int, show_progress: bool | None) -> tuple[dict[str, Any], dict[int, float]]:
    """The best of the ``candidates`` best-evaluated checkpoints when each action gets N(0, noise²).

    A checkpoint's 5-episode deterministic evaluation can hide a policy that falls as soon as its actions
    are perturbed, and the expert dataset is collected with noise: ranking the front-runners under that
    noise keeps its average return near the expert's.
    """
    front = sorted(records, key=lambda r: (r["eval_return"], r["step"]), reverse=True)[:candidates]
    noisy: dict[int, float] = {}
    for rec in front:
        actor = load_policy(run / "checkpoints" / f"step_{rec['step']:08d}")
        noisy[rec["step"]] = float(evaluate_policy(actor.act, actor.card.env_id, episodes, 3_000_000,
                                                   progress_desc=f"noisy eval {rec['step']}",
                                                   show_progress=show_progress, action_noise=noise).mean())
    best = max(front, key=lambda r: (noisy[r["step"]], r["step"]))
    return best, noisy


def export_levels(run_dir: str | os.PathLike, out_dir: str | os.PathLike, eval_episodes: int = 20,
                  medium_step: int | None = None, expert_step: int | None = None,
                  replay_out: str | os.PathLike | None = None, show_progress: bool | None = None,
                  expert_noise: float = 0.0, expert_candidates: int = 5) -> dict[str, Any]:
    """Pick ``medium`` and ``expert`` checkpoints of a run, re-evaluate them, copy them to ``out_dir``.

    Writes ``<out_dir>/{medium,expert}.{safetensors,json}`` (cards updated with the level, a fresh
    ``eval_episodes``-episode evaluation and the pick rule) and the medium part of the replay buffer as
    ``replay_out`` (default ``<out_dir>/medium_replay.npz``, compressed). ``expert_noise`` > 0 picks the
    expert among the ``expert_candidates`` best-evaluated checkpoints by their return under that action
    noise (:func:`_pick_noise_robust_expert`); medium stays the checkpoint before it closest to a third of
    its evaluated return. Returns a summary.
    """
    if expert_noise < 0 or expert_candidates < 1:
        raise ValueError(f"expert_noise must be >= 0 and expert_candidates >= 1, got {expert_noise}, "
                         f"{expert_candidates}")
    run, out = Path(run_dir), Path(out_dir)
    records = read_log(run)
    by_step = {r["step"]: r for r in records}
    for name, step in (("medium", medium_step), ("expert", expert_step)):
        if step is not None and step not in by_step:
            raise ValueError(f"no checkpoint at step {step} for {name}; have {sorted(by_step)}")
    noisy: dict[int, float] = {}
    if expert_step is not None:
        expert_rule = "forced with --expert-step"
    elif expert_noise > 0:
        expert, noisy = _pick_noise_robust_expert(run, records, expert_noise, expert_candidates, eval_episodes,
                                                  show_progress)
        expert_step = expert["step"]
        expert_rule = (f"best return with N(0, {expert_noise}^2) action noise ({eval_episodes} episodes) among "
                       f"the {len(noisy)} best-evaluated checkpoints")
    else:
        expert_rule = "best evaluated return"
    medium, expert = _pick(records, by_step[expert_step] if expert_step is not None else None)
    medium = by_step[medium_step] if medium_step is not None else medium
    medium_rule = ("forced with --medium-step" if medium_step is not None else
                   f"checkpoint closest to {MEDIUM_FRACTION:.3f} x expert's checkpoint return")
    summary: dict[str, Any] = {"run_dir": str(run)}
    noisy_by_step = {str(k): v for k, v in noisy.items()}  # JSON keys
    if noisy:
        summary["expert_noisy_returns"] = noisy_by_step
    for level, rec in (("medium", medium), ("expert", expert)):
        actor = load_policy(run / "checkpoints" / f"step_{rec['step']:08d}")
        card = actor.card
        seed = 2_000_000 + (0 if level == "medium" else 1000)
        returns = evaluate_policy(actor.act, card.env_id, eval_episodes, seed, progress_desc=f"eval {level}",
                                  show_progress=show_progress)
        card.level = level
        if card.command and "diffuser/cli.py" in card.command.split(" ", 1)[0]:
            card.command = "diffuser " + card.command.split(" ", 1)[1]  # run as `python -m diffuser.cli`
        card.extra = {**card.extra, "checkpoint_eval_return": rec["eval_return"],
                      "checkpoint_eval_episodes": card.eval_episodes, "eval_seed": seed,
                      "pick": expert_rule if level == "expert" else medium_rule}
        if level == "expert" and noisy:
            card.extra["noisy_returns_of_candidates"] = noisy_by_step
        card.eval_return, card.eval_return_std = float(returns.mean()), float(returns.std())
        card.eval_episodes = eval_episodes
        save_policy(actor, out / level)
        summary[level] = {"step": rec["step"], "eval_return": card.eval_return, "eval_return_std": card.eval_return_std}
    with np.load(run / "replay.npz") as data:
        arrays = {k: data[k][: medium["step"]] for k in REPLAY_KEYS}
    replay_path = Path(replay_out) if replay_out is not None else out / "medium_replay.npz"
    _save_npz(replay_path, compact_replay(arrays), compressed=True)
    summary["medium_replay"] = {"path": str(replay_path), "transitions": int(len(arrays["rewards"])),
                                "bytes": replay_path.stat().st_size}
    shutil.copyfile(run / "log.jsonl", out / "training_log.jsonl")
    if (run / "config.json").exists():
        shutil.copyfile(run / "config.json", out / "training_config.json")
    return summary
