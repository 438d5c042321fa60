"""Aggregate many runs into one table: ``diffuser results aggregate RUN_DIRS... [--out PREFIX] [--group-by KEYS]``.

A run is a folder holding ``result.json`` (written by ``diffuser job``: its config, seed and scores) and
one ``episodes_<protocol>.jsonl`` per evaluation protocol (one JSON object per episode, with its
normalized ``score``). Runs are found recursively under the given folders, so a whole multirun folder
can be passed at once.

Runs are grouped by maze, protocol and the *swept* keys: every config key whose value differs between
the runs, except ``seed`` (the axis averaged over) and ``run_dir``; ``--group-by`` names the keys
instead. Each group's row holds the normalized score as mean ± standard error across seeds (each run's
mean over its episodes is one sample) and the interquartile mean over all the group's episodes with a
seeded percentile-bootstrap 95 % CI (``diffuser.evaluation.stats``). The table is written as JSON,
Markdown and a PNG plot.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffuser.evaluation.stats import bootstrap_ci, iqm, mean_se

__all__ = ["Run", "aggregate_runs", "build_table", "find_runs", "load_run", "read_episodes", "to_markdown"]

RESULT_NAME = "result.json"
NOT_GROUPED = ("seed", "run_dir")  # differ between runs of one group by design


@dataclass
class Run:
    path: Path  # the run folder
    seed: Any
    config: dict[str, Any]  # flattened: {"plan.model_weight": 1.5, ...}
    episodes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # protocol -> episode records
    git_commit: str | None = None


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys; lists become JSON text so that values can be compared and hashed."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def find_runs(run_dirs: Iterable[str | Path]) -> list[Path]:
    """The ``result.json`` files in or under ``run_dirs`` (each once, sorted)."""
    found: set[Path] = set()
    for d in run_dirs:
        d = Path(d)
        if not d.exists():
            raise FileNotFoundError(f"{d} does not exist")
        if d.is_file():
            if d.name != RESULT_NAME:
                raise ValueError(f"{d} is a file but not a {RESULT_NAME}; pass run folders")
            found.add(d.resolve())
            continue
        hits = sorted(d.rglob(RESULT_NAME))
        if not hits:
            raise ValueError(f"no runs under {d}: no {RESULT_NAME} found (each run folder of `diffuser job` "
                             "holds one; is the sweep still running, or did its jobs fail?)")
        found.update(p.resolve() for p in hits)
    return sorted(found)


def read_episodes(path: Path, protocol: str) -> list[dict[str, Any]]:
    """One run's episode records (a JSON object per line, each with a finite ``score``); ``protocol``
    names them in errors."""
    if not path.is_file():
        raise ValueError(f"{path} is missing: its run's {RESULT_NAME} names it as the {protocol!r} episodes")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number} is not valid JSON ({err})") from err
        score = record.get("score") if isinstance(record, dict) else None
        if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
            raise ValueError(f"{path}:{number}: an episode record needs a finite number 'score', got {score!r}")
        records.append(record)
    if not records:
        raise ValueError(f"{path} holds no episode records")
    return records


def load_run(result_path: str | Path) -> Run:
    """Read one run: its ``result.json`` and the episode files it names (or ``episodes_*.jsonl`` beside it)."""
    result_path = Path(result_path)
    try:
        result = json.loads(result_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{result_path} is not valid JSON ({err}); the run may have been interrupted") from err
    if not isinstance(result, dict) or not isinstance(result.get("config"), dict):
        raise ValueError(f"{result_path} is not a run record: it needs a 'config' object (written by `diffuser job`)")
    run_dir = result_path.parent
    config = _flatten(result["config"])
    config.setdefault("maze", result.get("maze"))
    names = result.get("episodes")
    if names is None:  # not named: whatever episode files lie beside it
        names = {p.stem.removeprefix("episodes_"): p.name for p in sorted(run_dir.glob("episodes_*.jsonl"))}
    if not isinstance(names, dict) or not names:
        raise ValueError(f"{result_path} names no episode files and none lie beside it")
    run = Run(run_dir, result.get("seed", config.get("seed")), config, git_commit=result.get("git_commit"))
    for protocol, name in names.items():
        records = read_episodes(run_dir / name, protocol)
        expected = (result.get("scores") or {}).get(protocol, {}).get("episodes")
        if expected is not None and expected != len(records):
            raise ValueError(f"{run_dir / name} holds {len(records)} episodes but {result_path} counts {expected}")
        run.episodes[protocol] = records
    return run


def _sort_key(value: Any) -> tuple:
    # Numbers in numeric order, then everything else as text; None first.
    if value is None:
        return (0, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, value, "")
    return (2, 0, str(value))


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """Config keys whose values differ between ``runs`` (``maze`` always first), except seed and run_dir."""
    keys = sorted({k for run in runs for k in run.config})
    varying = [k for k in keys if k not in NOT_GROUPED and k != "maze"
               and len({json.dumps(run.config.get(k), sort_keys=True) for run in runs}) > 1]
    return ["maze", *varying]


def build_table(runs: Sequence[Run], group_by: Sequence[str] | None = None, bootstrap: int = 2000,
                seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Group ``runs`` and summarize each group (see the module docstring); returns the table as a dict."""
    if not runs:
        raise ValueError("no runs to aggregate")
    keys = list(group_by) if group_by else swept_keys(runs)
    unknown = [k for k in keys if k != "protocol" and all(k not in run.config for run in runs)]
    if unknown:
        sample = ", ".join(sorted(runs[0].config)[:12])
        raise ValueError(f"unknown group key(s) {unknown}; the runs' config keys include: {sample}, ...")
    keys = [k for k in keys if k != "protocol"]  # protocol is always a grouping key
    groups: dict[tuple, list[tuple[Run, list[dict]]]] = {}
    for run in runs:
        for protocol, records in run.episodes.items():
            label = tuple(run.config.get(k) for k in keys) + (protocol,)
            groups.setdefault(label, []).append((run, records))
    rows = []
    for label in sorted(groups, key=lambda lab: tuple(_sort_key(v) for v in lab)):
        members = groups[label]
        seeds = [run.seed for run, _ in members]
        if len(set(map(str, seeds))) < len(seeds):
            print(f"warning: group {dict(zip([*keys, 'protocol'], label))} holds several runs with the same seed "
                  f"({seeds}); each counts as one sample", file=sys.stderr)
        per_seed = [sum(r["score"] for r in records) / len(records) for _, records in members]
        scores = [r["score"] for _, records in members for r in records]
        mean, se = mean_se(per_seed)
        low, high = bootstrap_ci(scores, "iqm", resamples=bootstrap, confidence=confidence, seed=seed)
        successes = [r["success"] for _, records in members for r in records if "success" in r]
        rows.append({
            "group": dict(zip(keys, label[:-1])), "protocol": label[-1], "runs": len(members),
            "seeds": seeds, "episodes": len(scores), "score_mean": mean, "score_se": se,
            "iqm": iqm(scores), "iqm_ci": [low, high],
            "success_rate": sum(map(bool, successes)) / len(successes) if successes else None,
            "run_dirs": [str(run.path) for run, _ in members],
        })
    return {
        "description": ("Normalized scores x100 per group: mean ± standard error across seeds (each run's "
                        "mean over its episodes is one sample), and the interquartile mean over all episodes "
                        f"with a percentile-bootstrap {confidence:.0%} CI."),
        "group_by": [*keys, "protocol"],
        "bootstrap": {"resamples": bootstrap, "seed": seed, "confidence": confidence},
        "runs": len(runs),
        "git_commits": sorted({run.git_commit for run in runs if run.git_commit}),
        "rows": rows,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


def to_markdown(table: dict[str, Any]) -> str:
    """The table as GitHub Markdown: one row per group."""
    keys = table["group_by"]
    header = [*keys, "runs", "episodes", "score (mean ± s.e. over seeds)", "IQM [95% CI]", "success"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table["rows"]:
        cells = [_fmt(row["group"].get(k)) for k in keys if k != "protocol"] + [row["protocol"]]
        success = "-" if row["success_rate"] is None else f"{100 * row['success_rate']:.0f} %"
        cells += [str(row["runs"]), str(row["episodes"]), f"{row['score_mean']:.1f} ± {row['score_se']:.1f}",
                  f"{row['iqm']:.1f} [{row['iqm_ci'][0]:.1f}, {row['iqm_ci'][1]:.1f}]", success]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def aggregate_runs(run_dirs: Sequence[str | Path], out: str | Path | None = None,
                   group_by: Sequence[str] | None = None, bootstrap: int = 2000, seed: int = 0,
                   plot: bool = True) -> dict[str, Any]:
    """Find, load, group and summarize runs; write ``PREFIX.json``, ``PREFIX.md`` and ``PREFIX.png``
    (default prefix ``<first run dir>/aggregate``); print the Markdown table; return the table."""
    from diffuser.utils import atomic_path

    if not run_dirs:
        raise ValueError("give at least one run folder")
    runs = [load_run(path) for path in find_runs(run_dirs)]
    table = build_table(runs, group_by=group_by, bootstrap=bootstrap, seed=seed)
    prefix = Path(out) if out else Path(run_dirs[0]) / "aggregate"
    markdown = to_markdown(table)
    with atomic_path(prefix.with_name(prefix.name + ".json")) as tmp:
        tmp.write_text(json.dumps(table, indent=2))
    with atomic_path(prefix.with_name(prefix.name + ".md")) as tmp:
        tmp.write_text(markdown)
    written = [prefix.with_name(prefix.name + ".json"), prefix.with_name(prefix.name + ".md")]
    if plot:
        from diffuser.viz.results import plot_results

        written.append(plot_results(table, prefix.with_name(prefix.name + ".png")))
    print(markdown)
    print(f"{len(runs)} runs in {len(table['rows'])} groups; written: {', '.join(map(str, written))}")
    return table
