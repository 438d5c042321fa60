"""Figures of 2-D plans: planned vs executed paths, and the denoising chain of one plan."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only: works on machines without a display
    import matplotlib.pyplot as plt

    return plt


def plot_plans(plans: Sequence[np.ndarray], executed: Sequence[np.ndarray] | None = None,
               goals: np.ndarray | None = None, *, bounds=(-1.0, 1.0), titles: Sequence[str] | None = None,
               path: str | Path, cols: int = 4, draw_background=None, panel_size: float = 3.0) -> Path:
    """A grid of panels, one per plan: planned xy (line, coloured by time), executed xy (dashed), start, goal.

    Args:
        plans: each (H, ≥2) raw states; the first two dims are x, y.
        executed: optional (T, ≥2) executed states per plan.
        goals: optional (N, 2) goal positions.
        draw_background: optional ``fn(ax, i)`` drawing e.g. maze walls under panel ``i``.
    """
    plt = _plt()
    n = len(plans)
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(panel_size * cols, panel_size * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        if draw_background is not None:
            draw_background(ax, i)
        p = np.asarray(plans[i])
        ax.scatter(p[:, 0], p[:, 1], c=np.arange(len(p)), cmap="viridis", s=8, zorder=3)
        ax.plot(p[:, 0], p[:, 1], color="tab:blue", lw=1, alpha=0.6, label="plan")
        if executed is not None:
            e = np.asarray(executed[i])
            ax.plot(e[:, 0], e[:, 1], "--", color="tab:orange", lw=1.5, label="executed")
        ax.plot(*p[0, :2], "o", color="tab:green", ms=8, label="start", zorder=4)
        if goals is not None:
            ax.plot(*np.asarray(goals[i])[:2], "*", color="tab:red", ms=12, label="goal", zorder=4)
        _set_bounds(ax, bounds)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return _save(fig, path)


def plot_chain(chain: np.ndarray, *, bounds=(-1.0, 1.0), path: str | Path, panels: int = 6,
               draw_background=None) -> Path:
    """The denoising chain of one plan: ``chain`` (steps+1, H, ≥2) raw states, from noise to plan."""
    plt = _plt()
    chain = np.asarray(chain)
    idx = np.unique(np.linspace(0, len(chain) - 1, panels).round().astype(int))
    fig, axes = plt.subplots(1, len(idx), figsize=(2.6 * len(idx), 2.8), squeeze=False)
    for ax, k in zip(axes.flat, idx):
        if draw_background is not None:
            draw_background(ax)
        p = chain[k]
        ax.scatter(p[:, 0], p[:, 1], c=np.arange(len(p)), cmap="viridis", s=6)
        ax.plot(p[:, 0], p[:, 1], lw=0.8, alpha=0.5)
        _set_bounds(ax, bounds)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("noise" if k == 0 else f"step {k}/{len(chain) - 1}", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _set_bounds(ax, bounds) -> None:
    """``bounds``: (lo, hi) for both axes, or (x_min, x_max, y_min, y_max)."""
    x0, x1, y0, y1 = bounds if len(bounds) == 4 else (*bounds, *bounds)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _plt().close(fig)
    return path
