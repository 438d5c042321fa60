"""Read D4RL-format HDF5 files into :class:`~diffuser.data.episodes.Episode` lists (no d4rl package).

D4RL stores one flat stream: ``observations`` (N, S), ``actions`` (N, A), ``rewards`` (N,),
``terminals`` (N,), ``timeouts`` (N,), optionally ``next_observations`` (N, S) and an ``infos/`` group
(Maze2D: ``infos/goal``, ``infos/qpos``, ``infos/qvel``). Episodes end where ``terminals | timeouts``;
in maze2d files the timeouts mark the end of each goal-reaching segment. Maze2D goals there are raw
(row, col)-style maze coordinates, not PointMaze's centred (x, y): they are passed through as
``infos["goal"]`` unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffuser.data.episodes import Episode
from diffuser.data.minari_io import CorruptDatasetError, DatasetError, DatasetNotFoundError
from diffuser.envs.registry import D4RL_REF_SCORES, d4rl_ref_scores

__all__ = ["load_d4rl_hdf5", "d4rl_ref_scores", "guess_d4rl_env_name", "D4RL_REF_SCORES"]

_REQUIRED = ("observations", "actions", "rewards", "terminals")


def guess_d4rl_env_name(path: str | Path) -> str | None:
    """The env name a D4RL file stem implies (``maze2d-umaze-sparse-v1.hdf5`` -> ``maze2d-umaze-v1``),
    or None when the stem names no env with reference scores."""
    stem = Path(path).stem
    try:
        d4rl_ref_scores(stem)
    except KeyError:
        return None
    return stem.replace("_", "-").replace("-sparse", "")


def _read_flat(path: Path) -> dict[str, np.ndarray]:
    import h5py

    if not path.is_file():
        raise DatasetNotFoundError(f"D4RL file {str(path)!r} does not exist")
    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in _REQUIRED if k not in f]
            if missing:
                raise DatasetError(
                    f"{path} is not in D4RL's layout: missing {missing}; it holds {sorted(f.keys())} "
                    f"(expected observations, actions, rewards, terminals, timeouts)"
                )
            for key in (*_REQUIRED, "timeouts", "next_observations"):
                if key in f:
                    out[key] = f[key][()]
            if "infos" in f and isinstance(f["infos"], h5py.Group):
                for key, ds in f["infos"].items():
                    if isinstance(ds, h5py.Dataset):
                        out[f"infos/{key}"] = ds[()]
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        raise CorruptDatasetError(f"cannot read D4RL file {path}: it is truncated or not HDF5 ({err})") from err
    return out


def load_d4rl_hdf5(path: str | Path, max_episodes: int | None = None) -> list[Episode]:
    """Episodes of a D4RL HDF5 file, split where ``terminals | timeouts``.

    Returns Episodes with observations (T, S), actions (T, A); ``terminations`` from ``terminals`` and
    ``truncations`` from ``timeouts``; ``final_observation`` from ``next_observations`` when the file
    has them; per-step ``infos/*`` arrays (e.g. Maze2D ``goal``, ``qpos``, ``qvel``) as ``infos``.
    A trailing run of steps with no end flag becomes a last episode marked truncated (the data stop).

    Raises:
        DatasetNotFoundError: no such file. CorruptDatasetError: not HDF5 / truncated.
        DatasetError: not D4RL's layout, arrays of different lengths, NaN or inf.
    """
    path = Path(path)
    data = _read_flat(path)
    n = len(data["observations"])
    lengths = {k: len(v) for k, v in data.items() if np.ndim(v) >= 1}
    bad = {k: m for k, m in lengths.items() if m != n}
    if bad:
        raise CorruptDatasetError(f"{path}: arrays disagree in length: observations has {n} rows, but {bad}")
    if n == 0:
        raise DatasetError(f"{path} holds no steps")
    obs = data["observations"].reshape(n, -1)
    actions = data["actions"].reshape(n, -1)
    terminals = data["terminals"].astype(bool).reshape(n)
    timeouts = data.get("timeouts", np.zeros(n, dtype=bool)).astype(bool).reshape(n)
    ends = np.flatnonzero(terminals | timeouts) + 1
    if len(ends) == 0 or ends[-1] != n:
        ends = np.append(ends, n)
    infos = {k.split("/", 1)[1]: v.astype(np.float32) if v.dtype.kind == "f" else v
             for k, v in data.items() if k.startswith("infos/")}
    nxt = data.get("next_observations")

    episodes: list[Episode] = []
    start = 0
    for end in ends:
        trunc = timeouts[start:end].copy()
        if not (terminals[end - 1] or timeouts[end - 1]):
            trunc[-1] = True  # the file stops mid-episode
        try:
            episodes.append(Episode(
                observations=obs[start:end],
                actions=actions[start:end],
                rewards=data["rewards"][start:end].reshape(-1),
                terminations=terminals[start:end],
                truncations=trunc,
                final_observation=None if nxt is None else nxt[end - 1].reshape(-1),
                infos={k: v[start:end] for k, v in infos.items()},
            ))
        except ValueError as err:
            raise DatasetError(f"{path}, episode {len(episodes)} (steps {start}..{end - 1}): {err}") from None
        start = int(end)
        if max_episodes is not None and len(episodes) >= max_episodes:
            break
    return episodes
