"""From a config to a trained, exported diffusion planner: data → normalizer → windows → model → trainer."""

from __future__ import annotations

import json
import time

import numpy as np
from pathlib import Path
from typing import Any

from diffuser.config import WINDOW_KINDS, DataConfig, TrainRunConfig, ValueRunConfig, to_container
from diffuser.data.episodes import episode_stats, split_episodes
from diffuser.data.normalizers import TrajectoryNormalizer
from diffuser.data.sources import load_source
from diffuser.data.windows import GoalDataset, SequenceDataset, ValueDataset
from diffuser.diffusion.model import DiffusionConfig
from diffuser.models.temporal_unet import UNetConfig
from diffuser.models.value_net import ValueConfig
from diffuser.pretrained import build_diffusion, build_value, export_state, export_value_state, load_model
from diffuser.training import distributed
from diffuser.training.trainer import Trainer, TrainerConfig
from diffuser.utils import git_commit, seed_everything


def make_windows(episodes, data: DataConfig, normalizer: TrajectoryNormalizer):
    if data.window not in WINDOW_KINDS:
        raise ValueError(f"unknown data.window {data.window!r}; valid: {', '.join(WINDOW_KINDS)}")
    if data.window == "value":
        return ValueDataset(episodes, data.horizon, normalizer, padding=data.padding, discount=data.discount,
                            termination_penalty=data.termination_penalty, rest_dims=data.rest_dims,
                            stride=data.stride, bootstrap_truncated=data.bootstrap_truncated)
    cls = GoalDataset if data.window == "goal" else SequenceDataset
    return cls(episodes, data.horizon, normalizer, padding=data.padding, rest_dims=data.rest_dims,
               stride=data.stride)


def return_stats(windows: ValueDataset) -> dict[str, float]:
    """Statistics of the windows' return targets: the standardisation of a return condition, and the
    range a planner may ask for (``max``: the best window's return; ``q90``: its 90th percentile)."""
    v = windows.window_values().astype(np.float64)
    return {"mean": float(v.mean()), "std": float(max(v.std(), 1e-6)), "min": float(v.min()),
            "max": float(v.max()), "q90": float(np.quantile(v, 0.9)), "discount": windows.discount,
            "termination_penalty": windows.termination_penalty, "bootstrap_truncated": windows.bootstrap_truncated}


def load_training_episodes(data: DataConfig, seed: int, log=print):
    """The dataset's episodes split as training saw them: (train, validation). Deterministic in ``seed``."""
    episodes = load_source(data.dataset, max_episodes=data.max_episodes,
                           synthetic_episodes=data.synthetic_episodes, seed=seed)
    if data.stitch:
        from diffuser.data.prepare import stitch_contiguous

        episodes = stitch_contiguous(episodes)
    stats = episode_stats(episodes)
    log(f"dataset {data.dataset}: {stats}")
    train_eps, val_eps = split_episodes(episodes, data.val_fraction, seed=seed)
    return train_eps, val_eps, stats


def train_diffusion(cfg: TrainRunConfig | Any) -> dict:
    """Train a TrajectoryDiffusion as ``cfg`` says; returns the trainer's summary (with the export path).

    ``cfg`` may be a TrainRunConfig or an OmegaConf/dict of the same shape (what Hydra hands over).
    Started by ``torchrun`` (or ``srun``), it joins the process group and trains data-parallel; every
    process loads the data the same way, and rank 0's ``run_dir`` is the run's.
    """
    plain = to_container(cfg)
    # Back from plain dicts to the dataclasses, which validate themselves on construction.
    data = DataConfig(**plain["data"])
    model_cfg = UNetConfig(**plain["model"])
    diffusion_cfg = DiffusionConfig(**plain["diffusion"])
    trainer_cfg = TrainerConfig(**plain["trainer"])
    info = distributed.init_distributed(trainer_cfg.device)
    # Each rank's Hydra may name its own output folder (a timestamp can tick between them): use rank 0's.
    run_dir = Path(distributed.broadcast_object(plain["run_dir"]))
    plain["run_dir"] = str(run_dir)
    log = print if info.is_main else (lambda *args, **kwargs: None)
    seed_everything(trainer_cfg.seed)

    if diffusion_cfg.condition == "return" and data.window != "value":
        raise ValueError("diffusion.condition=return trains on returns: set data.window=value")
    train_eps, val_eps, stats = load_training_episodes(data, trainer_cfg.seed, log)
    normalizer = TrajectoryNormalizer(data.normalizer).fit(train_eps)  # fitted once, on training data only
    train_set = make_windows(train_eps, data, normalizer)
    val_set = make_windows(val_eps, data, normalizer) if val_eps else None
    returns = return_stats(train_set) if diffusion_cfg.condition == "return" else None

    model = build_diffusion(train_set.layout, data.horizon, model_cfg, diffusion_cfg, returns)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f} M parameters, {len(train_set)} training windows of horizon {data.horizon}")
    meta = {"dataset": data.dataset, "data": to_container(data), "seed": trainer_cfg.seed,
            "git_commit": git_commit(), "name": plain.get("name", "train")}

    t_start = time.time()

    def export_fn(ema_model, step: int):
        # Wall-clock training time so far (this process), stored so a shipped checkpoint states its compute.
        return export_state(ema_model, normalizer, model_cfg, step=step,
                            train_seconds=round(time.time() - t_start, 1), **meta)

    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(plain, indent=2))
    distributed.barrier()
    trainer = Trainer(model, train_set, trainer_cfg, run_dir, val_dataset=val_set, export_fn=export_fn)
    if plain.get("resume"):
        trainer.resume(run_dir)
    summary = trainer.train()
    summary.update({"run_dir": str(run_dir), "checkpoint": str(run_dir / "checkpoint"), "parameters": n_params,
                    "episodes": stats.count, "windows": len(train_set), "world_size": info.world_size,
                    "global_batch_size": trainer_cfg.batch_size * info.world_size})
    return summary


def train_value(cfg: ValueRunConfig | Any) -> dict:
    """Train a value function for the diffusion checkpoint ``cfg.checkpoint``; returns the trainer's summary.

    Everything the two models must share comes from that checkpoint, so they cannot disagree: the
    dataset and its training split (same seed), the normalizer (not re-fitted), the horizon, the noise
    schedule, and (unless overridden) the discount and termination penalty of the return targets.
    """
    plain = to_container(cfg)
    trainer_cfg = TrainerConfig(**plain["trainer"])
    value_cfg = ValueConfig(**plain["value"])
    run_dir = Path(plain["run_dir"])
    seed_everything(trainer_cfg.seed)
    loaded = load_model(plain["checkpoint"])
    diff_cfg = loaded.config
    data = DataConfig(**diff_cfg["data"])
    discount = data.discount if plain.get("discount") is None else float(plain["discount"])
    penalty = data.termination_penalty if plain.get("termination_penalty") is None else float(plain["termination_penalty"])
    bootstrap = data.bootstrap_truncated if plain.get("bootstrap_truncated") is None else bool(plain["bootstrap_truncated"])
    train_eps, val_eps, stats = load_training_episodes(data, int(diff_cfg.get("seed", trainer_cfg.seed)))
    normalizer = loaded.normalizer

    def windows(eps):
        return ValueDataset(eps, data.horizon, normalizer, padding=data.padding, discount=discount,
                            termination_penalty=penalty, rest_dims=data.rest_dims, stride=data.stride,
                            bootstrap_truncated=bootstrap)

    train_set = windows(train_eps)
    val_set = windows(val_eps) if val_eps else None
    returns = return_stats(train_set)
    schedule = loaded.model.schedule
    value = build_value(train_set.layout, data.horizon, value_cfg, schedule.num_steps, schedule.beta_schedule,
                        returns["mean"], returns["std"])
    n_params = sum(p.numel() for p in value.parameters())
    print(f"value model: {n_params / 1e6:.2f} M parameters, {len(train_set)} windows, returns {returns}")
    meta = {"dataset": data.dataset, "data": to_container(data), "discount": discount,
            "termination_penalty": penalty, "bootstrap_truncated": bootstrap, "diffusion_checkpoint": str(plain["checkpoint"]),
            "seed": trainer_cfg.seed, "git_commit": git_commit(), "name": plain.get("name", "value"),
            "return_stats": returns}
    t_start = time.time()

    def export_fn(ema_model, step: int):
        return export_value_state(ema_model, normalizer, value_cfg, step=step,
                                  train_seconds=round(time.time() - t_start, 1), **meta)

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(plain, indent=2))
    trainer = Trainer(value, train_set, trainer_cfg, run_dir, val_dataset=val_set, export_fn=export_fn)
    if plain.get("resume"):
        trainer.resume(run_dir)
    summary = trainer.train()
    summary.update({"run_dir": str(run_dir), "checkpoint": str(run_dir / "checkpoint"), "parameters": n_params,
                    "episodes": stats.count, "windows": len(train_set), "returns": returns})
    return summary
