"""The Trainer's hyper-parameters, checked on construction so a bad value fails before any work."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["LR_SCHEDULES", "OPTIMIZERS", "TrainerConfig", "learning_rate"]

OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainerConfig:
    """Training hyper-parameters. Defaults follow the original Diffuser except ``grad_accumulation``
    (it used 2) and ``grad_clip`` (it used none)."""

    steps: int = 10000  # total optimizer steps; a resumed run continues up to this count
    batch_size: int = 32  # items per micro-batch *per process* (N processes: global batch N * batch_size)
    lr: float = 2e-4  # learning rate (the peak one under a schedule)
    lr_schedule: str = "constant"  # "constant", or "cosine": from lr down to 0 at `steps`
    optimizer: str = "adam"  # "adam" or "adamw"
    weight_decay: float = 0.0  # L2 penalty for adam, decoupled decay for adamw
    grad_clip: float | None = 1.0  # max global gradient norm; None or 0 turns clipping off
    grad_accumulation: int = 1  # micro-batches per optimizer step (effective batch = batch_size * this)
    ema_decay: float = 0.995  # EMA weight of the old average at each EMA update
    ema_start: int = 2000  # before this step the EMA copies the weights instead of averaging
    ema_every: int = 10  # average every this many optimizer steps
    val_every: int = 1000  # validation loss every this many steps (0 = never; needs a val_dataset)
    val_batches: int = 10  # fixed random batches of the val_dataset scored at each validation
    log_every: int = 100  # log means over this many steps
    save_every: int = 5000  # resume state + export every this many steps (0 = only at the end)
    num_workers: int = 0  # DataLoader worker processes (0 = load in the main process)
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    seed: int = 0  # seeds python/numpy/torch and the data order (rank r's noise: seed + r * 1_000_003)
    deterministic: bool = False  # deterministic torch kernels (slower on GPU; see seed_everything)
    progress: bool = True  # tqdm bar (shown only on a terminal; DIFFUSER_PROGRESS=0/1 overrides)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"TrainerConfig.{name} must be {rule}, got {getattr(self, name)!r}")

        for name in ("steps", "batch_size", "grad_accumulation", "ema_every", "val_batches", "log_every"):
            need(_is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "an integer >= 1")
        for name in ("ema_start", "val_every", "save_every", "num_workers"):
            need(_is_int(getattr(self, name)) and getattr(self, name) >= 0, name, "an integer >= 0")
        need(_is_int(self.seed), "seed", "an integer")
        need(_is_number(self.lr) and self.lr > 0, "lr", "a number > 0")
        need(_is_number(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(_is_number(self.ema_decay) and 0 <= self.ema_decay <= 1, "ema_decay", "in [0, 1]")
        need(self.grad_clip is None or (_is_number(self.grad_clip) and self.grad_clip >= 0),
             "grad_clip", "None or a number >= 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown TrainerConfig.lr_schedule {self.lr_schedule!r}; choose one of {list(LR_SCHEDULES)}")
        if not isinstance(self.optimizer, str) or self.optimizer.lower() not in OPTIMIZERS:
            raise ValueError(
                f"unknown TrainerConfig.optimizer {self.optimizer!r}; choose one of {list(OPTIMIZERS)}"
            )


def learning_rate(config: TrainerConfig, step: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based). A function of the step alone, so a resumed
    run continues the schedule where it stopped. Why decay: with a constant rate the last weights (and a
    short EMA of them) carry the noise of the last few hundred batches; cosine decay ends on a settled model."""
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, config.steps) / config.steps))
    return config.lr


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
