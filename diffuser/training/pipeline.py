"""From a config to a trained, exported diffusion planner: data → normalizer → windows → model → trainer."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from diffuser.config import WINDOW_KINDS, DataConfig, TrainRunConfig, to_container
from diffuser.data.episodes import episode_stats, split_episodes
from diffuser.data.normalizers import TrajectoryNormalizer
from diffuser.data.sources import load_source
from diffuser.data.windows import GoalDataset, SequenceDataset
from diffuser.diffusion.model import DiffusionConfig
from diffuser.models.temporal_unet import UNetConfig
from diffuser.pretrained import build_diffusion, export_state
from diffuser.training import distributed
from diffuser.training.trainer import Trainer, TrainerConfig
from diffuser.utils import git_commit, seed_everything


def make_windows(episodes, data: DataConfig, normalizer: TrajectoryNormalizer):
    if data.window not in WINDOW_KINDS:
        raise ValueError(f"unknown data.window {data.window!r}; valid: {', '.join(WINDOW_KINDS)}")
    cls = GoalDataset if data.window == "goal" else SequenceDataset
    return cls(episodes, data.horizon, normalizer, padding=data.padding, rest_dims=data.rest_dims,
               stride=data.stride)


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

    episodes = load_source(data.dataset, max_episodes=data.max_episodes,
                           synthetic_episodes=data.synthetic_episodes, seed=trainer_cfg.seed)
    if data.stitch:
        from diffuser.data.prepare import stitch_contiguous

        episodes = stitch_contiguous(episodes)
    stats = episode_stats(episodes)
    log(f"dataset {data.dataset}: {stats}")
    train_eps, val_eps = split_episodes(episodes, data.val_fraction, seed=trainer_cfg.seed)
    normalizer = TrajectoryNormalizer(data.normalizer).fit(train_eps)  # fitted once, on training data only
    train_set = make_windows(train_eps, data, normalizer)
    val_set = make_windows(val_eps, data, normalizer) if val_eps else None

    model = build_diffusion(train_set.layout, data.horizon, model_cfg, diffusion_cfg)
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
