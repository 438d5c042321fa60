"""The training loop: model-agnostic, reproducible, resumable.

Any ``nn.Module`` with ``loss(batch) -> (scalar loss, {name: float | Tensor})`` can be trained; batches
come from a torch DataLoader over a map-style dataset of dict items (nested dicts of tensors are fine).

Exact resumption (CPU; ``num_workers=0`` or a dataset whose ``__getitem__`` is not random). Three
things decide what a step computes, and the resume state captures each of them:

1. Weights and optimizer moments: model, EMA and optimizer state dicts.
2. Which items each micro-batch holds: the sampler below draws epoch ``e``'s permutation from a
   generator seeded by ``(seed, e)``, so the data order is a pure function of the seed and the number
   of batches drawn so far. The trainer counts the batches it *consumed* (prefetched ones don't count)
   and a resumed sampler starts at that position without touching the skipped data.
3. The random numbers ``model.loss`` draws (diffusion timesteps, noise): the global RNG states
   (python, numpy, torch CPU/CUDA) are saved with each resume state. Anything else that draws random
   numbers between steps (validation, ``export_fn``) runs inside a save/restore of those states, and
   the DataLoader gets its own generator so creating an iterator does not consume a global number.
With CUDA, identical weights additionally need ``deterministic=True`` (non-deterministic kernels).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from diffuser.training.checkpoint import (
    capture_rng_state,
    load_resume,
    restore_rng_state,
    save_export,
    save_resume,
)
from diffuser.training.ema import EMA
from diffuser.training.logging import Logger, make_logger
from diffuser.utils import git_commit, progress, resolve_device, seed_everything

__all__ = ["NonFiniteLossError", "Trainer", "TrainerConfig"]

OPTIMIZERS = ("adam", "adamw")
ExportFn = Callable[[nn.Module, int], "tuple[dict[str, torch.Tensor], dict[str, Any]]"]
_VAL_SEED_OFFSET = 1_000_003  # validation noise comes from its own seed, fixed across evaluations


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient norm became NaN/inf; training stopped before the optimizer step."""


@dataclass
class TrainerConfig:
    """Training hyper-parameters. Defaults follow the original Diffuser except ``grad_accumulation``
    (it used 2) and ``grad_clip`` (it used none)."""

    steps: int = 10000  # total optimizer steps; a resumed run continues up to this count
    batch_size: int = 32  # items per micro-batch
    lr: float = 2e-4  # learning rate (constant)
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
    seed: int = 0  # seeds python/numpy/torch and the data order
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
        if not isinstance(self.optimizer, str) or self.optimizer.lower() not in OPTIMIZERS:
            raise ValueError(
                f"unknown TrainerConfig.optimizer {self.optimizer!r}; choose one of {list(OPTIMIZERS)}"
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _EpochBatchSampler(Sampler[list[int]]):
    """Endless batches of indices; epoch ``e`` is a permutation drawn from a generator seeded by
    ``(seed, e)``, and the incomplete last batch of each epoch is dropped (every step sees
    ``batch_size`` items). ``start`` skips that many batches without loading them (for resuming)."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int = 0) -> None:
        self.num_items, self.batch_size, self.seed, self.start = num_items, batch_size, seed, start
        self.per_epoch = num_items // batch_size

    def __iter__(self) -> Iterator[list[int]]:
        epoch, offset = divmod(self.start, self.per_epoch)
        generator = torch.Generator()
        while True:
            # Spread (seed, epoch) over 63 bits so neighbouring seeds do not share epochs.
            generator.manual_seed((self.seed * 0x9E3779B97F4A7C15 + epoch) % 2**63)
            order = torch.randperm(self.num_items, generator=generator)
            for b in range(offset, self.per_epoch):
                yield order[b * self.batch_size : (b + 1) * self.batch_size].tolist()
            epoch, offset = epoch + 1, 0


def _to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor in a (nested) dict/list/tuple batch to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return {k: _to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_to_device(v, device, non_blocking) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device, non_blocking) for v in obj)
    return obj


class Trainer:
    """Trains ``model`` on ``train_dataset`` according to ``config``, writing into ``run_dir``:
    ``metrics.csv`` / ``metrics.jsonl`` (+ ``tensorboard/``), ``resume.pt`` and the export ``checkpoint/``.

    ``export_fn(ema_model, step) -> (tensors, config)`` decides what an export holds (e.g. EMA weights
    under ``model.*`` plus ``normalizer.*`` statistics, and the configs to rebuild the model); by default
    the EMA state dict under ``model.*``. ``step``, ``git_commit`` and ``trainer`` (this config) are
    added to the export config unless ``export_fn`` set them. ``logger`` replaces the default file
    loggers (the trainer then does not close it).

    Seeds everything with ``config.seed`` on construction; seed before building the model as well
    (``diffuser.utils.seed_everything``) so that initial weights are reproducible too.
    """

    RESUME_NAME = "resume.pt"
    EXPORT_NAME = "checkpoint"

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Dataset,
        config: TrainerConfig,
        run_dir: str | Path,
        val_dataset: Dataset | None = None,
        export_fn: ExportFn | None = None,
        logger: Logger | None = None,
    ) -> None:
        if not callable(getattr(model, "loss", None)):
            raise TypeError(f"{type(model).__name__} has no loss(batch) method; the Trainer needs one "
                            "returning (scalar loss, metrics dict)")
        config.validate()  # again: the dataclass may have been edited after construction
        if len(train_dataset) < config.batch_size:
            raise ValueError(f"train_dataset has {len(train_dataset)} items, fewer than batch_size="
                             f"{config.batch_size}; lower the batch size or use more data")
        self.config = config
        self.device = resolve_device(config.device)
        seed_everything(config.seed, deterministic=config.deterministic)
        self.model = model.to(self.device).train()
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.export_fn, self.logger = export_fn, logger
        self.run_dir = Path(run_dir)
        self.ema = EMA(self.model, config.ema_decay, config.ema_start, config.ema_every)
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer_cls = torch.optim.AdamW if config.optimizer.lower() == "adamw" else torch.optim.Adam
        # The fused kernel applies the same Adam update in one pass over all parameters instead of a
        # dozen small ops per tensor: about 15% of a CPU train step at the paper's Maze2D size.
        self.optimizer = optimizer_cls(self._params, lr=config.lr, weight_decay=config.weight_decay,
                                       fused=self.device.type in ("cpu", "cuda"))
        self.step = 0  # optimizer steps taken
        self._batches_consumed = 0  # micro-batches taken from the data stream (the data-order position)
        self._pending_rng: dict[str, Any] | None = None
        self._resumed_from: int | None = None
        self._last_saved_step: int | None = None
        self._val_cache: list[Any] | None = None
        self._trained_before = False  # a second train() call must append to the logs, not restart them
        self._git_commit = git_commit()

    @property
    def resume_path(self) -> Path:
        return self.run_dir / self.RESUME_NAME

    @property
    def export_dir(self) -> Path:
        return self.run_dir / self.EXPORT_NAME

    # ------------------------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Write ``resume.pt`` and the export for the current step (each atomically)."""
        rng = capture_rng_state()
        state = {
            "step": self.step,
            "batches_consumed": self._batches_consumed,
            "dataset_len": len(self.train_dataset),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "config": asdict(self.config),
            "git_commit": self._git_commit,
        }
        save_resume(self.resume_path, state)
        try:  # export_fn may draw random numbers (a demo plan, say); keep them out of the training stream
            if self.export_fn is None:
                tensors = {f"model.{k}": v for k, v in self.ema.ema_model.state_dict().items()}
                export_config: dict[str, Any] = {}
            else:
                tensors, export_config = self.export_fn(self.ema.ema_model, self.step)
                export_config = dict(export_config)
            export_config.setdefault("step", self.step)
            export_config.setdefault("git_commit", self._git_commit)
            export_config.setdefault("trainer", asdict(self.config))
            save_export(self.export_dir, tensors, export_config)
        finally:
            restore_rng_state(rng)
        self._last_saved_step = self.step

    def resume(self, path: str | Path | None = None) -> int:
        """Restore model, EMA, optimizer, step, data position and RNG from ``path`` (a resume file or a
        run directory; default ``run_dir/resume.pt``); ``train()`` then continues to ``config.steps``.
        Returns the restored step. The optimizer takes ``lr``/``weight_decay`` from the current config.

        Build the Trainer with the same model architecture, dataset and config as the original run;
        changing ``batch_size``, ``grad_accumulation``, ``seed`` or the dataset size still works but
        the continuation then differs from an uninterrupted run (a warning says so).
        """
        path = Path(path) if path is not None else self.resume_path
        if path.is_dir():  # a run directory: its resume state
            path = path / self.RESUME_NAME
        state = load_resume(path)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # the saved ones came back; the current config decides
            group["lr"], group["weight_decay"] = self.config.lr, self.config.weight_decay
        self.step = int(state["step"])
        self._batches_consumed = int(state["batches_consumed"])
        # These decide the data order and random draws; others (lr, steps, ...) may change freely.
        changed = [name for name in ("batch_size", "grad_accumulation", "seed")
                   if state["config"].get(name) != getattr(self.config, name)]
        if state.get("dataset_len") != len(self.train_dataset):
            changed.append(f"dataset size {state.get('dataset_len')} -> {len(self.train_dataset)}")
        if changed:
            warnings.warn(f"resuming {path} with a different {', '.join(changed)}: the run continues, "
                          "but not as the original would have", stacklevel=2)
        self._pending_rng = state["rng"]  # applied when train() starts, right before the next step
        self._resumed_from = self._last_saved_step = self.step
        return self.step

    # ------------------------------------------------------------------------------------- the loop
    def _train_loader(self) -> Iterator[Any]:
        cfg = self.config
        sampler = _EpochBatchSampler(
            len(self.train_dataset), cfg.batch_size, cfg.seed, start=self._batches_consumed
        )
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            # Own generator: worker seeds come from it, not from (and not advancing) the global RNG.
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        return iter(loader)

    def _loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        out = model.loss(batch)
        loss, metrics = (out, {}) if isinstance(out, torch.Tensor) else out
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError(f"{type(model).__name__}.loss must return (scalar tensor, dict), got {type(out)}")
        return loss, dict(metrics or {})

    def _train_step(self, batches: Iterator[Any]) -> tuple[float, dict[str, float], float]:
        cfg = self.config
        accumulation = cfg.grad_accumulation
        self.optimizer.zero_grad(set_to_none=True)
        loss_mean, metric_means = 0.0, {}
        for micro in range(accumulation):
            batch = _to_device(next(batches), self.device, non_blocking=self.device.type == "cuda")
            self._batches_consumed += 1
            loss, metrics = self._loss(self.model, batch)
            value = float(loss.detach())  # syncs with the GPU once per micro-batch; needed for the check
            if not math.isfinite(value):
                where = f", micro-batch {micro + 1}/{accumulation}" if accumulation > 1 else ""
                raise self._diverged(f"loss is {value} at step {self.step + 1}{where}")
            # Divide so the accumulated gradient is the mean over micro-batches, as one big batch would give.
            (loss / accumulation).backward()
            loss_mean += value / accumulation
            for key, metric in metrics.items():
                try:
                    metric = metric.detach() if isinstance(metric, torch.Tensor) else metric
                    metric_means[key] = metric_means.get(key, 0.0) + float(metric) / accumulation
                except (TypeError, ValueError, RuntimeError) as err:
                    raise TypeError(f"metric {key!r} from loss() is not a number: {metric!r}") from err
        if cfg.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(self._params, cfg.grad_clip)
        else:  # still measured: the norm is the first thing to look at when training misbehaves
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self._params if p.grad is not None])
        grad_norm = float(grad_norm)
        if not math.isfinite(grad_norm):
            raise self._diverged(
                f"gradient norm is {grad_norm} at step {self.step + 1} (loss {loss_mean:.4g})"
            )
        self.optimizer.step()
        return loss_mean, metric_means, grad_norm

    def _diverged(self, what: str) -> NonFiniteLossError:
        saved = (f"the last checkpoint (step {self._last_saved_step}) is untouched"
                 if self._last_saved_step is not None else "no checkpoint was written yet")
        return NonFiniteLossError(
            f"{what}; training stopped before the optimizer step and {saved}. Try a lower learning rate "
            f"(lr={self.config.lr}), gradient clipping (grad_clip={self.config.grad_clip}), and check the "
            "data and normalizer for NaN/inf"
        )

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss of the EMA model over ``val_batches`` fixed batches of ``val_dataset``.

        The batches and the loss's random draws (timesteps, noise) are the same at every call, so values
        are comparable across steps; the training RNG stream is left exactly as it was.
        """
        if self.val_dataset is None:
            return {}
        cfg = self.config
        rng = capture_rng_state()
        try:
            seed_everything(cfg.seed + _VAL_SEED_OFFSET)
            if self._val_cache is None:  # a fixed random subset: the first items alone may be one episode
                loader = DataLoader(self.val_dataset, batch_size=cfg.batch_size, shuffle=True,
                                    generator=torch.Generator().manual_seed(cfg.seed + _VAL_SEED_OFFSET))
                self._val_cache = [b for b, _ in zip(loader, range(cfg.val_batches))]
            totals: dict[str, float] = {}
            for batch in self._val_cache:
                loss, metrics = self._loss(self.ema.ema_model, _to_device(batch, self.device))
                for key, value in {"loss": loss, **metrics}.items():
                    totals[key] = totals.get(key, 0.0) + float(value)
        finally:
            restore_rng_state(rng)
        count = max(len(self._val_cache), 1)
        return {f"val_{key}": value / count for key, value in totals.items()}

    def train(self) -> dict[str, Any]:
        """Train until ``config.steps`` optimizer steps; returns a summary dict.

        Raises NonFiniteLossError if the loss or gradient norm becomes NaN/inf (no checkpoint is written
        after that point). A Ctrl-C is not caught: continue from the last periodic save with ``resume()``.
        """
        cfg = self.config
        cfg.validate()
        if self._resumed_from is None and self.step == 0 and self.resume_path.exists():
            warnings.warn(f"{self.run_dir} already holds a run; this fresh run overwrites it at its first "
                          "save (call trainer.resume() first to continue it instead)", stacklevel=2)
        if self._pending_rng is not None:
            restore_rng_state(self._pending_rng)
            self._pending_rng = None
        start_step, started = self.step, time.perf_counter()
        summary: dict[str, Any] = {"start_step": start_step, "loss": None, "val_loss": None}
        if self.step >= cfg.steps:
            return self._summary(summary, start_step, started)
        logger = self.logger
        if logger is None:
            keep_until = self.step if self._trained_before else self._resumed_from
            logger = make_logger(self.run_dir, resume_from=keep_until)
        self._trained_before = True
        batches = self._train_loader()
        bar = progress(total=cfg.steps, initial=self.step, desc="train", unit="step",
                       disable=None if cfg.progress else True)
        sums: dict[str, float] = {}
        n_steps, step_time = 0, 0.0
        try:
            while self.step < cfg.steps:
                tick = time.perf_counter()
                loss, metrics, grad_norm = self._train_step(batches)
                self.step += 1
                self.ema.update(self.step)
                step_time += time.perf_counter() - tick
                n_steps += 1
                for key, value in {"loss": loss, **metrics, "grad_norm": grad_norm}.items():
                    sums[key] = sums.get(key, 0.0) + value
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
                last = self.step == cfg.steps
                row: dict[str, float] = {}
                if self.step % cfg.log_every == 0 or last:
                    row = {key: total / n_steps for key, total in sums.items()}
                    row["lr"] = self.optimizer.param_groups[0]["lr"]
                    row["steps_per_sec"] = n_steps / max(step_time, 1e-9)
                    summary["loss"] = row["loss"]
                    sums, n_steps, step_time = {}, 0, 0.0
                validating = self.val_dataset is not None and cfg.val_every > 0
                if validating and (self.step % cfg.val_every == 0 or last):
                    row.update(self.validate())
                    summary["val_loss"] = row.get("val_loss")
                if row:
                    logger.log(self.step, row)
                if (cfg.save_every and self.step % cfg.save_every == 0) or last:
                    self.save()
        finally:
            bar.close()
            if self.logger is None:
                logger.close()
        return self._summary(summary, start_step, started)

    def _summary(self, summary: dict[str, Any], start_step: int, started: float) -> dict[str, Any]:
        elapsed = time.perf_counter() - started
        done = self.step - start_step
        return {**summary, "step": self.step, "elapsed_s": elapsed,
                "steps_per_sec": done / elapsed if done and elapsed > 0 else 0.0,
                "run_dir": str(self.run_dir), "export_dir": str(self.export_dir),
                "resume_path": str(self.resume_path)}
