"""Two planners trained apart, composed: U-Maze models that each saw one region of the maze.

Model A learns from the pieces of the U-Maze dataset that stay in the upper half (y > −0.2: the top arm
and the top of the bend), model B from the pieces that stay in the right half (x > −0.2). Both use the
main U-Maze model's normaliser (so that they read trajectories in the same units, which
:func:`~diffuser.diffusion.compose.compose` checks) and its horizon, at stride 1 (32 env steps). Plans are sampled
from starts in the overlap (the top-right of the U) with only the start inpainted, and each plan is
checked for staying in region A, in region B, and in both: the product A·B should keep both properties
more often than either model alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from diffuser.data.episodes import Episode
from diffuser.data.windows import SequenceDataset
from diffuser.diffusion.compose import compose
from diffuser.diffusion.correctors import ULA
from diffuser.diffusion.model import DiffusionConfig
from diffuser.envs.maze import MazeMap
from diffuser.models.temporal_unet import UNetConfig
from diffuser.pretrained import build_diffusion, export_state, load_model

BOUNDARY = -0.2
REGIONS = {"upper": (1, BOUNDARY), "right": (0, BOUNDARY)}  # name: (coordinate, lower bound)


def in_region(xy: np.ndarray, region: str) -> np.ndarray:
    dim, lo = REGIONS[region]
    return xy[..., dim] > lo


def region_pieces(episodes, region: str, min_length: int) -> list[Episode]:
    """The maximal contiguous pieces of ``episodes`` that stay in ``region``, at least ``min_length`` long."""
    out = []
    for ep in episodes:
        inside = in_region(ep.observations[:, :2], region)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], inside.astype(int), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            if b - a >= min_length:
                n = b - a
                trunc = np.zeros(n, bool)
                trunc[-1] = True
                out.append(Episode(observations=ep.observations[a:b], actions=ep.actions[a:b],
                                   rewards=ep.rewards[a:b], terminations=np.zeros(n, bool), truncations=trunc))
    return out


def train_region_model(episodes, region: str, base, run_dir: Path, steps: int, seed: int) -> Path:
    """Train a small U-Net on ``region``'s pieces with ``base``'s normaliser, horizon and stride."""
    from diffuser.training.trainer import Trainer, TrainerConfig

    # Stride 1: the dataset's episodes end at every goal (76 steps on average), so few pieces inside one
    # region span the main model's 125 env steps (H 32 at stride 4); 32 consecutive steps are plentiful.
    stride = 1
    data_cfg = {**base.config.get("data", {}), "stride": stride}
    horizon = base.model.horizon
    pieces = region_pieces(episodes, region, (horizon - 1) * stride + 1)
    windows = SequenceDataset(pieces, horizon, base.normalizer, stride=stride)
    torch.manual_seed(seed)
    unet = UNetConfig(dim=16, dim_mults=(1, 2, 4))
    model = build_diffusion(windows.layout, horizon, unet, DiffusionConfig(**base.model.config.to_dict()))
    cfg = TrainerConfig(steps=steps, batch_size=64, lr=1e-3, ema_decay=0.99, ema_every=1, ema_start=min(500, steps // 2),
                        val_every=0, save_every=0, device="cpu", seed=seed, progress=False)
    t0 = time.time()
    trainer = Trainer(model, windows, cfg, run_dir,
                      export_fn=lambda m, step: export_state(m, base.normalizer, unet, step=step,
                                                             dataset=base.config.get("dataset"), data=data_cfg,
                                                             name=f"umaze_{region}", region=region,
                                                             train_seconds=round(time.time() - t0, 1)))
    trainer.train()
    (run_dir / "pieces.json").write_text(json.dumps({"region": region, "pieces": len(pieces), "windows": len(windows)}))
    return run_dir


def run_split(checkpoint: str | Path, *, out_dir: str | Path = "runs/compose", seed: int = 0, train_steps: int = 1500,
              num_starts: int = 64, plans_per_start: int = 4, figure: str | Path | None = "assets/compose_split.png",
              **_ignored) -> dict:
    from diffuser.data.sources import load_source

    base = load_model(checkpoint)
    episodes = load_source(base.config["dataset"])
    out_dir = Path(out_dir)
    models, info = {}, {}
    for i, region in enumerate(REGIONS):
        run_dir = out_dir / f"umaze_{region}"
        if not (run_dir / "checkpoint" / "model.safetensors").exists():
            t0 = time.time()
            train_region_model(episodes, region, base, run_dir, train_steps, seed + i)
            info[region] = {"train_seconds": round(time.time() - t0, 1)}
        models[region] = load_model(run_dir)
        info.setdefault(region, {}).update(json.loads((run_dir / "pieces.json").read_text()))

    maze = MazeMap.preset("umaze")
    rng = np.random.default_rng(seed)
    # Starts at rest, uniformly in the overlap's free part (top-right cell and the top of the bend).
    starts = np.zeros((num_starts, 4))
    starts[:, 0] = rng.uniform(0.0, 1.4, num_starts)
    starts[:, 1] = rng.uniform(0.6, 1.4, num_starts)
    norm = base.normalizer
    layout = base.model.layout
    s0 = norm.normalize_observations(torch.as_tensor(starts, dtype=torch.float32)).repeat_interleave(plans_per_start, 0)
    from diffuser.diffusion.constraints import state_constraints

    constraints = state_constraints(layout, {0: s0})
    experts = {region: models[region].model.expert(normalizer=models[region].normalizer, name=region)
               for region in REGIONS}
    variants = {
        "upper alone": [experts["upper"]],
        "right alone": [experts["right"]],
        "upper x right": [experts["upper"], experts["right"]],
        "upper x right + ULA": ([experts["upper"], experts["right"]], ULA(1, 0.1, scale="fixed")),
    }
    rows, kept = {}, {}
    for name, spec in variants.items():
        ex, corr = spec if isinstance(spec, tuple) else (spec, None)
        composition = compose(*ex)
        t0 = time.time()
        out = composition.sample(len(s0), constraints=constraints, corrector=corr,
                                 clip_denoised=base.model.config.clip_denoised,
                                 generator=torch.Generator().manual_seed(seed))
        xy = layout.states(norm.unnormalize_trajectory(out.trajectories))[..., :2].numpy()
        up, right = in_region(xy, "upper").all(-1), in_region(xy, "right").all(-1)
        free = np.asarray(maze.is_free_xy(xy)).all(-1)
        rows[name] = {"in_upper": float(up.mean()), "in_right": float(right.mean()), "in_both": float((up & right).mean()),
                      "in_free_cells": float(free.mean()), "plans": int(len(xy)), "score_evals": out.score_evals,
                      "seconds": round(time.time() - t0, 1)}
        kept[name] = xy
        r = rows[name]
        print(f"{name:<22} upper {100 * r['in_upper']:5.1f} %  right {100 * r['in_right']:5.1f} %  "
              f"both {100 * r['in_both']:5.1f} %  free {100 * r['in_free_cells']:5.1f} %", flush=True)
    entry = {"config": {"base_checkpoint": str(checkpoint), "regions": {k: f"{'xy'[d]} > {lo}" for k, (d, lo) in REGIONS.items()},
                        "train_steps": train_steps, "model": "TemporalUnet(dim=16, dim_mults=(1, 2, 4))",
                        "num_starts": num_starts, "plans_per_start": plans_per_start, "models": info},
             "seed": seed, "rows": rows, "command": f"diffuser compose split --checkpoint {checkpoint}"}
    if figure:
        entry["figure"] = str(_plot(maze, kept, Path(figure)))
    return entry


def _plot(maze, kept: dict, path: Path, n: int = 24) -> Path:
    from diffuser.viz.plans import _plt, _save

    plt = _plt()
    from matplotlib.patches import Rectangle

    from diffuser.viz.maze import draw_walls

    fig, axes = plt.subplots(1, len(kept), figsize=(3.0 * len(kept), 3.1), squeeze=False)
    x0, x1, y0, y1 = maze.bounds()
    for ax, (name, xy) in zip(axes[0], kept.items()):
        draw_walls(maze)(ax)
        ax.add_patch(Rectangle((x0, BOUNDARY), x1 - x0, y1 - BOUNDARY, color="tab:blue", alpha=0.08))
        ax.add_patch(Rectangle((BOUNDARY, y0), x1 - BOUNDARY, y1 - y0, color="tab:orange", alpha=0.08))
        for k in range(min(n, len(xy))):
            ax.plot(xy[k, :, 0], xy[k, :, 1], "-", lw=0.8, color=plt.cm.viridis(k / n))
        ax.set_xlim(x0, x1), ax.set_ylim(y0, y1), ax.set_aspect("equal")
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(name, fontsize=9)
    fig.suptitle("plans from the overlap: upper region (blue), right region (orange)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
