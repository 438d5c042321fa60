"""What a return condition asks for: the pace and the falls of the training windows at each return.

    python scripts/return_pace.py --checkpoint assets/locomotion/walker2d-medium-expert-v1-t2/diffusion \
        --targets q90 3300 max --out results/return_pace_walker2d-medium-expert-v1.json

Classifier-free guidance conditions a plan on a window's return-to-go. This script rebuilds the windows a
return-conditioned checkpoint was trained on (its dataset, training split, horizon, discount, termination
penalty and bootstrapping, all read from the checkpoint) and reports, per decile of their returns and
around each named target (``q90``, ``max``, ``zK`` or a number, as ``--target-return`` takes them), how
fast those windows move (the mean forward speed over the window) and how many of them belong to episodes
that end in a fall. Writes the report (git commit and command) and a figure beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from diffuser.config import DataConfig
from diffuser.data.minari_io import dataset_info
from diffuser.data.windows import ValueDataset
from diffuser.envs.body import forward_speed_index
from diffuser.planning.locomotion import target_return_value
from diffuser.pretrained import load_model
from diffuser.training.pipeline import load_training_episodes
from diffuser.utils import atomic_path, git_commit


def window_table(checkpoint: str) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """(the checkpoint's return stats, and per training window: its return target, its mean forward
    speed, whether its episode ends in a fall)."""
    import gymnasium as gym

    loaded = load_model(checkpoint)
    config, stats = loaded.config, loaded.model.return_stats
    if not stats:
        raise SystemExit(f"{checkpoint} is not return-conditioned (no return statistics): train one with "
                         "diffusion.condition=return data.window=value")
    data = DataConfig(**config["data"])
    episodes, _, _ = load_training_episodes(data, int(config.get("seed", 0)), log=lambda *a: None)
    env_id = dataset_info(data.dataset)["env_id"]
    index = forward_speed_index(gym.make(env_id))
    if index is None:
        raise SystemExit(f"{env_id} does not say which observation is its forward speed")
    windows = ValueDataset(episodes, data.horizon, loaded.normalizer, padding=data.padding,
                           discount=stats["discount"], termination_penalty=stats["termination_penalty"],
                           rest_dims=data.rest_dims, stride=data.stride,
                           bootstrap_truncated=bool(stats.get("bootstrap_truncated", False)))
    returns = windows.window_values().astype(np.float64)
    speeds, falls = np.empty(len(returns)), np.empty(len(returns), dtype=bool)
    for row, (episode, start) in enumerate(windows.indices):
        ep = episodes[int(episode)]
        speeds[row] = ep.observations[int(start): int(start) + data.horizon, index].mean()
        falls[row] = bool(ep.terminated)
    return stats, returns, speeds, falls


def summary(speeds: np.ndarray, falls: np.ndarray) -> dict:
    if not len(speeds):
        return {"windows": 0}
    return {"windows": int(len(speeds)), "speed": round(float(speeds.mean()), 3),
            "speed_q99": round(float(np.quantile(speeds, 0.99)), 3), "fall_share": round(float(falls.mean()), 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a return-conditioned diffusion export or run folder")
    parser.add_argument("--targets", nargs="*", default=["q90"], help="returns to look at: q90, max, zK or numbers")
    parser.add_argument("--band", type=float, default=0.02,
                        help="windows within this many standard deviations of the returns of a target count as at it")
    parser.add_argument("--out", required=True, help="report .json (the figure goes beside it, .png)")
    args = parser.parse_args(argv)
    stats, returns, speeds, falls = window_table(args.checkpoint)
    edges = np.quantile(returns, np.linspace(0, 1, 11))
    deciles = []
    for k in range(10):
        m = (returns >= edges[k]) & ((returns < edges[k + 1]) if k < 9 else (returns <= edges[k + 1]))
        deciles.append({"returns": [round(float(edges[k]), 1), round(float(edges[k + 1]), 1)], **summary(speeds[m], falls[m])})
    targets = {}
    for target in args.targets:
        value = target_return_value(target, stats)
        near = np.abs(returns - value) <= args.band * stats["std"]
        above = returns >= value
        targets[target] = {"return": round(value, 1), "at": summary(speeds[near], falls[near]),
                           "at_or_above": summary(speeds[above], falls[above])}
    report = {"checkpoint": args.checkpoint, "return_stats": stats, "band_std": args.band, "deciles": deciles,
              "targets": targets, "all": summary(speeds, falls), "git_commit": git_commit(),
              "command": "python scripts/return_pace.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2))
    plot(returns, speeds, falls, targets, out.with_suffix(".png"))
    print(json.dumps({"deciles": deciles, "targets": targets}, indent=2))
    return report


def plot(returns, speeds, falls, targets, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    pick = rng.choice(len(returns), size=min(20000, len(returns)), replace=False)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for fell, colour, label in ((False, "tab:blue", "episode runs to the time limit"), (True, "tab:red", "episode ends in a fall")):
        m = pick[falls[pick] == fell]
        ax.scatter(returns[m], speeds[m], s=2, alpha=0.25, color=colour, label=label, rasterized=True)
    for name, t in targets.items():
        ax.axvline(t["return"], color="black", lw=0.8, ls="--")
        ax.text(t["return"], ax.get_ylim()[1], f" {name}", va="top", fontsize=8)
    ax.set_xlabel("window's return target (what the condition asks for)")
    ax.set_ylabel("mean forward speed over the window (m/s)")
    ax.legend(loc="lower right", markerscale=6, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main()
