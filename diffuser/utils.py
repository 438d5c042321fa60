"""Small helpers shared across the package: seeding, devices, atomic files, optional imports, progress.

Nothing here imports an optional dependency at module level, so every part of the package can use it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "git_commit",
    "progress",
    "require_package",
    "resolve_device",
    "seed_everything",
]

PACKAGE_NAME = "diffuser-planner"  # the distribution name users pip-install (differs from the import name)


# --------------------------------------------------------------------------------------------- seeding
def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and every CUDA device).

    Call it before building the model so that weight initialisation is covered too.

    ``deterministic=True`` additionally asks torch for deterministic kernels
    (``torch.use_deterministic_algorithms``, cuDNN autotuning off, a fixed cuBLAS workspace). The cost:
    on GPU some ops become noticeably slower (deterministic scatter/index_add, no cuDNN autotuning) and
    ops with no deterministic implementation raise a RuntimeError instead of running. CPU training is
    already deterministic for a fixed seed and thread count, so the switch matters mostly on CUDA.
    ``deterministic=False`` leaves whatever setting is in force untouched rather than switching it off.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    random.seed(seed)
    # numpy's legacy seeding only takes 32-bit seeds; fold larger/negative ones instead of failing.
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices (lazily when CUDA is not initialised yet)
    if deterministic:
        # cuBLAS needs this before its first use to be reproducible; setdefault keeps a user's choice.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


# --------------------------------------------------------------------------------------------- devices
def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a ``torch.device``, checking it exists.

    ``"auto"`` picks CUDA when available, else CPU. Asking for CUDA on a machine without it raises a
    RuntimeError here instead of an obscure error deep inside the first forward pass.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise TypeError(f"device must be a string such as 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    key = name.strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "cuda" or key.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {name!r} was requested but CUDA is not available "
                f"(torch {torch.__version__}, built with CUDA: {torch.version.cuda or 'no'}); "
                "use device='cpu' or 'auto'"
            )
        if key == "cuda":
            return torch.device("cuda")
        index_text = key.split(":", 1)[1]
        if not index_text.isdigit():
            raise ValueError(f"bad CUDA device {name!r}: expected 'cuda:N' with N an integer")
        index, count = int(index_text), torch.cuda.device_count()
        if index >= count:
            raise RuntimeError(f"device {name!r} requested but only {count} CUDA device(s) are visible")
        return torch.device("cuda", index)
    raise ValueError(f"unknown device {name!r}; expected one of 'auto', 'cpu', 'cuda', 'cuda:N'")


# ---------------------------------------------------------------------------------------- atomic files
_UMASK: int | None = None


def _default_file_mode() -> int:
    # mkstemp creates files 0600; give the final file the mode a plain open() would have given it.
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable. Not possible on every platform/filesystem (e.g. Windows): best effort.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    Write the whole file to the yielded path (with any library: torch.save, safetensors, open()). On
    success the temp file is fsynced and ``os.replace``d onto ``path``, so readers see either the old file
    or the complete new one, never a half-written one. On any exception (KeyboardInterrupt included) the
    temp file is removed and ``path`` is left as it was. Parent directories are created if needed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same directory as the target: os.replace is only atomic within one filesystem.
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file {tmp} for {target}")
        os.chmod(tmp, _default_file_mode())
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# ------------------------------------------------------------------------------------ optional imports
def require_package(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming the extra that provides it.

    Use inside the function that needs an optional dependency, never at module level, so the rest of
    the package keeps working without it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"this feature needs the optional package {module!r}, which is not installed "
            f"({err}); install it with: pip install '{PACKAGE_NAME}[{extra}]'"
        ) from err


# ------------------------------------------------------------------------------------------ provenance
def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):  # git missing, or hung on a slow filesystem
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit() -> str | None:
    """Short commit hash of the checkout holding this package, ``"-dirty"`` appended when it has
    uncommitted changes to tracked files; None when the package is not in a git checkout.

    Checks that the package's own files are tracked, so an installed copy that merely sits inside some
    unrelated repository (a venv inside a project) does not report that project's commit.
    """
    package_dir = Path(__file__).resolve().parent
    if _git(["ls-files", "--error-unmatch", "__init__.py"], package_dir) is None:
        return None
    commit = _git(["rev-parse", "--short", "HEAD"], package_dir)
    if not commit:
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], package_dir)
    return f"{commit}-dirty" if status else commit


# -------------------------------------------------------------------------------------------- progress
def _progress_enabled(disable: bool | None) -> bool:
    env = os.environ.get("DIFFUSER_PROGRESS", "").strip()
    if env == "0":
        return False  # the global off switch wins over everything
    if disable is not None:
        return not disable
    if env == "1":
        return True
    # Progress bars in log files (CI, nohup, SLURM) are noise: only draw on an interactive terminal.
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def progress(
    iterable: Iterable[Any] | None = None,
    total: int | None = None,
    desc: str | None = None,
    disable: bool | None = None,
    **kwargs: Any,
):
    """A tqdm progress bar that behaves in logs and scripts.

    ``disable=None`` (default) draws only when stderr is a terminal, or when ``DIFFUSER_PROGRESS=1``.
    ``DIFFUSER_PROGRESS=0`` silences every bar, even those created with ``disable=False``.
    Extra keyword arguments go to ``tqdm`` (e.g. ``initial``, ``unit``, ``leave``).
    """
    from tqdm import tqdm  # not tqdm.auto: its notebook widget needs ipywidgets, an extra dependency

    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, total=total, desc=desc, disable=not _progress_enabled(disable), **kwargs)
