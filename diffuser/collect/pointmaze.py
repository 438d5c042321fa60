"""Generate PointMaze datasets with the recipe of D4RL/pointmaze-v2, written as Minari datasets.

The recipe (shared/REFERENCE.md §3):

1. ``PointMaze_<Maze>[Dense]-v3`` with ``continuing_task=True, reset_target=True`` (a new goal is drawn
   whenever the ball gets within 0.45 of the current one); first reset with ``seed``.
2. Behaviour: :class:`~diffuser.envs.waypoint.WaypointController` (DFS grid path, PD gains 10/-1) with
   ``N(0, 0.5^2)`` action noise, clipped to [-1, 1]; actions recorded as float32.
3. An episode is cut (``truncations[-1] = True``) at every success; the next one starts from the same
   state, so its first observation still carries the previous goal (as Minari's DataCollector records).
4. Every ``reset_interval`` (200k) steps a reset with ``seed + k`` (k = 1, 2, ...) cuts the stream.
5. Reference scores on the evaluation env (one fixed goal cell, ``reset_target=False``, 300/600/800
   steps): a uniform random policy (ref_min) and the noiseless controller (ref_max), ``ref_episodes``
   episodes each.

Speed (1M U-Maze steps in about a minute here): MuJoCo is stepped directly with exactly the env's
computation (:func:`diffuser.envs.stepping.pointmaze_step_fn`; ``fast=False`` calls ``env.step`` and gives identical data), the
controller works on Python floats, data go into preallocated arrays, and the episodes are written in one
go with :func:`minari.create_dataset_from_buffers` (no DataCollector, so no jax).

Atomicity: the dataset is written under a hidden staging directory in the datasets root and renamed
onto its final id only when complete; an interrupted or failed run leaves nothing under the final id.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from diffuser.envs.maze import MazeError, MazeMap
from diffuser.envs.registry import (
    eval_goal_cell,
    make_pointmaze_env,
    make_pointmaze_eval_env,
    pointmaze_episode_steps,
)
from diffuser.envs.stepping import pointmaze_step_fn
from diffuser.envs.waypoint import WaypointController

__all__ = ["collect_pointmaze", "collect_pointmaze_report", "CollectReport", "default_dataset_id",
           "reference_scores", "DEFAULT_NAMESPACE"]

# Local datasets go under our own namespace, never "D4RL/": they are made here with the published
# recipe, not downloaded, and must not be mistaken for (or shadow) the official remote datasets. The
# rest of the id mirrors the official one (D4RL/pointmaze/umaze-v2 -> diffuser/pointmaze/umaze-v2).
DEFAULT_NAMESPACE = "diffuser/pointmaze"
ALGORITHM_NAME = "{planner} waypoint PD controller (gains 10/-1) + N(0, {noise}^2) action noise"


def default_dataset_id(maze: str = "umaze", dense: bool = False, custom: bool = False) -> str:
    """``diffuser/pointmaze/<maze>[-dense]-v2``; custom maps: ``diffuser/pointmaze/custom-<name>[-dense]-v0``."""
    name = re.sub(r"[^-\w]+", "-", maze.lower()).strip("-") or "maze"
    suffix = "-dense" if dense else ""
    if custom:
        return f"{DEFAULT_NAMESPACE}/custom-{name}{suffix}-v0"
    return f"{DEFAULT_NAMESPACE}/{name}{suffix}-v2"


@dataclass
class CollectReport:
    """What a generation produced and how long each part took (seconds)."""

    dataset_id: str
    path: str
    maze: str
    dense: bool
    steps: int
    seed: int
    planner: str
    episodes: int
    mean_length: float
    successes: int
    ref_min_score: float
    ref_max_score: float
    ref_episodes: int
    seconds_simulate: float
    seconds_reference: float
    seconds_write: float
    seconds_total: float
    code_permalink: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _code_permalink() -> str | None:
    """This module at the current git commit (``+ uncommitted changes`` when the tree differs), or None."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "diffuser/collect",
                                "diffuser/envs"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        return None
    link = f"diffuser/collect/pointmaze.py at git commit {commit}"
    return link + (" + uncommitted changes" if dirty else "")


def _seed_all(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent streams for action noise + waypoint jitter, the expert's jitter, the random policy."""
    a, b, c = np.random.SeedSequence(seed).spawn(3)
    return np.random.default_rng(a), np.random.default_rng(b), np.random.default_rng(c)


def reference_scores(
    maze: MazeMap, dense: bool, seed: int, episodes: int = 100, planner: str = "dfs",
    goal_cell: tuple[int, int] | None = None, max_episode_steps: int | None = None, fast: bool = True,
) -> tuple[float, float, Any]:
    """(ref_min_score, ref_max_score, eval env spec): mean returns of a uniform random policy and of the
    noiseless controller over ``episodes`` evaluation episodes each (first reset seeded with ``seed``,
    the later ones continuing the env's RNG, as Minari's ``get_average_reference_score`` does)."""
    if episodes < 1:
        raise ValueError(f"ref_episodes must be >= 1, got {episodes}")
    _, expert_rng, random_rng = _seed_all(seed)
    env = make_pointmaze_eval_env(maze, dense, goal_cell=goal_cell, max_episode_steps=max_episode_steps)
    horizon = int(env.spec.max_episode_steps)
    u = env.unwrapped
    step = pointmaze_step_fn(u, fast)
    expert = WaypointController(maze, planner=planner, action_noise=0.0, rng=expert_rng)

    def random_policy(*_state: float) -> np.ndarray:
        return random_rng.uniform(-1.0, 1.0, size=2)

    def run(policy) -> float:
        total = 0.0
        for ep in range(episodes):
            obs, _ = u.reset(seed=seed if ep == 0 else None)
            expert.reset()
            x, y, vx, vy = obs["observation"].tolist()
            gx, gy = obs["desired_goal"].tolist()
            for _ in range(horizon):
                action = np.asarray(policy(x, y, vx, vy, gx, gy), dtype=np.float32)
                x, y, vx, vy, gx, gy, reward, _ = step(action)
                total += reward
        return total / episodes

    ref_min = run(random_policy)
    ref_max = run(expert.act)
    spec = env.spec
    env.close()
    return ref_min, ref_max, spec


@contextlib.contextmanager
def _minari_root(path: Path) -> Iterator[None]:
    """Point Minari's datasets root (``MINARI_DATASETS_PATH``) at ``path`` for the block."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _simulate(env, ctl: WaypointController, steps: int, seed: int, reset_interval: int, progress: bool,
              fast: bool = True):
    """Run the continuing task for ``steps`` steps; returns per-step arrays and the reset bookkeeping.

    Row t of O/AG/DG is the observation in which action t was taken; its desired goal is the one the
    env showed (after a success that is still the old goal, as in the published data).
    """
    from tqdm import tqdm

    u = env.unwrapped
    O = np.empty((steps, 4))  # observation before each action
    DG = np.empty((steps, 2))
    A = np.empty((steps, 2), dtype=np.float32)
    R = np.empty(steps)
    S0 = np.empty(steps, dtype=bool)  # info["success"] of the state before the action
    S1 = np.empty(steps, dtype=bool)  # info["success"] after it
    resets: dict[int, int] = {0: seed}  # step index -> seed of the reset that starts there
    finals: dict[int, tuple] = {}  # step index of a reset / the end -> (x, y, vx, vy, gx, gy) before it

    step = pointmaze_step_fn(u, fast)
    act = ctl.act

    def do_reset(reset_seed):
        obs, info = u.reset(seed=reset_seed)
        ctl.reset()
        return (*obs["observation"].tolist(), *obs["desired_goal"].tolist()), bool(info["success"])

    (x, y, vx, vy, gx, gy), success = do_reset(seed)
    bar = tqdm(total=steps, unit="step", desc="simulate", disable=None if progress else True, mininterval=0.5,
               smoothing=0.05)
    try:
        for t in range(steps):
            if t and t % reset_interval == 0:
                finals[t] = (x, y, vx, vy, gx, gy)
                resets[t] = seed + len(resets)
                (x, y, vx, vy, gx, gy), success = do_reset(resets[t])
            O[t] = (x, y, vx, vy)
            DG[t] = (gx, gy)
            S0[t] = success
            A[t] = act(x, y, vx, vy, gx, gy)
            x, y, vx, vy, gx, gy, R[t], success = step(A[t])
            S1[t] = success
            if t % 1000 == 999:
                bar.update(1000)
        bar.update(steps - bar.n)
    finally:
        bar.close()
    finals[steps] = (x, y, vx, vy, gx, gy)
    return O, DG, A, R, S0, S1, resets, finals


def _episode_buffers(O, DG, A, R, S0, S1, resets, finals):
    """Cut the stream at successes and resets into Minari EpisodeBuffers (N actions, N + 1 observations)."""
    from minari.data_collector import EpisodeBuffer

    steps = len(A)
    bounds = sorted((set((np.flatnonzero(S1) + 1).tolist()) | set(resets) | {steps}) - {0})
    buffers, start = [], 0
    for k, end in enumerate(bounds):
        n = end - start
        if end in finals:  # cut by a reset or the end of the run: the last observation was kept aside
            last = np.asarray(finals[end])
            obs = np.concatenate([O[start:end], last[None, :4]])
            goals = np.concatenate([DG[start:end], last[None, 4:]])
        else:  # cut at a success: the next episode starts from this very observation (old goal and all)
            obs, goals = O[start:end + 1], DG[start:end + 1]
        truncations = np.zeros(n, dtype=bool)
        truncations[-1] = True  # a success cut, a reset cut or the end of the run; never a termination
        buffers.append(EpisodeBuffer(
            id=k,
            seed=resets.get(start),
            observations={"achieved_goal": obs[:, :2].copy(), "desired_goal": goals, "observation": obs},
            actions=A[start:end],
            rewards=R[start:end],
            terminations=np.zeros(n, dtype=bool),
            truncations=truncations,
            infos={"success": np.concatenate([S0[start:end], S1[end - 1:end]])},
        ))
        start = end
    return buffers


class _ProgressList(list):
    """A list whose iteration (Minari's writer walks the episodes once) drives a tqdm bar."""

    def __init__(self, items, progress: bool):
        super().__init__(items)
        self._progress = progress

    def __iter__(self):
        from tqdm import tqdm

        return iter(tqdm(list.__iter__(self), total=len(self), unit="episode", desc="write",
                         disable=None if self._progress else True, mininterval=0.5))


def _write_atomically(dataset_id: str, buffers, env, eval_spec, metadata: dict, staging: Path, final_dir: Path):
    """Write with :func:`minari.create_dataset_from_buffers` under ``staging`` (a hidden directory of the
    same datasets root), then rename the finished dataset onto ``final_dir``."""
    import gymnasium_robotics
    import minari
    import mujoco

    with _minari_root(staging), warnings.catch_warnings():
        # author/email are deliberately unset: a local generation has no dataset maintainer.
        warnings.filterwarnings("ignore", message=r"`author", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"`code_permalink` is set to None", category=UserWarning)
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id,
            buffer=buffers,
            env=env,
            eval_env=eval_spec,
            requirements=[f"gymnasium-robotics=={gymnasium_robotics.__version__}", f"mujoco=={mujoco.__version__}"],
            **metadata,
        )
    namespace = dataset_id.rsplit("/", 1)[0] if "/" in dataset_id else None
    if namespace is not None:
        from minari.namespace import create_namespace, list_local_namespaces

        if namespace not in list_local_namespaces():
            with contextlib.suppress(ValueError):  # created meanwhile by another run
                create_namespace(namespace, description="Datasets generated locally by diffuser.")
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    if final_dir.exists():
        raise FileExistsError(f"dataset {dataset_id!r} appeared at {final_dir} while generating; not overwritten")
    os.rename(staging / dataset_id, final_dir)  # atomic on one filesystem: the id appears complete or not at all


def _description(maze: MazeMap, dense: bool, steps: int, seed: int, planner: str, reset_interval: int,
                 ref_episodes: int, goal_cell, noise: float) -> str:
    reward = "dense (exp(-distance))" if dense else "sparse (1 within 0.45 of the goal)"
    return (
        f"PointMaze {maze.name} dataset generated locally by diffuser with the recipe of D4RL/pointmaze-v2: "
        f"{steps} steps of a continuing task (a new goal is drawn at every success; each success ends an "
        f"episode and the next starts from the same state), a waypoint PD controller over a "
        f"{'depth-first-search' if planner == 'dfs' else 'shortest'} grid path (gains 10/-1, waypoint "
        f"jitter U[0,1)^2*0.2) with N(0, {noise}^2) action noise clipped to [-1, 1], seed {seed}, reset with "
        f"seed+k every {reset_interval} steps. Reward: {reward}. Reference scores: uniform random policy "
        f"(min) and the noiseless controller (max), {ref_episodes} episodes each on the evaluation env "
        f"(fixed goal cell {tuple(goal_cell)}, reset_target=False).\nMaze:\n{maze.to_text()}"
    )


def collect_pointmaze_report(
    maze: str = "umaze",
    dense: bool = False,
    map_file: str | Path | None = None,
    steps: int = 1_000_000,
    seed: int = 123,
    dataset_id: str | None = None,
    planner: str = "dfs",
    progress: bool = True,
    *,
    ref_episodes: int = 100,
    fast: bool = True,
    reset_interval: int = 200_000,
    action_noise: float = 0.5,
    eval_goal: tuple[int, int] | None = None,
    eval_episode_steps: int | None = None,
) -> CollectReport:
    """Generate a PointMaze dataset (see the module docstring) and return a :class:`CollectReport`.

    Args:
        maze: preset ("open", "umaze", "medium", "large"); ignored when ``map_file`` is given.
        dense: record the dense reward (the trajectories are the same for a seed).
        map_file: a custom maze (text rows of ``#``/``.`` or gymnasium's JSON list format).
        steps: number of environment steps (1M in the published datasets).
        seed: seed of the env, the action noise and the waypoint jitter; the same seed gives the same
            dataset.
        dataset_id: Minari id; default :func:`default_dataset_id`. Must not exist yet.
        planner: "dfs" (published) or "shortest".
        progress: show a tqdm bar (only on a terminal).
        ref_episodes: evaluation episodes per reference score (100 published; fewer for quick tests).
        reset_interval: steps between reseeded resets (200k).
        action_noise: std of the behaviour's Gaussian action noise (0.5).
        eval_goal: goal cell of the evaluation env; default the published one (custom maps: see
            :func:`diffuser.envs.registry.eval_goal_cell`).
        eval_episode_steps: evaluation episode length; default 300/600/800 by maze.
        fast: step MuJoCo directly (identical data, about 3x faster); False steps ``env.step``.

    Raises:
        ValueError (MazeError): a bad map (no free cell, not enclosed, disconnected goal/reset cells).
        FileExistsError: ``dataset_id`` already exists locally.
    """
    t_start = time.perf_counter()
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    steps, seed = int(steps), int(seed)
    if reset_interval < 1:
        raise ValueError(f"reset_interval must be >= 1, got {reset_interval}")
    if ref_episodes < 1:
        raise ValueError(f"ref_episodes must be >= 1, got {ref_episodes}")
    if planner not in ("dfs", "shortest"):
        raise ValueError(f"unknown planner {planner!r}; use 'dfs' (published) or 'shortest'")
    custom = map_file is not None
    maze_map = MazeMap.from_file(map_file) if custom else MazeMap.preset(maze)
    if not maze_map.is_enclosed():
        raise MazeError(f"maze {maze_map.name!r} must be surrounded by walls: the ball would leave the grid")
    if len(maze_map.free_cells()) < 2:
        raise MazeError(f"maze {maze_map.name!r} needs at least two free cells (a goal and a start)")
    maze_map.require_connected()  # any free cell may become a goal; every one must be reachable
    goal_cell = tuple(eval_goal) if eval_goal is not None else eval_goal_cell(maze_map)

    dataset_id = dataset_id or default_dataset_id(maze_map.name, dense, custom)
    from diffuser.data.minari_io import _check_id, datasets_root

    _check_id(dataset_id)
    root = datasets_root()
    final_dir = root / dataset_id
    if final_dir.exists():
        raise FileExistsError(
            f"a dataset {dataset_id!r} already exists at {final_dir}; pass another --dataset-id, or delete it "
            f"(`minari delete {dataset_id}`, or remove that directory) to generate it again"
        )

    noise_rng, _, _ = _seed_all(seed)
    env = make_pointmaze_env(maze_map, dense, continuing_task=True, reset_target=True, max_episode_steps=steps)
    staging = root / f".staging-{uuid.uuid4().hex[:12]}"
    try:
        ctl = WaypointController(maze_map, planner=planner, action_noise=action_noise, rng=noise_rng)
        arrays = _simulate(env, ctl, steps, seed, reset_interval, progress, fast)
        t_sim = time.perf_counter()

        ref_min, ref_max, eval_spec = reference_scores(
            maze_map, dense, seed, ref_episodes, planner, goal_cell=goal_cell,
            max_episode_steps=eval_episode_steps or pointmaze_episode_steps(maze_map), fast=fast,
        )
        t_ref = time.perf_counter()

        buffers = _episode_buffers(*arrays)
        lengths = np.array([len(b) for b in buffers])
        permalink = _code_permalink()
        metadata = dict(
            algorithm_name=ALGORITHM_NAME.format(planner=planner.upper(), noise=action_noise),
            code_permalink=permalink,
            ref_min_score=ref_min,
            ref_max_score=ref_max,
            num_episodes_average_score=ref_episodes,
            description=_description(maze_map, dense, steps, seed, planner, reset_interval, ref_episodes,
                                     goal_cell, action_noise),
        )
        _write_atomically(dataset_id, _ProgressList(buffers, progress), env, eval_spec, metadata, staging, final_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        env.close()
    t_end = time.perf_counter()

    return CollectReport(
        dataset_id=dataset_id, path=str(final_dir), maze=maze_map.name, dense=dense, steps=steps, seed=seed,
        planner=planner, episodes=len(buffers), mean_length=float(lengths.mean()),
        successes=int(arrays[5].sum()), ref_min_score=ref_min, ref_max_score=ref_max, ref_episodes=ref_episodes,
        seconds_simulate=t_sim - t_start, seconds_reference=t_ref - t_sim, seconds_write=t_end - t_ref,
        seconds_total=t_end - t_start, code_permalink=permalink,
        extra={"eval_goal_cell": list(goal_cell), "eval_episode_steps": int(eval_spec.max_episode_steps),
               "reset_interval": reset_interval, "action_noise": action_noise},
    )


def collect_pointmaze(
    maze: str = "umaze",
    dense: bool = False,
    map_file: str | Path | None = None,
    steps: int = 1_000_000,
    seed: int = 123,
    dataset_id: str | None = None,
    planner: str = "dfs",
    progress: bool = True,
    **kwargs: Any,
) -> str:
    """Generate a PointMaze dataset with the D4RL/pointmaze-v2 recipe; returns its Minari id.

    See :func:`collect_pointmaze_report` for the arguments (keyword-only extras: ref_episodes,
    reset_interval, action_noise, eval_goal, eval_episode_steps).
    """
    return collect_pointmaze_report(maze, dense, map_file, steps, seed, dataset_id, planner, progress,
                                    **kwargs).dataset_id
