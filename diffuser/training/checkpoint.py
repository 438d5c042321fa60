"""The two kinds of checkpoint, both written atomically.

* **Export** (for planning and sharing): a directory with ``config.json`` (plain JSON: the configs
  needed to rebuild the model, normalizer settings, dataset id, step, git commit) and
  ``model.safetensors`` (a flat dict of tensors, e.g. EMA weights under ``model.*`` and normalizer
  statistics under ``normalizer.*``). No pickle anywhere, so loading an untrusted export cannot run code.
* **Resume state** (for continuing a run): one ``torch.save`` file holding model, EMA and optimizer
  state dicts, the step and the RNG states, loaded back with ``weights_only=True`` (again no arbitrary
  code): everything stored in it is tensors, numbers, strings, lists, tuples and dicts.

Every file is written to a temporary file in the same directory and ``os.replace``d into place, so a
crash or Ctrl-C mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import uuid
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffuser.utils import atomic_path

__all__ = [
    "CONFIG_NAME",
    "EXPORT_FORMAT_VERSION",
    "RESUME_FORMAT_VERSION",
    "WEIGHTS_NAME",
    "CheckpointError",
    "CheckpointNotFoundError",
    "capture_rng_state",
    "load_export",
    "load_resume",
    "restore_rng_state",
    "resume_position",
    "save_export",
    "save_resume",
]

EXPORT_FORMAT_VERSION = 1  # bump when the export layout changes incompatibly; loaders check it
RESUME_FORMAT_VERSION = 1
SUPPORTED_EXPORT_VERSIONS = (1,)
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# Keys save_export adds to config.json; load_export strips them so a round trip returns the caller's dict.
_RESERVED_KEYS = ("format_version", "export_id")
_TRAIN_HINT = "train one with `diffuser train` (it exports to RUN_DIR/checkpoint)"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated, or of a format this version cannot read."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint directory or one of its files does not exist."""


# ---------------------------------------------------------------------------------------------- export
def _write_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    # Its own function so tests can simulate a crash in the middle of writing the weights.
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)


def _prepare_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and no two entries sharing storage (safetensors refuses shared storage, which
    tied weights or state-dict views produce)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"export tensor names must be strings, got {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"export entry {name!r} is a {type(tensor).__name__}, not a torch.Tensor")
        tensor = tensor.detach().cpu()
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen or not tensor.is_contiguous():
            tensor = tensor.contiguous().clone()
            ptr = tensor.untyped_storage().data_ptr()
        if tensor.numel() > 0:
            seen.add(ptr)
        out[name] = tensor
    return out


def save_export(
    directory: str | os.PathLike, tensors: dict[str, torch.Tensor], config: dict[str, Any]
) -> Path:
    """Write ``tensors`` to ``directory/model.safetensors`` and ``config`` to ``directory/config.json``.

    ``config`` must be JSON-serialisable (tuples come back as lists; NaN/inf are refused) and may not
    use the reserved keys ``format_version`` / ``export_id``, which are added here. Both files are fully
    written to temporary files before either is moved into place; an ``export_id`` stored in both lets
    :func:`load_export` detect the (tiny) window where only one of the two was replaced.
    Returns the directory path.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"cannot export to {directory}: it exists and is not a directory")
    if not isinstance(config, dict):
        raise TypeError(f"export config must be a dict, got {type(config).__name__}")
    clash = [k for k in _RESERVED_KEYS if k in config]
    if clash:
        raise ValueError(f"export config may not use the reserved key(s) {clash}; save_export sets them")
    export_id = uuid.uuid4().hex
    full_config = {"format_version": EXPORT_FORMAT_VERSION, "export_id": export_id, **config}
    try:
        config_text = json.dumps(full_config, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as err:
        raise ValueError(f"export config is not JSON-serialisable: {err}") from err
    prepared = _prepare_tensors(tensors)
    metadata = {"format_version": str(EXPORT_FORMAT_VERSION), "export_id": export_id}
    directory.mkdir(parents=True, exist_ok=True)
    # Nested: both files are complete on disk before either replace, so a failure while writing leaves
    # the old export untouched. Only a kill between the two os.replace calls (config first, then
    # weights) can mix saves, and load_export's export_id check catches exactly that.
    with atomic_path(directory / WEIGHTS_NAME) as weights_tmp:
        with atomic_path(directory / CONFIG_NAME) as config_tmp:
            _write_safetensors(prepared, weights_tmp, metadata)
            config_tmp.write_text(config_text, encoding="utf-8")
    return directory


def _missing(path: Path, what: str, hint: str = _TRAIN_HINT) -> CheckpointNotFoundError:
    return CheckpointNotFoundError(f"no checkpoint at {path} ({what}); {hint}, or check the path")


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); the file is corrupt or truncated") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} should hold a JSON object, found {type(config).__name__}")
    version = config.get("format_version")
    if version is None:
        raise CheckpointError(f"{path} has no 'format_version': it is not a diffuser export")
    if version not in SUPPORTED_EXPORT_VERSIONS:
        raise CheckpointError(
            f"{path} has export format_version {version!r}, but this version of diffuser reads "
            f"{list(SUPPORTED_EXPORT_VERSIONS)}; upgrade diffuser (or re-export the checkpoint)"
        )
    return config


def load_export(
    directory: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an export written by :func:`save_export`: ``(tensors, config)``.

    ``config`` is the dict that was passed to ``save_export`` (the bookkeeping keys removed).
    Raises CheckpointNotFoundError for a missing directory or file and CheckpointError (a ValueError)
    naming the file for corrupt/truncated files, an unknown format version, or mismatched files.
    """
    directory = Path(directory)
    if not directory.exists():
        raise _missing(directory, "the directory does not exist")
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is a file; an export is a directory holding {CONFIG_NAME} "
                              f"and {WEIGHTS_NAME}")
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise _missing(directory, f"{path.name} is missing")
    config = _read_config(config_path)

    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights_path), framework="pt", device=str(device)) as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(
            f"{weights_path} could not be read ({err}); the file is corrupt or truncated"
        ) from err
    if metadata.get("export_id") != config.get("export_id"):
        raise CheckpointError(
            f"{weights_path} and {config_path} come from different saves (a save was interrupted "
            "between writing the two); re-export, or use an older copy of the checkpoint"
        )
    for key in _RESERVED_KEYS:
        config.pop(key, None)
    return tensors, config


# ------------------------------------------------------------------------------------------------- RNG
def capture_rng_state() -> dict[str, Any]:
    """Snapshot python ``random``, numpy's global RNG, torch CPU and (initialised) CUDA RNGs.

    Everything is converted to tensors/ints/floats/strings so the result can be stored in a resume
    file and read back with ``torch.load(weights_only=True)``.
    """
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    # Only read CUDA states if CUDA is already in use: merely asking would initialise a CUDA context.
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),  # 625 uint32 words
            "gauss": py_gauss,
        },
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["internal"].tolist()), py["gauss"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            available = torch.cuda.device_count() if torch.cuda.is_available() else 0
            warnings.warn(
                f"resume state holds CUDA RNG states for {len(cuda)} device(s) but {available} are "
                "available; CUDA random numbers will not continue exactly",
                stacklevel=2,
            )


# ---------------------------------------------------------------------------------------------- resume
def save_resume(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically ``torch.save`` a resume state (a dict of state dicts, numbers, RNG states).

    Keep to types ``weights_only`` loading accepts: tensors, python scalars, strings, None, and
    lists/tuples/dicts of those (state dicts of modules and torch optimizers qualify).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format_version": RESUME_FORMAT_VERSION, "state": state}, tmp)
    return path


def load_resume(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a resume state written by :func:`save_resume` with ``weights_only=True`` (no pickle code).

    Tensors land on ``map_location`` (CPU by default; ``load_state_dict`` moves them to the model's device).
    """
    path = Path(path)
    if not path.is_file():
        raise _missing(path, "no resume state", "a training run writes RUN_DIR/resume.pt at every save")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"{path} could not be read as a resume state ({err}); the file is corrupt or truncated, "
            "or holds objects other than tensors/numbers/strings"
        ) from err
    if not isinstance(payload, dict) or "state" not in payload:
        raise CheckpointError(f"{path} is not a diffuser resume state")
    version = payload.get("format_version")
    if version != RESUME_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has resume format_version {version!r}; this version of diffuser reads "
            f"{RESUME_FORMAT_VERSION}"
        )
    return payload["state"]


def resume_position(state: dict[str, Any], *, batch_size: int, grad_accumulation: int, world_size: int,
                    seed: int, dataset_len: int) -> tuple[int, list[str]]:
    """Where a resumed run's data order continues (stream items consumed), and what differs from the
    saved run among the things that decide the data order and the random draws (others, such as ``lr``
    or ``steps``, may change freely): empty when the continuation matches an uninterrupted run."""
    saved = state["config"]
    changed = []
    if "items_consumed" in state:
        items = int(state["items_consumed"])
    else:  # written before the data order was counted in items (and dropped each epoch's ragged end)
        items = int(state["batches_consumed"]) * int(saved["batch_size"])
        changed.append("data-order format (older resume state)")
    saved_world = int(state.get("world_size", 1))
    saved_global = saved.get("batch_size", 0) * saved_world * saved.get("grad_accumulation", 1)
    global_batch = batch_size * world_size * grad_accumulation
    if saved_global != global_batch:
        changed.append(f"global batch {saved_global} -> {global_batch}")
    if saved.get("seed") != seed:
        changed.append("seed")
    if state.get("dataset_len") != dataset_len:
        changed.append(f"dataset size {state.get('dataset_len')} -> {dataset_len}")
    return items, changed
