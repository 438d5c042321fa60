"""The plot of an aggregated results table (``diffuser results aggregate``): one panel per protocol,
one line per group, the IQM with its bootstrap CI and the mean ± s.e. across seeds side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_results"]


def _label(row: dict[str, Any]) -> str:
    # The maze first, then the swept keys by their last name part (plan.model_weight -> model_weight).
    parts = [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in row["group"].items() if key != "maze"]
    maze = row["group"].get("maze")
    return " ".join(([str(maze)] if maze is not None else []) + parts) or "all runs"


def plot_results(table: dict[str, Any], path: str | Path) -> Path:
    """Write the figure of ``table`` (as :func:`diffuser.evaluation.aggregate.build_table` returns it)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed (clusters, CI)
    import matplotlib.pyplot as plt

    rows = table["rows"]
    protocols = list(dict.fromkeys(row["protocol"] for row in rows))
    labels = list(dict.fromkeys(_label(row) for row in rows))
    height = 1.2 + 0.35 * len(labels)
    fig, axes = plt.subplots(1, len(protocols), figsize=(4.5 * len(protocols) + 1.5, height), sharey=True,
                             squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        for row in (r for r in rows if r["protocol"] == protocol):
            y = labels.index(_label(row))
            low, high = row["iqm_ci"]
            ax.errorbar(row["iqm"], y - 0.12, xerr=[[row["iqm"] - low], [high - row["iqm"]]], fmt="o",
                        color="tab:blue", capsize=3, label="IQM, 95% bootstrap CI")
            ax.errorbar(row["score_mean"], y + 0.12, xerr=row["score_se"], fmt="s", color="tab:orange",
                        capsize=3, label="mean ± s.e. over seeds")
        ax.set_title(f"{protocol} ({sum(r['runs'] for r in rows if r['protocol'] == protocol)} runs)")
        ax.set_xlabel("normalized score")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(labels)), labels)
    axes[0][0].invert_yaxis()
    handles, names = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(names, handles))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.12 if height < 3 else 0.06, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
