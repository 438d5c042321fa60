"""Where a locomotion planner loses its score: forward speed over the episode, beside the data's.

    python scripts/speed_profile.py --dataset diffuser/mujoco/walker2d/expert-v1 \
        --runs runs/locomotion/RUN --out results/speed_profile_walker2d-medium-expert-v1.json

For the dataset: the mean forward speed (the body's x velocity, in the observation) over each 100 steps,
averaged over the episodes still running. For each run (a ``diffuser plan locomotion --out`` folder, or one
of its ``episodes_GUIDE.jsonl`` files): the same from its per-episode records (``speed``), per guide, with the episodes that were still slower than
``--slow`` m/s after ``--start`` steps (a slow start or a stall) counted apart. Writes the report (git
commit and command) and a figure beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from diffuser.data.minari_io import dataset_info, load_episodes
from diffuser.evaluation.locomotion import SPEED_WINDOW
from diffuser.envs.body import forward_speed_index
from diffuser.utils import atomic_path, git_commit


def dataset_profile(dataset_id: str, windows: int) -> list[float | None]:
    """Mean x velocity of the dataset's episodes over each SPEED_WINDOW steps (None where none runs)."""
    import gymnasium as gym

    env_id = dataset_info(dataset_id)["env_id"]
    index = forward_speed_index(gym.make(env_id))  # the body's x velocity, qvel[0]
    sums, counts = np.zeros(windows), np.zeros(windows)
    for ep in load_episodes(dataset_id):
        v = ep.observations[:, index]
        for w in range(min(windows, -(-len(v) // SPEED_WINDOW))):
            sums[w] += v[w * SPEED_WINDOW: (w + 1) * SPEED_WINDOW].mean()
            counts[w] += 1
    return [round(float(s / c), 3) if c else None for s, c in zip(sums, counts)]


def run_profiles(run: Path, start: int, slow: float) -> dict[str, dict]:
    """Per guide of a run (its folder, or one episodes .jsonl file): the mean speed per window over the
    episodes still running, and how many episodes were slower than ``slow`` over their window ending at
    step ``start``."""
    out = {}
    paths = [run] if run.is_file() else sorted(run.glob("episodes_*.jsonl"))
    if not paths:
        raise SystemExit(f"{run}: no episodes_*.jsonl here; pass a `diffuser plan locomotion --out` folder or a .jsonl")
    for path in paths:
        episodes = [json.loads(line) for line in path.read_text().splitlines()]
        if not all("speed" in e for e in episodes):
            raise SystemExit(f"{path} has no speed profiles: it was written before they were recorded; plan again")
        windows = max(len(e["speed"]) for e in episodes)
        mean = [float(np.mean([e["speed"][w] for e in episodes if len(e["speed"]) > w])) for w in range(windows)]
        w = start // SPEED_WINDOW - 1
        is_late = [len(e["speed"]) > w and e["speed"][w] < slow for e in episodes]
        late = [e for e, flag in zip(episodes, is_late) if flag]
        others = [e["score"] for e, flag in zip(episodes, is_late) if not flag]
        out[path.stem.removeprefix("episodes_") if run.is_dir() else "episodes"] = {
            "episodes": len(episodes), "speed": [round(s, 3) for s in mean],
            "slow_at_start": len(late), "slow_at_start_score": float(np.mean([e["score"] for e in late])) if late else None,
            "others_score": float(np.mean(others)) if others else None}
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = lambda n: [SPEED_WINDOW * (w + 0.5) for w in range(n)]  # noqa: E731
    data = [(i, s) for i, s in enumerate(report["dataset_speed"]) if s is not None]
    ax.plot([SPEED_WINDOW * (i + 0.5) for i, _ in data], [s for _, s in data], "k--", label=report["dataset"])
    for run, guides in report["runs"].items():
        for guide, r in guides.items():
            name = Path(run).stem + ("" if guide == "episodes" else f" ({guide})")
            ax.plot(steps(len(r["speed"])), r["speed"], marker="o", label=name)
    ax.set_xlabel("env step")
    ax.set_ylabel(f"forward speed, mean over {SPEED_WINDOW} steps (m/s)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="a local Minari dataset id, e.g. diffuser/mujoco/walker2d/expert-v1")
    p.add_argument("--runs", nargs="*", default=[], help="diffuser plan locomotion --out folders, or episodes .jsonl files")
    p.add_argument("--start", type=int, default=300, help="the step by which a walker should be up to speed")
    p.add_argument("--slow", type=float, default=1.0, help="m/s: slower than this at --start is a slow start")
    p.add_argument("--windows", type=int, default=10, help="windows of the dataset's profile")
    p.add_argument("--out", required=True, help="the report, a .json file (the figure goes beside it, .png)")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".json":
        raise SystemExit(f"--out {out} should be a .json file")
    if args.start < SPEED_WINDOW or args.start % SPEED_WINDOW:
        raise SystemExit(f"--start must be a multiple of {SPEED_WINDOW}, got {args.start}")
    report = {"dataset": args.dataset, "window": SPEED_WINDOW, "start": args.start, "slow": args.slow,
              "dataset_speed": dataset_profile(args.dataset, args.windows),
              "runs": {run: run_profiles(Path(run), args.start, args.slow) for run in args.runs},
              "git_commit": git_commit(), "command": "python " + " ".join(sys.argv)}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    plot(report, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in report.items() if k not in ("git_commit", "command")}, indent=1))


if __name__ == "__main__":
    main()
