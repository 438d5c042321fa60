"""Figures of value-guided planning: how well the value model fits, and return vs guide scale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from diffuser.viz.plans import _plt, _save


def value_fit(loaded_value, windows: int = 2000, levels: Sequence[int] | None = None, seed: int = 0) -> dict:
    """Predicted vs true returns of the value function on its held-out episodes' windows.

    ``levels``: diffusion steps to noise the windows to (default: 0, T/2 and T-1). Returns
    ``{t: {"true": [...], "pred": [...], "r2": float, "mae": float}}`` in raw return units.
    """
    from diffuser.config import DataConfig
    from diffuser.data.windows import ValueDataset
    from diffuser.training.pipeline import load_training_episodes

    value, cfg = loaded_value.value, loaded_value.config
    data = DataConfig(**cfg["data"])
    train_eps, val_eps, _ = load_training_episodes(data, int(cfg.get("seed", 0)), log=lambda *a: None)
    eps = val_eps or train_eps  # no held-out episodes: say so in the figure
    ds = ValueDataset(eps, data.horizon, loaded_value.normalizer, padding=data.padding, discount=cfg["discount"],
                      termination_penalty=cfg["termination_penalty"], rest_dims=data.rest_dims, stride=data.stride,
                      bootstrap_truncated=cfg.get("bootstrap_truncated", False))
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(ds), size=min(windows, len(ds)), replace=False)
    batch = torch.utils.data.default_collate([ds[int(i)] for i in idx])
    T = value.schedule.num_steps
    levels = [0, T // 2, T - 1] if levels is None else list(levels)
    x0 = batch["trajectories"].to(value.device)
    s0 = x0[:, 0, value.layout.state_slice]
    true = batch["values"][:, 0].numpy()
    gen = torch.Generator(device=value.device).manual_seed(seed)
    out = {"held_out": bool(val_eps)}
    with torch.no_grad():
        for t in levels:
            tt = torch.full((x0.shape[0],), t, dtype=torch.long, device=value.device)
            noise = torch.randn(x0.shape, generator=gen, device=value.device)
            xt = value.schedule.q_sample(x0, tt, noise)
            xt[:, 0, value.layout.state_slice] = s0  # planning clamps the start state
            pred = value.returns(xt, tt).cpu().numpy()
            r2 = 1 - np.mean((pred - true) ** 2) / max(np.var(true), 1e-12)
            out[int(t)] = {"true": true.tolist(), "pred": pred.tolist(), "r2": float(r2),
                           "mae": float(np.mean(np.abs(pred - true)))}
    return out


def plot_value_fit(loaded_value, path: str | Path, **kwargs) -> Path:
    """Scatter of predicted vs true return at a few noise levels; the numbers go to ``<path>.json``."""
    fit = value_fit(loaded_value, **kwargs)
    levels = [k for k in fit if k != "held_out"]
    plt = _plt()
    fig, axes = plt.subplots(1, len(levels), figsize=(3.4 * len(levels), 3.4), squeeze=False)
    for ax, t in zip(axes[0], levels):
        f = fit[t]
        ax.scatter(f["true"], f["pred"], s=3, alpha=0.4)
        lo, hi = min(f["true"] + f["pred"]), max(f["true"] + f["pred"])
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_title(f"t = {t}: R² {f['r2']:.2f}, MAE {f['mae']:.1f}", fontsize=9)
        ax.set_xlabel("true return-to-go")
    axes[0][0].set_ylabel("predicted")
    fig.suptitle(("held-out" if fit["held_out"] else "training") + " windows", fontsize=9)
    fig.tight_layout()
    path = _save(fig, path)
    summary = {"held_out": fit["held_out"], **{str(t): {"r2": fit[t]["r2"], "mae": fit[t]["mae"]} for t in levels}}
    Path(path).with_suffix(".json").write_text(json.dumps(summary, indent=2))
    return path


def plot_guide_sweep(rows: Sequence[dict], path: str | Path, baseline: float | None = None,
                     unguided: float | None = None, title: str = "") -> Path:
    """Score vs guide scale, one line per t_stopgrad; rows hold scale, t_stopgrad, score, score_se."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for tsg in sorted({r["t_stopgrad"] for r in rows}):
        rs = sorted((r for r in rows if r["t_stopgrad"] == tsg), key=lambda r: r["scale"])
        ax.errorbar([r["scale"] for r in rs], [r["score"] for r in rs], yerr=[r["score_se"] for r in rs],
                    marker="o", capsize=3, label=f"t_stopgrad {tsg}")
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls=":", label="behaviour policy (dataset)")
    if unguided is not None:
        ax.axhline(unguided, color="k", ls="--", lw=0.8, label="unguided")
    ax.set_xscale("symlog", linthresh=min((r["scale"] for r in rows if r["scale"] > 0), default=0.01))
    ax.set_xlim(left=0)
    ax.set_xlabel("guide scale")
    ax.set_ylabel("normalized score")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
