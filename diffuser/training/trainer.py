"""The training loop: model-agnostic, reproducible, resumable.

Any ``nn.Module`` with ``loss(batch) -> (scalar loss, {name: float | Tensor})`` can be trained; batches
come from a torch DataLoader over a map-style dataset of dict items (nested dicts of tensors are fine).

Exact resumption (CPU; ``num_workers=0`` or a dataset whose ``__getitem__`` is not random). Three
things decide what a step computes, and the resume state captures each of them:

1. Weights and optimizer moments: model, EMA and optimizer state dicts.
2. Which items each micro-batch holds: the data order (``diffuser.training.data_order``) is one
   seeded stream of item indices, a pure function of the seed. The trainer counts the stream items it
   *consumed* (prefetched ones don't count) and a resumed sampler starts at that item without touching
   the skipped data, whatever the batch size or number of processes of the resumed run.
3. The random numbers ``model.loss`` draws (diffusion timesteps, noise): the global RNG states
   (python, numpy, torch CPU/CUDA) of every rank are saved with each resume state. Anything else that
   draws random numbers between steps (validation, ``export_fn``) runs inside a save/restore of those
   states, and the DataLoader gets its own generator so creating an iterator does not consume a global
   number.
With CUDA, identical weights additionally need ``deterministic=True`` (non-deterministic kernels).

Data-parallel training (``torchrun``, SLURM; see ``diffuser.training.distributed``): when a process group
is running, the trainer wraps the model in DDP and ``batch_size`` is *per process*: N processes with
batch b take the same global batches of N·b items as one process with batch N·b, and DDP averages their
gradients. Each rank draws its diffusion noise from ``seed + rank · 1_000_003``; weights, optimizer and
EMA stay identical on every rank; the logged loss is the mean over ranks; logs, checkpoints, validation
and the progress bar belong to rank 0. A resume state holds every rank's RNG state; resuming with another
number of processes continues the data order at the same item and re-seeds the noise per rank.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from diffuser.training import distributed
from diffuser.training.checkpoint import (
    capture_rng_state,
    load_resume,
    restore_rng_state,
    resume_position,
    save_export,
    save_resume,
)
from diffuser.training.data_order import ShardedBatchSampler
from diffuser.training.ema import EMA
from diffuser.training.logging import Logger, NullLogger, make_logger
from diffuser.training.trainer_config import TrainerConfig, learning_rate
from diffuser.utils import git_commit, progress, resolve_device, seed_everything

__all__ = ["NonFiniteLossError", "Trainer", "TrainerConfig"]

ExportFn = Callable[[nn.Module, int], "tuple[dict[str, torch.Tensor], dict[str, Any]]"]
_VAL_SEED_OFFSET = 1_000_003  # validation noise comes from its own seed, fixed across evaluations


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient norm became NaN/inf; training stopped before the optimizer step."""


class _LossForward(nn.Module):
    """Makes ``model.loss`` the ``forward`` that DDP wraps: DDP synchronizes gradients only for
    computations that go through its own ``forward``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> Any:
        return self.model.loss(batch)


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

    Seeds everything with ``config.seed`` on construction (``seed + rank * 1_000_003`` on rank ``rank``);
    seed before building the model as well (``diffuser.utils.seed_everything``) so that initial weights
    are reproducible too (under DDP, rank 0's initial weights are broadcast to every rank).

    With a process group running (``diffuser.training.distributed.init_distributed``), every rank builds
    its Trainer the same way and calls ``train()``/``save()``/``resume()`` together: they are collective.
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
        self.dist = distributed.current()
        self.device = distributed.rank_device(resolve_device(config.device), self.dist)
        seed_everything(distributed.rank_seed(config.seed, self.dist.rank), deterministic=config.deterministic)
        self.model = model.to(self.device).train()
        self._ddp: DistributedDataParallel | None = None
        if self.dist.enabled:
            # DDP broadcasts rank 0's weights and buffers on construction: the ranks start identical.
            self._ddp = DistributedDataParallel(
                _LossForward(self.model), device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.export_fn, self.logger = export_fn, logger
        self.run_dir = Path(run_dir)
        # Made after the broadcast, so the average starts from the same weights on every rank and stays
        # identical: each rank averages the same (synchronized) weights.
        self.ema = EMA(self.model, config.ema_decay, config.ema_start, config.ema_every)
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer_cls = torch.optim.AdamW if config.optimizer.lower() == "adamw" else torch.optim.Adam
        # The fused kernel applies the same Adam update in one pass over all parameters instead of a
        # dozen small ops per tensor: about 15% of a CPU train step at the paper's Maze2D size.
        self.optimizer = optimizer_cls(self._params, lr=config.lr, weight_decay=config.weight_decay,
                                       fused=self.device.type in ("cpu", "cuda"))
        self.step = 0  # optimizer steps taken
        self._items_consumed = 0  # data-order position: stream items taken by all ranks together
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
        """Write ``resume.pt`` and the export for the current step (each atomically). Rank 0 writes, but
        every rank must call it: the RNG states of all ranks are gathered into the resume state, and
        the ranks wait for rank 0 to finish writing."""
        rng = capture_rng_state()
        rng_per_rank = distributed.all_gather_objects(rng)
        try:
            if self.dist.is_main:
                self._write_checkpoint(rng, rng_per_rank)
        finally:
            distributed.barrier()
        self._last_saved_step = self.step

    def _write_checkpoint(self, rng: dict[str, Any], rng_per_rank: list[dict[str, Any]]) -> None:
        state = {
            "step": self.step,
            "items_consumed": self._items_consumed,
            "world_size": self.dist.world_size,
            "dataset_len": len(self.train_dataset),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,  # rank 0's, as a single-process run stores it
            "rng_per_rank": rng_per_rank,
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

    def resume(self, path: str | Path | None = None) -> int:
        """Restore model, EMA, optimizer, step, data position and RNG from ``path`` (a resume file or a
        run directory; default ``run_dir/resume.pt``); ``train()`` then continues to ``config.steps``.
        Returns the restored step. The optimizer takes ``lr``/``weight_decay`` from the current config.

        Build the Trainer with the same model architecture, dataset and config as the original run. The
        data order continues at the same stream item whatever the number of processes or batch size;
        with another number of processes the per-rank noise streams cannot continue and are re-seeded
        from ``(seed, step, rank)``. Changing the global batch (``batch_size`` x processes x
        ``grad_accumulation``), ``seed`` or the dataset size still works but the continuation then
        differs from an uninterrupted run (a warning says so).
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
        cfg = self.config
        self._items_consumed, changed = resume_position(
            state, batch_size=cfg.batch_size, grad_accumulation=cfg.grad_accumulation,
            world_size=self.dist.world_size, seed=cfg.seed, dataset_len=len(self.train_dataset))
        if changed and self.dist.is_main:
            warnings.warn(f"resuming {path} with a different {', '.join(changed)}: the run continues, "
                          "but not as the original would have", stacklevel=2)
        per_rank = state.get("rng_per_rank") or [state["rng"]]
        if len(per_rank) == self.dist.world_size:
            self._pending_rng = per_rank[self.dist.rank]  # applied when train() starts, right before the next step
        else:
            if self.dist.is_main:
                warnings.warn(f"resuming a {len(per_rank)}-process run with {self.dist.world_size} processes: "
                              f"the data order continues at item {self._items_consumed}, the diffusion noise is "
                              "re-seeded per rank", stacklevel=2)
            # Reproducible for a given (seed, step, rank), and unlike any stream of the original run.
            resumed_seed = (cfg.seed * 0x9E3779B97F4A7C15 + self.step) % 2**62
            seed_everything(distributed.rank_seed(resumed_seed, self.dist.rank))
            self._pending_rng = capture_rng_state()
        self._resumed_from = self._last_saved_step = self.step
        return self.step

    # ------------------------------------------------------------------------------------- the loop
    def _train_loader(self) -> Iterator[Any]:
        cfg = self.config
        sampler = ShardedBatchSampler(len(self.train_dataset), cfg.batch_size, cfg.seed, rank=self.dist.rank,
                                      world_size=self.dist.world_size, start=self._items_consumed)
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            # Own generator: worker seeds come from it, not from (and not advancing) the global RNG.
            generator=torch.Generator().manual_seed(distributed.rank_seed(cfg.seed, self.dist.rank)),
        )
        return iter(loader)

    def _loss(self, model: nn.Module, batch: Any, train: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
        # Under DDP the training loss goes through the DDP wrapper's forward, which syncs the gradients.
        out = self._ddp(batch) if train and self._ddp is not None else model.loss(batch)
        loss, metrics = (out, {}) if isinstance(out, torch.Tensor) else out
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError(f"{type(model).__name__}.loss must return (scalar tensor, dict), got {type(out)}")
        return loss, dict(metrics or {})

    def _train_step(self, batches: Iterator[Any]) -> tuple[float, dict[str, float], float]:
        cfg = self.config
        accumulation = cfg.grad_accumulation
        self.optimizer.zero_grad(set_to_none=True)
        loss_mean, metric_means = 0.0, {}
        first_bad: str | None = None
        for micro in range(accumulation):
            batch = _to_device(next(batches), self.device, non_blocking=self.device.type == "cuda")
            self._items_consumed += cfg.batch_size * self.dist.world_size
            # DDP: all-reduce the gradients once, on the last micro-batch, not after each one.
            skip_sync = self._ddp is not None and micro < accumulation - 1
            with self._ddp.no_sync() if skip_sync else contextlib.nullcontext():
                loss, metrics = self._loss(self.model, batch, train=True)
                # Divide so the accumulated gradient is the mean over micro-batches, as one big batch would give.
                (loss / accumulation).backward()
            value = float(loss.detach())  # syncs with the GPU once per micro-batch; needed for the check
            if not math.isfinite(value) and first_bad is None:
                first_bad = f", micro-batch {micro + 1}/{accumulation}" if accumulation > 1 else ""
            loss_mean += value / accumulation
            for key, metric in metrics.items():
                try:
                    metric = metric.detach() if isinstance(metric, torch.Tensor) else metric
                    metric_means[key] = metric_means.get(key, 0.0) + float(metric) / accumulation
                except (TypeError, ValueError, RuntimeError) as err:
                    raise TypeError(f"metric {key!r} from loss() is not a number: {metric!r}") from err
        if self.dist.enabled:  # log the mean over ranks, i.e. over the global batch
            names = sorted(metric_means)
            reduced = distributed.mean_over_ranks([loss_mean, *(metric_means[k] for k in names)])
            loss_mean, metric_means = reduced[0], dict(zip(names, reduced[1:]))
        # Checked after backward (and on the rank mean), so that every rank takes the same decision: a
        # rank stopping alone before the gradient all-reduce would leave the others waiting for it.
        if not math.isfinite(loss_mean):
            raise self._diverged(f"loss is {loss_mean} at step {self.step + 1}{first_bad or ''}")
        if cfg.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(self._params, cfg.grad_clip)
        else:  # still measured: the norm is the first thing to look at when training misbehaves
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self._params if p.grad is not None])
        grad_norm = float(grad_norm)
        if not math.isfinite(grad_norm):
            raise self._diverged(
                f"gradient norm is {grad_norm} at step {self.step + 1} (loss {loss_mean:.4g})"
            )
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(cfg, self.step)
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
        main = self.dist.is_main
        if main and self._resumed_from is None and self.step == 0 and self.resume_path.exists():
            warnings.warn(f"{self.run_dir} already holds a run; this fresh run overwrites it at its first "
                          "save (call trainer.resume() first to continue it instead)", stacklevel=2)
        if self._pending_rng is not None:
            restore_rng_state(self._pending_rng)
            self._pending_rng = None
        start_step, started = self.step, time.perf_counter()
        summary: dict[str, Any] = {"start_step": start_step, "loss": None, "val_loss": None}
        if self.step >= cfg.steps:
            return self._summary(summary, start_step, started)
        logger = self.logger if main else NullLogger()  # only rank 0 writes logs
        own_logger = logger is None
        if logger is None:
            keep_until = self.step if self._trained_before else self._resumed_from
            logger = make_logger(self.run_dir, resume_from=keep_until)
        self._trained_before = True
        batches = self._train_loader()
        bar = progress(total=cfg.steps, initial=self.step, desc="train", unit="step",
                       disable=None if cfg.progress and main else True)
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
                # The EMA is the same on every rank: rank 0 alone scores it.
                validating = main and self.val_dataset is not None and cfg.val_every > 0
                if validating and (self.step % cfg.val_every == 0 or last):
                    row.update(self.validate())
                    summary["val_loss"] = row.get("val_loss")
                if row:
                    logger.log(self.step, row)
                if (cfg.save_every and self.step % cfg.save_every == 0) or last:
                    self.save()
        finally:
            bar.close()
            if own_logger:
                logger.close()
        return self._summary(summary, start_step, started)

    def _summary(self, summary: dict[str, Any], start_step: int, started: float) -> dict[str, Any]:
        elapsed = time.perf_counter() - started
        done = self.step - start_step
        return {**summary, "step": self.step, "elapsed_s": elapsed,
                "steps_per_sec": done / elapsed if done and elapsed > 0 else 0.0,
                "run_dir": str(self.run_dir), "export_dir": str(self.export_dir),
                "resume_path": str(self.resume_path)}
