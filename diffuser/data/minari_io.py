"""Read local Minari datasets into :class:`~diffuser.data.episodes.Episode` lists.

Minari keeps datasets under ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``) with ids
``namespace/name-vN``; the version is required. An episode there has ``N`` actions and ``N + 1``
observations; the first ``N`` become ``Episode.observations`` and the last ``final_observation``.
Dict observations (PointMaze: observation, achieved_goal, desired_goal) keep ``"observation"`` as the
state and put the other keys in ``Episode.infos`` (first ``N`` entries). Minari's own per-step infos
go in as ``"info/<key>"`` when they are per-step arrays.

Nothing here downloads: this machine has no network, and a missing PointMaze or locomotion dataset can be
generated locally (the error says how).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from diffuser.data.episodes import Episode

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "CorruptDatasetError",
    "datasets_root",
    "dataset_path",
    "load_episodes",
    "dataset_info",
    "list_local_datasets",
    "normalized_score",
    "generate_hint",
]

_ID_RE = re.compile(r"^(?:(?P<namespace>[-_\w][-_\w/]*[-_\w])/)?(?P<name>[-_.\w]+)-v(?P<version>\d+)$")
_POINTMAZE_RE = re.compile(r"(?:pointmaze|maze2d).*?(open|umaze|medium|large)(-dense)?", re.IGNORECASE)
_LOCOMOTION_RE = re.compile(r"(hopper|walker2d|halfcheetah)[-/_](medium-replay|medium-expert|medium|expert)",
                            re.IGNORECASE)
_MAZE_NAME_RE = re.compile(r"^(open|umaze|medium|large)(-dense)?(?:-v\d+)?$", re.IGNORECASE)


class DatasetError(ValueError):
    """A dataset that cannot be used as asked (bad id, missing, corrupted, incompatible)."""


class DatasetNotFoundError(DatasetError):
    """No local dataset under that id."""


class CorruptDatasetError(DatasetError):
    """The dataset's files exist but cannot be read (truncated, corrupted, inconsistent)."""


def datasets_root() -> Path:
    """Where local Minari datasets live: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def dataset_path(dataset_id: str) -> Path:
    """Directory of a dataset id (``<root>/<namespace>/<name>-vN``); does not check it exists."""
    return datasets_root() / dataset_id


def _local_ids() -> list[str]:
    """Ids of every directory under the root that holds ``data/metadata.json`` (no reading)."""
    root = datasets_root()
    if not root.is_dir():
        return []
    ids = []
    for meta in root.rglob("data/metadata.json"):
        rel = meta.parent.parent.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue  # hidden: e.g. our staging directories of generations in progress
        ids.append(rel.as_posix())
    return sorted(ids)


def _locomotion_hint(dataset_id: str, m: re.Match) -> str:
    env, level = m.group(1).lower(), m.group(2).lower()
    from diffuser.collect.locomotion import default_dataset_id

    default = default_dataset_id(env, level)
    cmd = f"diffuser collect locomotion --env {env} --level {level}"
    if dataset_id == default:
        return f"Generate it with:\n    {cmd}"
    if _ID_RE.match(dataset_id) and dataset_id.startswith("diffuser/"):
        return f"Generate it with:\n    {cmd} --dataset-id {dataset_id}"
    return (f"{dataset_id} cannot be downloaded here. Generate a local {env} {level} dataset with the D4RL "
            f"recipe:\n    {cmd}\n(it is written as {default})")


def generate_hint(dataset_id: str) -> str:
    """The ``diffuser collect pointmaze|locomotion`` command that makes a local stand-in for ``dataset_id``,
    or ""."""
    loco = _LOCOMOTION_RE.search(dataset_id)
    if loco:
        return _locomotion_hint(dataset_id, loco)
    m = _POINTMAZE_RE.search(dataset_id)
    if not m:
        m = _MAZE_NAME_RE.match(dataset_id)  # a bare maze name such as "umaze-v2"
    if not m:
        return ""
    maze, dense = m.group(1).lower(), bool(m.group(2))
    from diffuser.collect.pointmaze import default_dataset_id

    default = default_dataset_id(maze, dense)
    cmd = f"diffuser collect pointmaze --maze {maze}{' --dense' if dense else ''}"
    if dataset_id.startswith("D4RL/"):
        return (
            f"{dataset_id} is the official remote dataset, which cannot be downloaded here. Generate a local "
            f"one with the same recipe:\n    {cmd}\n(it is written as {default})"
        )
    if not _ID_RE.match(dataset_id):
        return f"Generate a PointMaze dataset with:\n    {cmd}\n(it is written as {default})"
    if dataset_id != default:
        cmd += f" --dataset-id {dataset_id}"
    return f"Generate it with:\n    {cmd}"


def _not_found(dataset_id: str, why: str) -> DatasetNotFoundError:
    local = _local_ids()
    listing = "\n".join(f"    {i}" for i in local) if local else "    (none)"
    hint = generate_hint(dataset_id)
    return DatasetNotFoundError(
        f"{why}\nLocal Minari datasets under {datasets_root()}:\n{listing}" + (f"\n{hint}" if hint else "")
    )


def _check_id(dataset_id: str) -> None:
    if isinstance(dataset_id, str) and _ID_RE.match(dataset_id):
        return
    if not isinstance(dataset_id, str) or not re.search(r"-v\d+$", dataset_id):
        why = (f"{dataset_id!r} is not a versioned Minari dataset id; ids look like 'namespace/name-vN' "
               f"(the -vN version is required), e.g. 'diffuser/pointmaze/umaze-v2'.")
    else:
        why = (f"{dataset_id!r} is not a valid Minari dataset id: the namespace (optional) must be at least 2 "
               f"characters of letters, digits, '-', '_' and '/', followed by '/name-vN'.")
    raise _not_found(str(dataset_id), why)


def _read_metadata(dataset_id: str) -> dict[str, Any]:
    _check_id(dataset_id)
    data_dir = dataset_path(dataset_id) / "data"
    meta_file = data_dir / "metadata.json"
    if not data_dir.is_dir():
        raise _not_found(dataset_id, f"no local Minari dataset {dataset_id!r} (looked in {data_dir}).")
    if not meta_file.is_file():
        raise CorruptDatasetError(f"dataset {dataset_id!r} has no metadata.json in {data_dir}; it is incomplete")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptDatasetError(f"dataset {dataset_id!r}: {meta_file} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or "dataset_id" not in meta:
        raise CorruptDatasetError(f"dataset {dataset_id!r}: {meta_file} lacks the 'dataset_id' field")
    return meta


def _check_data_file(dataset_id: str, meta: dict[str, Any]) -> None:
    """Cheap integrity check of an HDF5 dataset: the file exists and its header and end are readable."""
    if meta.get("data_format", "hdf5") != "hdf5":
        return
    path = dataset_path(dataset_id) / "data" / "main_data.hdf5"
    if not path.is_file():
        raise CorruptDatasetError(f"dataset {dataset_id!r} has no data file {path}; it is incomplete")
    import h5py

    try:
        with h5py.File(path, "r") as f:
            n = len(f.keys())
    except OSError as err:  # h5py reports "truncated file" / "file signature not found" here
        raise CorruptDatasetError(f"dataset {dataset_id!r}: {path} is damaged or truncated ({err})") from None
    total = meta.get("total_episodes")
    if isinstance(total, int) and n != total:
        raise CorruptDatasetError(
            f"dataset {dataset_id!r}: {path} holds {n} episodes but its metadata says {total}; it is incomplete"
        )


def _open(dataset_id: str):
    """``minari.MinariDataset`` for a local id, with our errors instead of Minari's."""
    meta = _read_metadata(dataset_id)
    _check_data_file(dataset_id, meta)
    import minari

    try:
        return minari.MinariDataset(dataset_path(dataset_id) / "data")
    except Exception as err:  # minari raises ValueError/AssertionError/OSError for broken files
        raise CorruptDatasetError(
            f"dataset {dataset_id!r} (minari_version {meta.get('minari_version')}, format "
            f"{meta.get('data_format')}) cannot be opened: {type(err).__name__}: {err}"
        ) from err


def _leaves(value: Any, prefix: str) -> Iterable[tuple[str, np.ndarray]]:
    """Flatten nested dicts of arrays into ("a/b", array) pairs."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{prefix}/{k}" if prefix else str(k))
    elif value is not None:
        yield prefix, np.asarray(value)


def _to_episode(ep: Any, dataset_id: str) -> Episode:
    """Minari EpisodeData -> Episode (see the module docstring)."""
    n = len(ep.rewards)
    obs = ep.observations
    infos: dict[str, np.ndarray] = {}
    if isinstance(obs, dict):
        if "observation" in obs:
            states = np.asarray(obs["observation"])
            for key, arr in _leaves({k: v for k, v in obs.items() if k != "observation"}, ""):
                if arr.ndim >= 1 and arr.shape[0] == n + 1:
                    infos[key] = arr[:n]
        else:  # no designated state key: concatenate the Box parts in key order
            parts = [np.asarray(v).reshape(n + 1, -1) for _, v in sorted(_leaves(obs, ""))]
            states = np.concatenate(parts, axis=1)
    elif isinstance(obs, tuple):
        raise DatasetError(f"dataset {dataset_id!r} has Tuple observations, which are not supported")
    else:
        states = np.asarray(obs)
    if states.ndim == 1:
        states = states[:, None]
    if states.ndim != 2:
        raise DatasetError(
            f"dataset {dataset_id!r} has observations of shape {states.shape[1:]} per step; only flat vector "
            f"states are supported (images are not)"
        )
    if states.shape[0] != n + 1:
        raise CorruptDatasetError(
            f"dataset {dataset_id!r}, episode {ep.id}: {states.shape[0]} observations for {n} steps "
            f"(Minari stores N + 1)"
        )
    actions = np.asarray(ep.actions)
    if isinstance(ep.actions, dict) or actions.dtype == object:
        raise DatasetError(f"dataset {dataset_id!r} has non-vector actions, which are not supported")
    if actions.ndim == 1:
        actions = actions[:, None]
    for key, arr in _leaves(ep.infos or {}, ""):
        if arr.ndim >= 1 and arr.shape[0] in (n, n + 1) and arr.dtype != object:
            infos[f"info/{key}"] = arr[:n]
    # Goals and float infos in float32 like the states they are compared with.
    infos = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in infos.items()}
    try:
        return Episode(
            observations=states[:n],
            actions=actions,
            rewards=ep.rewards,
            terminations=ep.terminations,
            truncations=ep.truncations,
            final_observation=states[n],
            infos=infos,
        )
    except ValueError as err:
        raise DatasetError(f"dataset {dataset_id!r}, episode {ep.id}: {err}") from None


def load_episodes(dataset_id: str, max_episodes: int | None = None) -> list[Episode]:
    """Every episode (or the first ``max_episodes``) of a local Minari dataset, in stored order.

    Returns Episodes with observations (T, S), actions (T, A), final_observation (S,); for PointMaze
    ``infos`` holds ``desired_goal`` / ``achieved_goal`` (T, 2) and ``info/success`` (T,).

    Raises:
        DatasetNotFoundError: malformed/unversioned id or no such local dataset (the message lists the
            local datasets and, for PointMaze ids, the command that generates one).
        CorruptDatasetError: unreadable or truncated files.
        DatasetError: NaN/inf in the data or unsupported spaces.
    """
    if max_episodes is not None and max_episodes < 1:
        raise ValueError(f"max_episodes must be >= 1 or None, got {max_episodes}")
    ds = _open(dataset_id)
    total = ds.total_episodes
    count = total if max_episodes is None else min(total, max_episodes)
    episodes = []
    try:
        for ep in ds.iterate_episodes(range(count)):
            episodes.append(_to_episode(ep, dataset_id))
    except DatasetError:
        raise
    except Exception as err:  # h5py/arrow errors on truncated or damaged files
        raise CorruptDatasetError(
            f"dataset {dataset_id!r} is damaged: reading episode {len(episodes)} of {total} failed with "
            f"{type(err).__name__}: {err}. Delete it and generate/download it again."
        ) from err
    if not episodes:
        raise DatasetError(f"dataset {dataset_id!r} holds no episodes")
    return episodes


def _space_dim(space_json: Any, key: str | None = None) -> int | None:
    """Flat size of a serialized Box space (or of a Dict space's ``key`` part); None when unknown."""
    try:
        space = json.loads(space_json) if isinstance(space_json, str) else space_json
        if space.get("type") == "Dict":
            space = space["subspaces"][key or "observation"]
        return int(np.prod(space["shape"]))
    except (TypeError, KeyError, ValueError, AttributeError):
        return None


def _env_id(spec_json: Any) -> str | None:
    try:
        return json.loads(spec_json)["id"] if isinstance(spec_json, str) else None
    except (json.JSONDecodeError, KeyError, TypeError):
        return None


def dataset_info(dataset_id: str) -> dict[str, Any]:
    """Summary from a dataset's metadata (no episode is read).

    Keys: dataset_id, path, total_steps, total_episodes, ref_min_score, ref_max_score,
    num_episodes_average_score, env_id, eval_env_id, eval_max_episode_steps, observation_dim,
    action_dim, algorithm_name, code_permalink, description, minari_version, data_format.
    """
    meta = _read_metadata(dataset_id)
    _check_data_file(dataset_id, meta)
    eval_spec = meta.get("eval_env_spec")
    eval_steps = None
    if isinstance(eval_spec, str):
        try:
            eval_steps = json.loads(eval_spec).get("max_episode_steps")
        except json.JSONDecodeError:
            pass
    return {
        "dataset_id": dataset_id,
        "path": str(dataset_path(dataset_id)),
        "total_steps": meta.get("total_steps"),
        "total_episodes": meta.get("total_episodes"),
        "ref_min_score": meta.get("ref_min_score"),
        "ref_max_score": meta.get("ref_max_score"),
        "num_episodes_average_score": meta.get("num_episodes_average_score"),
        "env_id": _env_id(meta.get("env_spec")),
        "eval_env_id": _env_id(eval_spec),
        "eval_max_episode_steps": eval_steps,
        "observation_dim": _space_dim(meta.get("observation_space")),
        "action_dim": _space_dim(meta.get("action_space")),
        "algorithm_name": meta.get("algorithm_name"),
        "code_permalink": meta.get("code_permalink"),
        "description": meta.get("description"),
        "minari_version": meta.get("minari_version"),
        "data_format": meta.get("data_format"),
    }


def list_local_datasets() -> dict[str, dict[str, Any]]:
    """``{dataset_id: dataset_info(...)}`` for every local dataset; unreadable ones get ``{"error": ...}``."""
    out: dict[str, dict[str, Any]] = {}
    for dataset_id in _local_ids():
        try:
            out[dataset_id] = dataset_info(dataset_id)
        except DatasetError as err:
            out[dataset_id] = {"dataset_id": dataset_id, "error": str(err)}
    return out


def normalized_score(
    dataset: str | tuple[float, float] | dict[str, Any], returns: float | Sequence[float] | np.ndarray
) -> np.ndarray:
    """D4RL-style normalized score ``100 * (R - ref_min) / (ref_max - ref_min)``.

    Args:
        dataset: a local dataset id (its metadata's ref scores), a ``(ref_min, ref_max)`` pair, or a
            dict with ``ref_min_score`` / ``ref_max_score`` (e.g. :func:`dataset_info`'s).
        returns: undiscounted episode return(s).

    Returns:
        array shaped like ``returns`` (×100, unlike ``minari.get_normalized_score``'s fraction).
    """
    if isinstance(dataset, str):
        info = dataset_info(dataset)
        lo, hi = info["ref_min_score"], info["ref_max_score"]
        if lo is None or hi is None:
            raise DatasetError(f"dataset {dataset!r} has no reference scores in its metadata")
    elif isinstance(dataset, dict):
        lo, hi = dataset.get("ref_min_score"), dataset.get("ref_max_score")
        if lo is None or hi is None:
            raise DatasetError("no ref_min_score / ref_max_score given")
    else:
        lo, hi = dataset
    lo, hi = float(lo), float(hi)
    if hi == lo:
        raise DatasetError(f"reference scores are equal ({lo}); the normalized score is undefined")
    return 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)
