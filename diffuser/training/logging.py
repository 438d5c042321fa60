"""Metric logging behind a two-method interface: ``log(step, metrics)`` and ``close()``.

Default sinks are plain files in the run directory that any tool can read (``metrics.csv`` for
spreadsheets/pandas, ``metrics.jsonl`` for scripts). TensorBoard is used when it is installed and
skipped, with one warning, when it is not; it is never imported at module level.

Resuming: pass ``resume_from=STEP`` and the file sinks keep the rows with ``step <= STEP`` and drop the
rest (those steps are about to be trained again), so a resumed run's logs have no duplicate steps.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from diffuser.utils import atomic_path

__all__ = [
    "CSVLogger",
    "JSONLinesLogger",
    "Logger",
    "MultiLogger",
    "NullLogger",
    "TensorBoardLogger",
    "make_logger",
]

LOGGER_KINDS = ("csv", "jsonl", "tensorboard")


def _scalar(value: Any) -> float | int | str | None:
    """Plain python value for a metric (tensors become floats, so no sink ever holds a tensor)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"metrics must be scalars, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, str)) or value is None:
        return value
    try:
        return float(value)  # numpy scalars and the like
    except (TypeError, ValueError) as err:
        raise TypeError(f"cannot log a metric of type {type(value).__name__}: {value!r}") from err


class Logger:
    """Interface: receives a dict of scalar metrics for an optimizer step. Subclasses override both."""

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NullLogger(Logger):
    """Discards everything (for tests, or when logging is switched off)."""

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        pass


class MultiLogger(Logger):
    """Forwards every call to several loggers."""

    def __init__(self, loggers: Iterable[Logger]) -> None:
        self.loggers = list(loggers)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(step, metrics)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


class CSVLogger(Logger):
    """One row per ``log`` call, one column per metric, ``step`` first.

    Metrics that appear later (``val_loss`` at the first validation) add a column: the file is then
    rewritten once with the wider header, earlier rows getting empty cells. New keys are rare, so the
    rewrite cost is negligible, and the file stays a plain rectangular CSV.
    """

    def __init__(self, path: str | os.PathLike, resume_from: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fields: list[str] = ["step"]
        rows: list[dict[str, str]] = []
        if resume_from is not None and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                self.fields = list(reader.fieldnames or ["step"])
                rows = [r for r in reader if _step_of(r.get("step")) <= resume_from]
        self._rewrite(rows)  # a fresh run starts an empty file; a resumed one drops the re-done steps
        self._handle = open(self.path, "a", newline="", encoding="utf-8")

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.fields, restval="")
                writer.writeheader()
                writer.writerows(rows)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        row = {"step": int(step), **{k: _scalar(v) for k, v in metrics.items()}}
        new = [k for k in row if k not in self.fields]
        if new:
            self._handle.close()
            with open(self.path, newline="", encoding="utf-8") as handle:
                old_rows = list(csv.DictReader(handle))
            self.fields += new
            self._rewrite(old_rows)
            self._handle = open(self.path, "a", newline="", encoding="utf-8")
        csv.DictWriter(self._handle, fieldnames=self.fields, restval="").writerow(row)
        self._handle.flush()  # a crashed run should still have its logs up to the crash

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()


class JSONLinesLogger(Logger):
    """One JSON object per line: ``{"step": 100, "loss": 0.12, ...}``. New keys need no special care."""

    def __init__(self, path: str | os.PathLike, resume_from: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if resume_from is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if isinstance(record, dict) and _step_of(record.get("step")) <= resume_from:
                    kept.append(line)
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self._handle = open(self.path, "a", encoding="utf-8")

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = {"step": int(step)}
        for key, value in metrics.items():
            value = _scalar(value)
            # Strict JSON has no NaN/inf; null keeps the line parseable by every JSON reader.
            record[key] = None if isinstance(value, float) and not math.isfinite(value) else value
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()


class TensorBoardLogger(Logger):
    """Scalars to TensorBoard event files under ``log_dir``. Needs the ``tensorboard`` package."""

    def __init__(self, log_dir: str | os.PathLike, resume_from: int | None = None) -> None:
        from diffuser.utils import require_package

        require_package("tensorboard", "logging")
        from torch.utils.tensorboard import SummaryWriter

        # purge_step makes TensorBoard hide events logged after the resume point by the crashed run.
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=resume_from)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for key, value in metrics.items():
            value = _scalar(value)
            if isinstance(value, (int, float)):  # strings and None have no place on a scalar plot
                self._writer.add_scalar(key, value, global_step=int(step))

    def close(self) -> None:
        self._writer.close()


def _step_of(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.inf  # unreadable rows are treated as "after the resume point" and dropped


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def make_logger(
    run_dir: str | os.PathLike,
    kinds: Iterable[str] = LOGGER_KINDS,
    resume_from: int | None = None,
) -> Logger:
    """The default logger for a run: ``metrics.csv``, ``metrics.jsonl`` and ``tensorboard/`` in ``run_dir``.

    ``"tensorboard"`` is used when the package is installed and skipped silently otherwise, so the
    default works everywhere (``pip install 'diffuser-planner[logging]'`` turns it on). ``kinds=()`` gives a NullLogger. ``resume_from``: see the module docstring.
    """
    run_dir = Path(run_dir)
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in LOGGER_KINDS]
    if unknown:
        raise ValueError(f"unknown logger kind(s) {unknown}; choose from {list(LOGGER_KINDS)}")
    loggers: list[Logger] = []
    for kind in dict.fromkeys(kinds):  # de-duplicated, order kept
        if kind == "csv":
            loggers.append(CSVLogger(run_dir / "metrics.csv", resume_from=resume_from))
        elif kind == "jsonl":
            loggers.append(JSONLinesLogger(run_dir / "metrics.jsonl", resume_from=resume_from))
        elif tensorboard_available():
            loggers.append(TensorBoardLogger(run_dir / "tensorboard", resume_from=resume_from))
    if not loggers:
        return NullLogger()
    return loggers[0] if len(loggers) == 1 else MultiLogger(loggers)
