"""The plot of one planner across training runs (``diffuser results training-runs``): every episode's
score per run, each run's mean, and the mean across runs with its standard error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_training_runs"]


def plot_training_runs(table: dict[str, Any], path: str | Path) -> Path:
    """Write the figure of ``table`` (as :func:`diffuser.evaluation.training_runs.summarize_training_runs`
    returns it)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    runs, summary = table["runs"], table["summary"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(runs), 3.6))
    jitter = np.random.default_rng(0)  # fixed: the same table draws the same figure
    for i, run in enumerate(runs):
        scores = np.asarray(run["episode_scores"])
        ax.scatter(i + jitter.uniform(-0.18, 0.18, scores.size), scores, s=10, alpha=0.5, color="tab:blue",
                   label="episodes" if i == 0 else None)
        ax.errorbar(i, run["score"], yerr=run["score_se"], fmt="_", markersize=22, color="black", capsize=4,
                    label="run mean ± s.e. over episodes" if i == 0 else None)
    mean, se = summary["score"], summary["score_se"]
    ax.axhspan(mean - se, mean + se, color="tab:orange", alpha=0.2)
    ax.axhline(mean, color="tab:orange", label=f"across runs {mean:.1f} ± {se:.1f}")
    seeds = [r["training_seed"] for r in runs]
    ax.set_xticks(range(len(runs)), [f"seed {s}" if s is not None else f"run {i + 1}" for i, s in enumerate(seeds)])
    ax.set_xlim(-0.6, len(runs) - 0.4)
    ax.set_xlabel("training run")
    ax.set_ylabel("normalized score")
    ax.set_title(f"{table['key']}: {table['guide']} over {summary['training_runs']} training runs", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)  # below: no point hidden
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
