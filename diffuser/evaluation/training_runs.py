"""One planner's score across independently trained models:
``diffuser results training-runs RUN_DIRS... --guide cfg [--out FILE]``.

A locomotion score such as 96 over 51 episodes belongs to *one* pair of trained models; the same recipe
trained with another seed can land ten points away, and the episodes of one run say nothing about that.
This pools evaluations by ``diffuser plan locomotion`` (folders holding ``locomotion.json`` and
``episodes_<guide>.jsonl``) that differ only in their models: the same dataset, the same planner and the
same training recipe, but different weights. Each run's mean over its episodes is one sample, so the
summary's mean ± standard error is across training runs; the interquartile mean over all episodes, with
a seeded percentile-bootstrap CI, is given beside it. The default output is
``results/training_runs/<dataset row>_<guide>.json``, which ``scripts/locomotion_table.py --targets``
reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffuser.evaluation.aggregate import read_episodes
from diffuser.evaluation.stats import bootstrap_ci, iqm, mean_se

__all__ = ["DEFAULT_DIR", "planner_settings", "row_key", "summarize_training_runs", "write_training_runs"]

DEFAULT_DIR = Path("results/training_runs")
# The training recipe: what must agree between runs for them to be runs of one recipe.
RECIPE_KEYS = {"diffusion": ("steps", "horizon", "discount", "bootstrap_truncated"),
               "value": ("steps", "bootstrap_truncated")}
DERIVED_PLANNER_KEYS = ("target_return_value",)  # computed from the data, not chosen
# Settings added after runs were recorded: absent means this default.
LATER_PLANNER_KEYS = {"cold_candidates": 0, "avoid_falls": False, "average": 1, "warm_from": "executed", "inverse_weight": 0.0,
                      "speed_limit": None, "speed_limit_by": "cost", "speed_weight": 1.0}


def row_key(report: dict[str, Any]) -> str:
    """The results table's row for a report: ``hopper-medium-expert`` (v0) or ``hopper-medium-expert-v1``."""
    version = report.get("dataset_version", "v0")
    return f"{report['env']}-{report['level']}" + ("" if version == "v0" else f"-{version}")


def _training_seed(checkpoint: str | None) -> int | None:
    """The trainer's seed from a checkpoint folder's config.json, where that folder is still on disk."""
    config = Path(checkpoint or "") / "config.json"
    if not checkpoint or not config.is_file():
        return None
    return json.loads(config.read_text()).get("trainer", {}).get("seed")


def _load(run_dir: Path, guide: str) -> dict[str, Any]:
    report_path = run_dir / "locomotion.json"
    if not report_path.is_file():
        raise FileNotFoundError(f"{report_path} does not exist: pass folders written by `diffuser plan locomotion --out`")
    report = json.loads(report_path.read_text())
    if guide not in report.get("results", {}):
        raise ValueError(f"{run_dir} has no {guide!r} results (it has {sorted(report.get('results', {}))}); "
                         "pick another --guide or evaluate that guide on these models first")
    episodes_path = run_dir / f"episodes_{guide}.jsonl"
    if not episodes_path.is_file():
        raise FileNotFoundError(f"{episodes_path} is missing: its locomotion.json reports {guide!r} episodes")
    records = read_episodes(episodes_path, guide)
    scores, fell = [r["score"] for r in records], [bool(r.get("terminated")) for r in records]
    if len(scores) != report["results"][guide]["episodes"]:
        raise ValueError(f"{episodes_path} holds {len(scores)} episodes but {report_path} counts "
                         f"{report['results'][guide]['episodes']}")
    return {"report": report, "scores": scores, "fell": fell}


def _recipe(report: dict[str, Any]) -> dict[str, Any]:
    training = report["training"]
    return {part: {k: training.get(part, {}).get(k) for k in keys} for part, keys in RECIPE_KEYS.items()}


def planner_settings(planner: dict[str, Any]) -> dict[str, Any]:
    """A recorded planner's chosen settings, comparable across reports of any age: settings added since
    filled in at their defaults, values derived from the data left out."""
    return {k: v for k, v in {**LATER_PLANNER_KEYS, **planner}.items() if k not in DERIVED_PLANNER_KEYS}


def _planner(report: dict[str, Any], guide: str) -> dict[str, Any]:
    return planner_settings(report["results"][guide]["planner"])


def _same(what: str, values: dict[Path, Any]) -> Any:
    """The one value that every run shares, or an error naming the runs that differ."""
    distinct = {json.dumps(v, sort_keys=True) for v in values.values()}
    if len(distinct) > 1:
        listing = "\n".join(f"  {d}: {json.dumps(v, sort_keys=True)}" for d, v in values.items())
        raise ValueError(f"the runs differ in their {what}; only runs of one recipe and planner pool:\n{listing}")
    return next(iter(values.values()))


def summarize_training_runs(run_dirs: Sequence[str | Path], guide: str, bootstrap: int = 2000,
                            seed: int = 0) -> dict[str, Any]:
    """Check that ``run_dirs`` evaluate one planner on models of one recipe, and summarize across them."""
    if len(run_dirs) < 2:
        raise ValueError(f"give two or more run folders (got {len(run_dirs)}): one run has no spread across training")
    dirs = [Path(d) for d in run_dirs]
    runs = {d: _load(d, guide) for d in dirs}
    reports = {d: r["report"] for d, r in runs.items()}
    dataset = _same("dataset", {d: r["dataset"] for d, r in reports.items()})
    planner = _same("planner", {d: _planner(r, guide) for d, r in reports.items()})
    recipe = _same("training recipe", {d: _recipe(r) for d, r in reports.items()})
    _same("evaluation (seeds, episodes per seed)", {d: [r["seeds"], r.get("episodes_per_seed")]
                                                    for d, r in reports.items()})
    weights = {d: r["training"]["diffusion"].get("weights") for d, r in reports.items()}
    if None in weights.values() or len(set(weights.values())) < len(weights):
        listing = "\n".join(f"  {d}: {w}" for d, w in weights.items())
        raise ValueError("each run must score different diffusion weights (the same models scored twice are "
                         f"not two training runs):\n{listing}")
    rows = []
    for d, run in runs.items():
        report, result = run["report"], run["report"]["results"][guide]
        diffusion = report["training"]["diffusion"]
        rows.append({"run_dir": str(d), "score": result["score"], "score_se": result["score_se"],
                     "episodes": result["episodes"], "seeds": report["seeds"],
                     "seed_scores": result.get("seed_scores"), "fell": sum(run["fell"]) / len(run["fell"]),
                     "episode_scores": run["scores"],
                     "diffusion_weights": diffusion.get("weights"),
                     "value_weights": report["training"].get("value", {}).get("weights"),
                     "checkpoint": diffusion.get("checkpoint"),
                     "training_seed": _training_seed(diffusion.get("checkpoint")),
                     "command": report["command"], "git_commit": report["git_commit"]})
    mean, se = mean_se([r["score"] for r in rows])
    pooled = [s for run in runs.values() for s in run["scores"]]
    falls = [f for run in runs.values() for f in run["fell"]]
    low, high = bootstrap_ci(pooled, "iqm", resamples=bootstrap, seed=seed)
    first = next(iter(reports.values()))
    return {
        "description": (f"{guide!r} planner on models of one training recipe, trained {len(rows)} times: normalized "
                        "score x100 as mean ± standard error across training runs (each run's mean over its "
                        "episodes is one sample), and the interquartile mean over all episodes with a "
                        "percentile-bootstrap 95 % CI. Written by `diffuser results training-runs`."),
        "key": row_key(first), "dataset": dataset, "guide": guide, "planner": planner, "recipe": recipe,
        "runs": rows,
        "summary": {"training_runs": len(rows), "score": mean, "score_se": se, "episodes": len(pooled),
                    "iqm": iqm(pooled), "iqm_ci": [low, high], "fell": sum(falls) / len(falls)},
        "bootstrap": {"resamples": bootstrap, "seed": seed, "confidence": 0.95},
    }


def to_markdown(table: dict[str, Any]) -> str:
    """The table as GitHub Markdown: one line per run, then the summary across runs."""
    lines = ["| run | training seed | score (mean ± s.e. over episodes) | evaluation seeds | falls |",
             "|---|---|---|---|---|"]
    for r in table["runs"]:
        seeds = " / ".join(f"{v:.1f}" for v in (r["seed_scores"] or {}).values())
        lines.append(f"| {r['run_dir']} | {r['training_seed'] if r['training_seed'] is not None else '-'} | "
                     f"{r['score']:.1f} ± {r['score_se']:.1f} ({r['episodes']} ep) | {seeds} | {100 * r['fell']:.0f} % |")
    s = table["summary"]
    lines.append(f"| **across {s['training_runs']} training runs** | | **{s['score']:.1f} ± {s['score_se']:.1f}** "
                 f"(IQM {s['iqm']:.1f} [{s['iqm_ci'][0]:.1f}, {s['iqm_ci'][1]:.1f}], {s['episodes']} ep) | | "
                 f"{100 * s['fell']:.0f} % |")
    return "\n".join(lines) + "\n"


def write_training_runs(run_dirs: Sequence[str | Path], guide: str, out: str | Path | None = None,
                        bootstrap: int = 2000, seed: int = 0, command: str | None = None,
                        plot: bool = True) -> dict[str, Any]:
    """Summarize (see :func:`summarize_training_runs`), stamp with the command and git commit, write the
    JSON atomically (default ``results/training_runs/<row>_<guide>.json``) and its figure beside it (the
    same name, ``.png``), print the Markdown table."""
    from diffuser.utils import atomic_path, git_commit
    from diffuser.viz.training_runs import plot_training_runs

    table = summarize_training_runs(run_dirs, guide, bootstrap=bootstrap, seed=seed)
    table["command"], table["git_commit"] = command, git_commit()
    path = Path(out) if out else DEFAULT_DIR / f"{table['key']}_{guide}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(table, indent=2))
    written = [path, plot_training_runs(table, path.with_suffix(".png"))] if plot else [path]
    print(to_markdown(table))
    print(f"written: {', '.join(map(str, written))}")
    return table
