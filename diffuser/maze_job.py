"""The main job: goal-conditioned planning in a PointMaze, end to end.

``diffuser plan maze`` (the README's first command) on its default does, on a fresh machine:

1. generate ``diffuser/pointmaze/umaze-v2`` with the published recipe when it is not there yet;
2. take the checkpoint the project ships for the maze (``assets/checkpoints/maze_<maze>``, made by this
   job's own training step) or, with ``--train``, training overrides or no shipped checkpoint, train the
   maze's fast config (``configs/experiment/maze_<maze>.yaml``); ``--checkpoint`` evaluates any export;
3. evaluate single-task and multi-task (Multi2D) episodes in the real environment, plan + tracker;
4. write ``maze.json`` (config, seeds, git commit, scores), per-episode JSONL records and figures, and
   print the score table next to the published numbers (converted to this dataset's reference scores).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Sequence

from diffuser.evaluation.maze import PROTOCOLS, evaluate_protocol, write_records
from diffuser.planning.maze import MazePlanConfig, MazePlanner
from diffuser.utils import atomic_path, git_commit, resolve_device

MAZES = ("umaze", "medium", "large")

# Published normalized scores converted to Minari-recipe units (shared/REFERENCE.md §2): the original
# Diffuser (the floor) and the best published planners (Diffusion Veteran single, Hierarchical Diffuser multi).
PUBLISHED = {
    "diffuser": {"single": {"umaze": 82, "medium": 92, "large": 72}, "multi": {"umaze": 92, "medium": 97, "large": 78}},
    "best": {"single": {"umaze": 97, "medium": 115, "large": 119}, "multi": {"umaze": 102, "medium": 107, "large": 97}},
}


def shipped_checkpoint(maze: str) -> Path | None:
    """The export the project ships for ``maze`` (trained by this job; see its config.json), if any.

    Shipped checkpoints live beside the package in a source checkout, so an installed wheel has none and
    trains instead."""
    path = Path(__file__).resolve().parent.parent / "assets" / "checkpoints" / f"maze_{maze}"
    return path if (path / "model.safetensors").exists() else None


@contextlib.contextmanager
def dataset_lock(dataset_id: str, timeout_s: float = 1800.0) -> Iterator[None]:
    """Hold an exclusive file lock (``fcntl``) named after ``dataset_id`` under the datasets root.

    Concurrent jobs of a sweep (one machine, or nodes sharing the datasets folder over a file system
    with working locks) then generate a missing dataset once: the others wait and find it made. Waits
    at most ``timeout_s`` and then fails with a message rather than hanging a sweep forever.
    """
    import fcntl

    from diffuser.data.minari_io import datasets_root

    lock_path = datasets_root() / ".locks" / (dataset_id.replace("/", "__") + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        deadline, told = time.monotonic() + timeout_s, False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"waited {timeout_s:.0f} s for another process generating {dataset_id} "
                                       f"(lock {lock_path}); generate it first with `diffuser collect pointmaze`, "
                                       "or remove the lock file if no such process is running") from None
                if not told:
                    print(f"another process is generating {dataset_id}: waiting for it")
                    told = True
                time.sleep(1.0)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_dataset(maze: str) -> str:
    """The local dataset id of ``maze``'s recipe data, generating it (about a minute) when absent.

    Safe to call from concurrent jobs: generation happens under :func:`dataset_lock`."""
    from diffuser.collect.pointmaze import collect_pointmaze, default_dataset_id
    from diffuser.data.minari_io import dataset_path

    dataset_id = default_dataset_id(maze)

    def present() -> bool:
        return (dataset_path(dataset_id) / "data" / "metadata.json").exists()

    if not present():
        with dataset_lock(dataset_id):
            if not present():  # another job may have made it while this one waited for the lock
                print(f"{dataset_id} is not here yet: generating it with the D4RL/pointmaze-v2 recipe")
                collect_pointmaze(maze=maze)
    return dataset_id


def train_fast_config(maze: str, run_dir: Path, device, overrides: Sequence[str]) -> dict:
    from diffuser.demo import compose_train_config
    from diffuser.training.pipeline import train_diffusion

    cfg = compose_train_config([f"experiment=maze_{maze}", f"run_dir={run_dir}", f"trainer.device={device}",
                                *overrides])
    t0 = time.time()
    summary = train_diffusion(cfg)
    summary["train_minutes"] = round((time.time() - t0) / 60, 2)
    summary["config_name"] = f"maze_{maze}"
    return summary


def run_maze_job(
    maze: str = "umaze",
    out_dir: str | Path | None = None,
    checkpoint: str | Path | None = None,
    protocols: Sequence[str] = PROTOCOLS,
    seeds: Sequence[int] = (1000, 1001, 1002),
    episodes_per_seed: int = 20,
    plan_config: MazePlanConfig | None = None,
    device: str = "auto",
    overrides: Sequence[str] = (),
    record: str | Path | None = None,
    train: bool = False,
    dataset: str | None = None,
    episode_steps: int | None = None,
    figures: bool = True,
) -> dict:
    """Run the job (see the module docstring); returns the report written to ``<out_dir>/maze.json``.

    ``dataset``: train on this dataset (a local Minari id or D4RL file of the same maze, with reference
    scores) instead of the maze's generated one. ``episode_steps``: shorter evaluation episodes than the
    maze's standard length (quick checks; the scores then do not compare with the published ones).
    ``figures=False`` skips the plots.
    """
    from diffuser.data.minari_io import dataset_info
    from diffuser.pretrained import load_model
    from diffuser.viz.maze import plot_maze_chain, plot_maze_plans

    if maze not in MAZES:
        raise ValueError(f"unknown maze {maze!r}; valid: {', '.join(MAZES)}")
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise ValueError(f"unknown protocol(s) {bad}; valid: {', '.join(PROTOCOLS)}")
    out = Path(out_dir or f"runs/maze/{maze}")
    commit = git_commit()  # the code that runs, read before anything else can change the checkout
    device = resolve_device(device)
    command = "diffuser " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else None

    if checkpoint is not None and train:
        raise ValueError("--train and --checkpoint exclude each other: train a new model or evaluate a given one")
    dataset_id = dataset or ensure_dataset(maze)
    if checkpoint is None and not train and not overrides and not dataset:
        checkpoint = shipped_checkpoint(maze)
        if checkpoint is not None:
            print(f"evaluating the checkpoint shipped for {maze} ({checkpoint}); --train trains a new one")
    if checkpoint is None:
        data_override = [f"data.dataset={dataset}"] if dataset else []
        summary = train_fast_config(maze, out / "train", device, [*data_override, *overrides])
        checkpoint = summary["checkpoint"]
        training = {"steps": summary["step"], "minutes": summary["train_minutes"],
                    "config_name": summary["config_name"], "parameters": summary["parameters"], "device": str(device)}
    else:
        if overrides:
            raise ValueError("training overrides were given together with --checkpoint, which skips training")
        cfg = load_model(checkpoint).config
        seconds = cfg.get("train_seconds")
        training = {"steps": cfg.get("step"), "minutes": None if seconds is None else round(seconds / 60, 2),
                    "config_name": cfg.get("name"), "checkpoint_given": str(checkpoint)}
    planner = MazePlanner.from_checkpoint(checkpoint, maze, device=device, config=plan_config)
    info = dataset_info(dataset_id)
    refs = (info["ref_min_score"], info["ref_max_score"])

    results, figure_paths = {}, []
    for protocol in protocols:
        res = evaluate_protocol(planner, protocol, refs, seeds=seeds, episodes_per_seed=episodes_per_seed,
                                episode_steps=episode_steps)
        write_records(res.records, out / f"episodes_{protocol}.jsonl")
        results[protocol] = res.summary
        if not figures:
            continue
        titles = [f"score {r.score:.0f}" + (f", goal at {r.steps_to_goal}" if r.success else ", missed")
                  for r in res.records[: len(res.plans)]]
        figure_paths.append(str(plot_maze_plans(planner.maze, res.plans, res.paths, [r.goal for r in res.records[: len(res.plans)]],
                                           path=out / f"plans_{protocol}.png", titles=titles)))
        if res.chain is not None:
            figure_paths.append(str(plot_maze_chain(planner.maze, res.chain, path=out / f"chain_{protocol}.png")))

    report = {
        "job": "maze", "maze": maze, "dataset": dataset_id, "git_commit": commit, "device": str(device),
        "checkpoint": str(checkpoint), "training": training, "planner": planner.describe(),
        "seeds": [int(s) for s in seeds], "episodes_per_seed": episodes_per_seed,
        "reference_scores": {"min": refs[0], "max": refs[1]}, "results": results, "figures": figure_paths,
        "command": command,
    }
    with atomic_path(out / "maze.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"\nresults: {out / 'maze.json'}" + (f"\nfigures: {', '.join(figure_paths)}" if figure_paths else ""))
    if record:
        record_results(report, record)
        print(f"recorded in {record}")
    return report


def print_table(report: dict) -> None:
    maze, t = report["maze"], report["training"]
    given = "checkpoint_given" in t  # evaluated a trained model: its own training, not this run's
    print(f"\n{maze}: {'a checkpoint trained for ' if given else ''}{t.get('steps')} training steps"
          + (f" in {t['minutes']:.1f} min" if t.get("minutes") is not None else ""))
    print(f"{'protocol':<8} {'score':>14} {'success':>8} {'to goal':>8} {'episodes':>9}   "
          f"{'Diffuser (paper)':>16} {'best published':>15}")
    for protocol, r in report["results"].items():
        to_goal = r.get("steps_to_goal_median")
        print(f"{protocol:<8} {r['score_mean']:>7.1f} ± {r['score_se']:<4.1f} {100 * r['success_rate']:>7.0f}% "
              f"{(f'{to_goal:.0f}' if to_goal is not None else '-'):>8} {r['episodes']:>9}   "
              f"{PUBLISHED['diffuser'][protocol][maze]:>16} {PUBLISHED['best'][protocol][maze]:>15}")
    print("(normalized ×100 with this dataset's reference scores; published numbers converted to these units, "
          "see README)")


def record_results(report: dict, path: str | Path) -> None:
    """Merge this run's rows into the results table ``path`` (``results/maze2d.json``)."""
    path = Path(path)
    table = json.loads(path.read_text()) if path.exists() else {"description": (
        "Maze2D (single) and Multi2D (multi) normalized scores x100 with the generated datasets' reference "
        "scores; written by `diffuser plan maze --record`."), "mazes": {}}
    t = report["training"]
    for protocol, r in report["results"].items():
        table["mazes"].setdefault(report["maze"], {})[protocol] = {
            "score_mean": round(r["score_mean"], 2), "score_se": round(r["score_se"], 2),
            "success_rate": r["success_rate"], "episodes": r["episodes"], "seeds": report["seeds"],
            "steps_to_goal_median": r.get("steps_to_goal_median"),
            "training_steps": t.get("steps"), "training_minutes": t.get("minutes"),
            "config_name": t.get("config_name"), "planner": report["planner"], "git_commit": report["git_commit"],
            "command": report["command"], "dataset": report["dataset"],
        }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(table, indent=2))
