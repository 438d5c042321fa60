"""Two planners trained apart, composed: U-Maze models that each learned one behaviour style.

The U-Maze dataset is stitched into its continuous streams and cut into the main model's windows (H 32
at stride 4: 125 env steps). Model ``right`` learns only from the windows that end at least
``DISPLACEMENT`` to the right of where they start, model ``up`` only from those that end at least as far
up. Both use the main model's normaliser (so they read trajectories in the same units, which
:func:`~diffuser.diffusion.compose.compose` checks), horizon and stride. Plans are sampled from the
start states of data windows that do both (so both styles are possible from there), and of any data
window, with only the start inpainted; each plan is checked for moving right, moving up, and both: the
product right · up should do both more often than either model alone. The windows the starts were taken
from give the data's own rates. (The main model is no reference here: trained with its goal clamped at
the last step, it never learned to end a plan by itself.)

A third model, ``all``, learns from windows of every style with the same recipe: the shared base p of
which each style model is a tilt p·r_i. The plain product p_right · p_up = p² r_right r_up counts the
base twice; its score at high noise is about −2x/σ², so every denoising step contracts as if the noise
were half as large. Two products keep one copy of the base: the geometric mean (p_right p_up)^½ and the
ratio p_right p_up / p_all = p r_right r_up (weights 1, 1, −1: Composable Diffusion's conjunction on an
unconditional base). Both score sums have total weight 1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from diffuser.data.prepare import stitch_contiguous
from diffuser.data.windows import SequenceDataset
from diffuser.diffusion.compose import compose
from diffuser.diffusion.constraints import state_constraints
from diffuser.diffusion.correctors import ULA
from diffuser.diffusion.model import DiffusionConfig
from diffuser.envs.maze import MazeMap
from diffuser.models.temporal_unet import UNetConfig
from diffuser.pretrained import build_diffusion, export_state, load_model

DISPLACEMENT = 0.5  # net displacement over a plan (maze units; a cell is 1) that counts as "moving" that way
STYLES = {"right": 0, "up": 1}  # style: the coordinate that grows
BASE = "all"  # the model trained on windows of every style
PLOTTED = ("right alone", "up alone", "right x up", "right x up / all")  # the figure's columns


def has_style(xy: np.ndarray, style: str) -> np.ndarray:
    """(…,) bool for positions (…, H, 2): the plan ends ``DISPLACEMENT`` further along the style's axis."""
    d = STYLES[style]
    return xy[..., -1, d] - xy[..., 0, d] > DISPLACEMENT


def style_windows(windows: SequenceDataset, streams, every: int) -> dict[str, np.ndarray]:
    """For every ``every``-th window of ``windows`` (cut from ``streams``): {style: bool mask}, with the
    window indices under ``"index"``."""
    index = np.arange(0, len(windows), every)
    ep, start = windows.indices[index, 0], windows.indices[index, 1]
    span = (windows.horizon - 1) * windows.stride
    first = np.stack([streams[e].observations[s, :2] for e, s in zip(ep, start)])
    last = np.stack([streams[e].observations[s + span, :2] for e, s in zip(ep, start)])
    xy = np.stack([first, last], axis=1)  # (N, 2, 2): only the ends decide a style
    return {"index": index, **{style: has_style(xy, style) for style in STYLES}}


def train_style_model(windows: SequenceDataset, index: np.ndarray, style: str, base, run_dir: Path, steps: int,
                      seed: int) -> Path:
    """Train a small U-Net on the windows ``index`` of ``windows`` (one style), in ``base``'s units."""
    from diffuser.training.trainer import Trainer, TrainerConfig

    subset = windows.subset(index)
    torch.manual_seed(seed)
    unet = UNetConfig(dim=16, dim_mults=(1, 2, 4))
    model = build_diffusion(windows.layout, windows.horizon, unet, DiffusionConfig(**base.model.config.to_dict()))
    cfg = TrainerConfig(steps=steps, batch_size=64, lr=1e-3, ema_decay=0.99, ema_every=1, ema_start=min(500, steps // 2),
                        val_every=0, save_every=0, device="cpu", seed=seed, progress=False)
    t0 = time.time()
    data_cfg = {**base.config.get("data", {}), "stitch": True}
    trainer = Trainer(model, subset, cfg, run_dir,
                      export_fn=lambda m, step: export_state(m, base.normalizer, unet, step=step,
                                                             dataset=base.config.get("dataset"), data=data_cfg,
                                                             name=f"umaze_{style}", style=style,
                                                             train_seconds=round(time.time() - t0, 1)))
    trainer.train()
    (run_dir / "windows.json").write_text(json.dumps({"style": style, "windows": int(len(index))}))
    return run_dir


def run_split(checkpoint: str | Path, *, out_dir: str | Path = "runs/compose", seed: int = 0, train_steps: int = 1500,
              num_starts: int = 64, plans_per_start: int = 4, every: int = 4, max_windows: int = 20000,
              figure: str | Path | None = "assets/compose_split.png", **_ignored) -> dict:
    from diffuser.data.sources import load_source

    base = load_model(checkpoint)
    streams = stitch_contiguous(load_source(base.config["dataset"]))
    stride = int(base.config.get("data", {}).get("stride", 1))
    windows = SequenceDataset(streams, base.model.horizon, base.normalizer, stride=stride)  # padding none: whole windows
    styles = style_windows(windows, streams, every)
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    models, info = {}, {"windows_checked": int(len(styles["index"]))}
    for i, style in enumerate([*STYLES, BASE]):
        run_dir = out_dir / f"umaze_{style}"
        in_style = np.ones(len(styles["index"]), bool) if style == BASE else styles[style]
        if not (run_dir / "checkpoint" / "model.safetensors").exists():
            chosen = styles["index"][in_style]
            chosen = rng.choice(chosen, min(max_windows, len(chosen)), replace=False)
            train_style_model(windows, chosen, style, base, run_dir, train_steps, seed + i)
        models[style] = load_model(run_dir)
        info[style] = {**json.loads((run_dir / "windows.json").read_text()),
                       "train_seconds": models[style].config.get("train_seconds")}
        info[style]["share_of_windows"] = float(in_style.mean())
    both = styles["index"][styles["right"] & styles["up"]]
    info["share_doing_both"] = float((styles["right"] & styles["up"]).mean())

    layout, norm = base.model.layout, base.normalizer
    def expert(style: str, weight: float = 1.0):
        return models[style].model.expert(weight, normalizer=models[style].normalizer, name=style)

    variants = {
        "right alone": [expert("right")],
        "up alone": [expert("up")],
        "all alone": [expert(BASE)],
        "right x up": [expert("right"), expert("up")],
        "right x up + ULA (sigma-scaled)": ([expert("right"), expert("up")], ULA(1, 0.05, scale="sigma")),
        "(right x up)^1/2": [expert("right", 0.5), expert("up", 0.5)],
        "right x up / all": [expert("right"), expert("up"), expert(BASE, -1.0)],
    }
    maze = MazeMap.preset("umaze")
    # Starts: the first states (with their velocities) of data windows that move both right and up (both
    # styles are possible from there, and the start's momentum already favours them), or of any window.
    pools = {"both": both, "any": styles["index"]}
    rows, kept = {}, {}
    start_rng = np.random.default_rng(seed + 1)  # the same starts whether the models were trained now or before
    for pool, candidates in pools.items():
        picked = start_rng.choice(candidates, num_starts, replace=False)
        starts = np.stack([windows[int(k)]["conditions"][0].numpy() for k in picked])  # normalised
        constraints = state_constraints(layout, {0: torch.as_tensor(starts).repeat_interleave(plans_per_start, 0)})
        # The data's own rate from these starts: the windows they were taken from.
        position = np.searchsorted(styles["index"], picked)
        data_right, data_up = styles["right"][position], styles["up"][position]
        rows[pool] = {"data (the windows the starts come from)": {
            "right": float(data_right.mean()), "up": float(data_up.mean()), "both": float((data_right & data_up).mean()),
            "in_free_cells": 1.0, "plans": int(num_starts)}}
        for name, spec in variants.items():
            ex, corr = spec if isinstance(spec, tuple) else (spec, None)
            t0 = time.time()
            out = compose(*ex).sample(num_starts * plans_per_start, constraints=constraints, corrector=corr,
                                      clip_denoised=base.model.config.clip_denoised,
                                      generator=torch.Generator().manual_seed(seed))
            xy = layout.states(norm.unnormalize_trajectory(out.trajectories))[..., :2].numpy()
            right, up = has_style(xy, "right"), has_style(xy, "up")
            free = np.asarray(maze.is_free_xy(xy)).all(-1)
            r = rows[pool][name] = {"right": float(right.mean()), "up": float(up.mean()),
                                    "both": float((right & up).mean()), "in_free_cells": float(free.mean()),
                                    "plans": int(len(xy)), "score_evals": out.score_evals,
                                    "seconds": round(time.time() - t0, 1)}
            if name in PLOTTED:
                kept[pool, name] = xy
            print(f"starts {pool:<4} {name:<32} right {100 * r['right']:5.1f} %  up {100 * r['up']:5.1f} %  "
                  f"both {100 * r['both']:5.1f} %  free {100 * r['in_free_cells']:5.1f} %", flush=True)
    entry = {"config": {"base_checkpoint": str(checkpoint), "styles": {s: f"{'xy'[d]}_end - {'xy'[d]}_start > "
                                                                          f"{DISPLACEMENT}" for s, d in STYLES.items()},
                        "horizon": base.model.horizon, "stride": stride, "train_steps": train_steps,
                        "model": "TemporalUnet(dim=16, dim_mults=(1, 2, 4))", "every": every, "max_windows": max_windows,
                        "num_starts": num_starts, "plans_per_start": plans_per_start, "data": info},
             "seed": seed, "rows_by_starts": rows, "command": f"diffuser compose split --checkpoint {checkpoint}"}
    if figure:
        entry["figure"] = str(_plot(maze, kept, Path(figure)))
    return entry


def _plot(maze, kept: dict, path: Path, n: int = 24) -> Path:
    """One row per start pool, one column per variant in PLOTTED: n plans each, green where they do both."""
    from diffuser.viz.maze import draw_walls
    from diffuser.viz.plans import _plt, _save

    plt = _plt()
    pools = list(dict.fromkeys(pool for pool, _ in kept))
    fig, axes = plt.subplots(len(pools), len(PLOTTED), figsize=(2.6 * len(PLOTTED), 2.9 * len(pools)), squeeze=False)
    x0, x1, y0, y1 = maze.bounds()
    for row, pool in zip(axes, pools):
        for ax, name in zip(row, PLOTTED):
            xy = kept[pool, name]
            draw_walls(maze)(ax)
            both = has_style(xy, "right") & has_style(xy, "up")
            free = np.asarray(maze.is_free_xy(xy)).all(-1)
            for k in range(min(n, len(xy))):
                ax.plot(xy[k, :, 0], xy[k, :, 1], "-", lw=0.9, color="tab:green" if both[k] else "tab:gray", alpha=0.8)
                ax.plot(xy[k, 0, 0], xy[k, 0, 1], "k.", ms=3)
            ax.set_xlim(x0, x1), ax.set_ylim(y0, y1), ax.set_aspect("equal")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{name} (starts: {pool})\nboth {100 * both.mean():.0f} %, free {100 * free.mean():.0f} %",
                         fontsize=7)
    fig.suptitle(f"plans that move right and up (green; > {DISPLACEMENT} each) from the same starts (dots)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
