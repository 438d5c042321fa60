"""Locomotion datasets (Hopper, Walker2d, HalfCheetah) made here with the D4RL recipe, in Minari format.

Minari's and D4RL's locomotion data cannot be downloaded on this machine, so they are regenerated from
the exported behaviour policies of ``assets/policies/<env>/`` (:mod:`diffuser.collect.behaviour`):

* ``medium`` / ``expert``: rollouts of the medium / expert actor on the Gymnasium v5 env (default time
  limit 1000), each action ``actor(obs) + N(0, action_noise^2)`` clipped to the action bounds (default
  noise 0.1; 0 gives the deterministic actor). Episode k is reset with ``seed + k``; an episode ends at a
  termination (the agent fell: ``terminations[-1]``) or at the time limit (``truncations[-1]``); the run
  stops after ``steps`` steps, cutting the last episode (a truncation).
* ``medium-replay``: the replay buffer of the SAC run up to the medium checkpoint
  (``medium_replay.npz``), split into episodes at its terminations and truncations.
* ``medium-expert``: the episodes of the local ``medium`` dataset followed by those of ``expert``.

Reference scores (metadata ``ref_min_score`` / ``ref_max_score``): mean returns of a uniform random
policy and of the deterministic expert actor over ``ref_episodes`` episodes (episode i reset with
``REF_SEED + i``, the same for every level, so all datasets of an env share them).

Writing: :func:`minari.create_dataset_from_buffers` into a hidden staging directory of the datasets root,
then a rename onto the final id, so an interrupted run leaves nothing under that id. ``overwrite=True``
replaces an existing dataset only once the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffuser.collect.behaviour import REPLAY_KEYS, env_id_for, env_name_for, expand_replay
from diffuser.collect.policy import MLPActor, PolicyError, load_policy

__all__ = ["LEVELS", "DEFAULT_NAMESPACE", "DEFAULT_POLICY_DIR", "LocomotionReport", "default_dataset_id",
           "default_policy_dir",
           "collect_locomotion_report", "collect_locomotion", "locomotion_reference_scores", "rollout",
           "replay_episodes"]

LEVELS = ("medium", "expert", "medium-replay", "medium-expert")
DEFAULT_NAMESPACE = "diffuser/mujoco"
DEFAULT_POLICY_DIR = Path(__file__).resolve().parents[2] / "assets" / "policies"
REF_SEED = 10_000_000  # reference-score episodes: disjoint from any collection seed used here


def _check_version(version: str) -> None:
    if not re.fullmatch(r"v\d+", version):
        raise ValueError(f"dataset version must look like v0, v1, ...; got {version!r}")


def default_policy_dir(version: str = "v0") -> Path:
    """The policy set a dataset version is made from: ``assets/policies`` for v0, ``assets/policies_vN``
    for vN. Tying the two keeps a missing ``-v1`` dataset from being collected with the v0 policies."""
    _check_version(version)
    path = DEFAULT_POLICY_DIR if version == "v0" else DEFAULT_POLICY_DIR.with_name(f"policies_{version}")
    if not path.is_dir():
        raise FileNotFoundError(f"no policy set for dataset version {version} at {path}: pass the folder its "
                                f"datasets are made from (--policy-dir DIR), or train one with "
                                f"`diffuser collect train-policy`")
    return path


def default_dataset_id(env: str, level: str, version: str = "v0") -> str:
    """``diffuser/mujoco/<env>/<level>-<version>`` (Minari's official ids are ``mujoco/<env>/<level>-v0``).

    ``v0`` is the set made from ``assets/policies``; another version names datasets made from another
    policy set (``--policy-dir``), so the two never overwrite each other.
    """
    _check_version(version)
    return f"{DEFAULT_NAMESPACE}/{env_name_for(env)}/{level}-{version}"


@dataclass
class LocomotionReport:
    """What a collection produced and how long each part took (seconds)."""

    dataset_id: str
    path: str
    env_id: str
    level: str
    steps: int
    episodes: int
    terminated_episodes: int
    truncated_episodes: int
    mean_return: float
    mean_length: float
    seed: int
    action_noise: float | None
    ref_min_score: float
    ref_max_score: float
    ref_episodes: int
    seconds_simulate: float
    seconds_reference: float
    seconds_write: float
    seconds_total: float
    size_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Episode:
    """One episode in Minari's layout: N + 1 observations, N of everything else."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    seed: int | None = None

    def buffer(self, k: int):
        from minari.data_collector import EpisodeBuffer

        return EpisodeBuffer(id=k, seed=self.seed, observations=self.observations, actions=self.actions,
                             rewards=self.rewards, terminations=self.terminations, truncations=self.truncations)


def _sibling_id(dataset_id: str, env: str, level: str) -> str:
    """The ``level`` dataset of the same set as ``dataset_id``: ``.../medium-expert-v1`` -> ``.../medium-v1``.

    So a medium-expert dataset concatenates the medium and expert datasets of its own version (made from
    the same policies); an id not named ``medium-expert[-suffix]`` falls back to the default ids.
    """
    head, _, last = dataset_id.rpartition("/")
    if last == "medium-expert" or last.startswith("medium-expert-"):
        return f"{head}/{level}{last[len('medium-expert'):]}" if head else f"{level}{last[len('medium-expert'):]}"
    return default_dataset_id(env, level)


def _policy(policy_dir: str | os.PathLike | None, env: str, level: str) -> MLPActor:
    base = Path(policy_dir) if policy_dir is not None else DEFAULT_POLICY_DIR
    actor = load_policy(base / env_name_for(env) / level)
    if actor.card.env_id != env_id_for(env):
        raise PolicyError(f"{base / env_name_for(env) / level} was trained on {actor.card.env_id}, "
                          f"not {env_id_for(env)}")
    return actor


def _make_env(env_id: str, max_episode_steps: int | None = None):
    import gymnasium as gym

    return gym.make(env_id) if max_episode_steps is None else gym.make(env_id, max_episode_steps=max_episode_steps)


def rollout(actor: MLPActor, env_id: str, steps: int, seed: int, action_noise: float,
            show_progress: bool | None = None, max_episode_steps: int | None = None) -> list[_Episode]:
    """``steps`` steps of ``actor`` + Gaussian noise on ``env_id``, cut into episodes (module docstring)."""
    from tqdm import tqdm

    env = _make_env(env_id, max_episode_steps)
    low, high = env.action_space.low, env.action_space.high
    rng = np.random.default_rng(seed)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    O = np.empty((steps + 1, obs_dim), dtype=np.float64)  # + 1: room for the last next-observation
    A = np.empty((steps, act_dim), dtype=np.float32)
    R = np.empty(steps)
    term = np.zeros(steps, dtype=bool)
    trunc = np.zeros(steps, dtype=bool)
    episodes: list[_Episode] = []
    start, k = 0, 0
    obs, _ = env.reset(seed=seed)
    seeds = [seed]
    bar = tqdm(total=steps, unit="step", desc=f"collect {env_id}", disable=None if show_progress else True,
               mininterval=0.5)
    finals: dict[int, np.ndarray] = {}  # episode end index -> the observation after its last action
    try:
        for t in range(steps):
            O[t] = obs
            action = actor.act(obs)
            if action_noise > 0:
                action = action + action_noise * rng.standard_normal(act_dim)
            A[t] = np.clip(action, low, high)
            obs, R[t], term[t], trunc[t], _ = env.step(A[t])
            if term[t] or trunc[t]:
                finals[t + 1] = obs
                k += 1
                seeds.append(seed + k)
                obs, _ = env.reset(seed=seed + k)
            if t % 1000 == 999:
                bar.update(1000)
        bar.update(steps - bar.n)
    finally:
        bar.close()
        env.close()
    if steps not in finals:  # the run ends mid-episode: cut it there (a truncation, not a termination)
        finals[steps] = obs
        trunc[steps - 1] = True
    for k, end in enumerate(sorted(finals)):
        episodes.append(_Episode(
            observations=np.concatenate([O[start:end], finals[end][None]]).astype(np.float64),
            actions=A[start:end], rewards=R[start:end], terminations=term[start:end].copy(),
            truncations=trunc[start:end].copy(), seed=seeds[k]))
        start = end
    return episodes


def replay_episodes(path: str | os.PathLike, steps: int | None = None) -> list[_Episode]:
    """The episodes of a saved SAC replay buffer (``medium_replay.npz``), the first ``steps`` transitions."""
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"replay buffer not found: {path}; it is written by `diffuser collect export-policy`")
    with np.load(path) as data:
        try:
            arrays = expand_replay({k: data[k] for k in data.files})
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    missing = [k for k in REPLAY_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{path} lacks {missing}")
    arrays = {k: arrays[k][:steps] if steps else arrays[k] for k in REPLAY_KEYS}
    n = len(arrays["rewards"])
    if n == 0:
        raise ValueError(f"{path} holds no transitions")
    ends = np.flatnonzero(arrays["terminations"] | arrays["truncations"]) + 1
    if not len(ends) or ends[-1] != n:
        ends = np.append(ends, n)
    trunc = arrays["truncations"].astype(bool).copy()
    term = arrays["terminations"].astype(bool)
    trunc[n - 1] |= not term[n - 1]  # the buffer stops mid-episode: a cut, not a termination
    episodes, start = [], 0
    for end in ends:
        episodes.append(_Episode(
            observations=np.concatenate([arrays["observations"][start:end],
                                         arrays["next_observations"][end - 1:end]]).astype(np.float64),
            actions=arrays["actions"][start:end].astype(np.float32),
            rewards=arrays["rewards"][start:end].astype(np.float64),
            terminations=term[start:end].copy(), truncations=trunc[start:end].copy()))
        start = int(end)
    return episodes


def _dataset_episodes(dataset_id: str) -> list[_Episode]:
    """Episodes of a local Minari dataset, raw (for medium-expert)."""
    from diffuser.data.minari_io import _open

    ds = _open(dataset_id)
    return [_Episode(observations=np.asarray(ep.observations, dtype=np.float64), actions=np.asarray(ep.actions),
                     rewards=np.asarray(ep.rewards, dtype=np.float64), terminations=np.asarray(ep.terminations),
                     truncations=np.asarray(ep.truncations))
            for ep in ds.iterate_episodes()]


def locomotion_reference_scores(env: str, expert: MLPActor, episodes: int = 50,
                                show_progress: bool | None = None) -> tuple[float, float]:
    """(ref_min, ref_max): mean returns of the uniform random policy and the deterministic expert."""
    from diffuser.collect.behaviour import evaluate_policy

    if episodes < 1:
        raise ValueError(f"ref_episodes must be >= 1, got {episodes}")
    env_id = env_id_for(env)
    ref_min = evaluate_policy(None, env_id, episodes, REF_SEED, "reference: random", show_progress).mean()
    ref_max = evaluate_policy(expert.act, env_id, episodes, REF_SEED, "reference: expert", show_progress).mean()
    return float(ref_min), float(ref_max)


def _write(dataset_id: str, episodes: list[_Episode], env_spec, metadata: dict, final_dir: Path, root: Path,
           overwrite: bool, show_progress: bool | None) -> None:
    import minari
    import mujoco

    from diffuser.collect.pointmaze import _minari_root, _ProgressList

    staging = root / f".staging-{uuid.uuid4().hex[:12]}"
    try:
        buffers = _ProgressList([ep.buffer(k) for k, ep in enumerate(episodes)], show_progress is not False)
        with _minari_root(staging), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`author", category=UserWarning)
            warnings.filterwarnings("ignore", message=r"`code_permalink` is set to None", category=UserWarning)
            minari.create_dataset_from_buffers(
                dataset_id=dataset_id, buffer=buffers, env=env_spec, eval_env=env_spec.id,
                requirements=[f"mujoco=={mujoco.__version__}"], **metadata)
        namespace = dataset_id.rsplit("/", 1)[0]
        from minari.namespace import create_namespace, list_local_namespaces

        if namespace not in list_local_namespaces():
            with contextlib.suppress(ValueError):
                create_namespace(namespace, description="Datasets generated locally by diffuser.")
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if final_dir.exists():
            if not overwrite:
                raise FileExistsError(
                    f"dataset {dataset_id!r} appeared at {final_dir} while collecting; not overwritten")
            old = root / f".trash-{uuid.uuid4().hex[:12]}"
            os.rename(final_dir, old)
        os.rename(staging / dataset_id, final_dir)  # the id appears complete or not at all
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def collect_locomotion_report(
    env: str = "hopper",
    level: str = "medium",
    steps: int | None = 200_000,
    seed: int = 0,
    dataset_id: str | None = None,
    *,
    policy_dir: str | os.PathLike | None = None,
    replay: str | os.PathLike | None = None,
    action_noise: float = 0.1,
    ref_episodes: int = 50,
    overwrite: bool = False,
    progress: bool | None = True,
    max_episode_steps: int | None = None,
) -> LocomotionReport:
    """Collect a locomotion dataset (module docstring) and return a :class:`LocomotionReport`.

    Args:
        env: hopper | walker2d | halfcheetah (or the Gymnasium id).
        level: medium | expert | medium-replay | medium-expert.
        steps: environment steps (medium, expert); for medium-replay at most this many transitions of
            the buffer (None: all); ignored for medium-expert.
        seed: seed of the env resets (episode k: ``seed + k``) and of the action noise.
        dataset_id: Minari id; default ``diffuser/mujoco/<env>/<level>-v0``. For medium-expert the
            sources are the default medium and expert ids of ``env``.
        policy_dir: folder holding ``<env>/{medium,expert}.{safetensors,json}`` and
            ``<env>/medium_replay.npz`` (default ``assets/policies``).
        replay: the medium-replay npz (default ``<policy_dir>/<env>/medium_replay.npz``).
        action_noise: std of the Gaussian noise added to the actor's actions (medium, expert).
        ref_episodes: episodes per reference score.
        overwrite: replace an existing dataset (only once the new one is complete).
        progress: tqdm bars (only on a terminal).
        max_episode_steps: time limit of the collection env (default the env's 1000; tests use less).

    Raises:
        ValueError: bad env, level or sizes. PolicyError (a FileNotFoundError): a missing policy, replay
        buffer or source dataset. FileExistsError: the dataset exists and ``overwrite`` is False.
    """
    t0 = time.perf_counter()
    env_id = env_id_for(env)
    name = env_name_for(env)
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {list(LEVELS)}")
    if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if action_noise < 0:
        raise ValueError(f"action_noise must be >= 0, got {action_noise}")
    from diffuser.data.minari_io import _check_id, datasets_root

    dataset_id = dataset_id or default_dataset_id(name, level)
    _check_id(dataset_id)
    root = datasets_root()
    final_dir = root / dataset_id
    if final_dir.exists() and not overwrite:
        raise FileExistsError(
            f"a dataset {dataset_id!r} already exists at {final_dir}; pass --overwrite to replace it (or another "
            f"--dataset-id)")
    expert = _policy(policy_dir, name, "expert")  # the reference score needs it for every level
    show = None if progress else False
    noise: float | None = action_noise
    extra: dict[str, Any] = {}
    if level in ("medium", "expert"):
        if steps is None:
            raise ValueError(f"level {level!r} needs a number of steps")
        actor = expert if level == "expert" else _policy(policy_dir, name, "medium")
        episodes = rollout(actor, env_id, int(steps), seed, action_noise, show, max_episode_steps)
        algorithm = (f"SAC actor ({level}, {actor.card.train_steps} training steps, evaluated return "
                     f"{actor.card.eval_return:.1f}) + N(0, {action_noise}^2) action noise")
        extra["policy"] = actor.card.to_dict()
    elif level == "medium-replay":
        base = Path(policy_dir) if policy_dir is not None else DEFAULT_POLICY_DIR
        replay_path = Path(replay) if replay is not None else base / name / "medium_replay.npz"
        episodes = replay_episodes(replay_path, steps)
        medium = _policy(policy_dir, name, "medium")
        noise = None
        algorithm = (f"SAC replay buffer up to the medium checkpoint ({medium.card.train_steps} training steps, "
                     f"stable-baselines3 defaults)")
        extra["replay"] = str(replay_path)
    else:  # medium-expert
        sources = [_sibling_id(dataset_id, name, "medium"), _sibling_id(dataset_id, name, "expert")]
        missing = [s for s in sources if not (root / s / "data" / "metadata.json").is_file()]
        if missing:
            raise PolicyError(f"medium-expert concatenates {sources}; missing: {missing}. Collect them first with "
                              f"`diffuser collect locomotion --env {name} --level medium` (and --level expert)")
        episodes = _dataset_episodes(sources[0]) + _dataset_episodes(sources[1])
        noise = None
        algorithm = f"concatenation of {sources[0]} and {sources[1]}"
        extra["sources"] = sources
    t_sim = time.perf_counter()
    ref_min, ref_max = locomotion_reference_scores(name, expert, ref_episodes, show)
    t_ref = time.perf_counter()

    spec_env = _make_env(env_id, max_episode_steps)
    spec = spec_env.spec
    spec_env.close()
    total = int(sum(len(ep.rewards) for ep in episodes))
    returns = np.array([ep.rewards.sum() for ep in episodes])
    from diffuser.utils import git_commit

    commit = git_commit()
    description = (
        f"{env_id} '{level}' dataset generated locally by diffuser with the D4RL recipe: {algorithm}. "
        f"{total} steps in {len(episodes)} episodes (an episode ends at a termination or at the time limit of "
        f"{spec.max_episode_steps} steps; the last one is cut at the end of the run). Reference scores: uniform "
        f"random policy (min) and the deterministic expert actor (max), {ref_episodes} episodes each.")
    permalink = f"diffuser/collect/locomotion.py at git commit {commit}" if commit else None
    metadata = dict(algorithm_name=algorithm, code_permalink=permalink, ref_min_score=ref_min, ref_max_score=ref_max,
                    num_episodes_average_score=ref_episodes, description=description)
    _write(dataset_id, episodes, spec, metadata, final_dir, root, overwrite, show)
    t_end = time.perf_counter()
    return LocomotionReport(
        dataset_id=dataset_id, path=str(final_dir), env_id=env_id, level=level, steps=total,
        episodes=len(episodes), terminated_episodes=int(sum(bool(ep.terminations[-1]) for ep in episodes)),
        truncated_episodes=int(sum(bool(ep.truncations[-1]) for ep in episodes)),
        mean_return=float(returns.mean()), mean_length=total / len(episodes), seed=seed, action_noise=noise,
        ref_min_score=ref_min, ref_max_score=ref_max, ref_episodes=ref_episodes,
        seconds_simulate=t_sim - t0, seconds_reference=t_ref - t_sim, seconds_write=t_end - t_ref,
        seconds_total=t_end - t0, size_bytes=_dir_size(final_dir), extra=extra)


def collect_locomotion(env: str = "hopper", level: str = "medium", steps: int | None = 200_000, seed: int = 0,
                       dataset_id: str | None = None, **kwargs: Any) -> str:
    """Collect a locomotion dataset; returns its Minari id (see :func:`collect_locomotion_report`)."""
    return collect_locomotion_report(env, level, steps, seed, dataset_id, **kwargs).dataset_id

