"""Print the README's locomotion table (Markdown) from results/locomotion.json.

    python scripts/locomotion_table.py [results/locomotion.json] [--env walker2d] [--version v1] [--targets]

``--targets`` prints the issue's targets instead, one line per dataset: does the best guide beat the
behaviour policy (medium, medium-replay) or come within 10 % of the expert (medium-expert: ≥ 90, the
expert policy being 100 on the datasets' own reference scores), and does guidance beat unguided sampling.
Only cells of three or more evaluation seeds count. Where a dataset's planner was also scored across three
or more training runs (``diffuser results training-runs``, files in ``training_runs/`` beside the results
file), the target is judged on the best mean across training runs instead of the row's one pair of models; a
table of some of another table's runs (the first three of four) is superseded by it.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from diffuser.evaluation.training_runs import planner_settings

GUIDES = (("value", "value guidance"), ("cfg", "classifier-free"), ("none", "unguided"))


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    seeds = len(r.get("seeds", []))
    return f"{r['score']:.1f} ± {r['score_se']:.1f} ({r['episodes']} ep, {seeds} seed{'s' * (seeds != 1)})"


def _solver(p: dict) -> str:
    """One guide's sampler in words: "DDIM 5", "DPM-Solver++ 3 warm 0.67 (4 of 16 cold)", with
    ", planned falls avoided" where the planner did."""
    name = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp": "DPM-Solver++"}[p["sampler"]]
    steps = "" if p["sampler"] == "ddpm" else f" {p['sampler_steps']}"
    cold = f" ({p['cold_candidates']} of {p['candidates']} cold)" if p.get("cold_candidates") else ""
    falls = ", planned falls avoided" if p.get("avoid_falls") else ""
    return name + steps + (f" warm {p['warm_level']:g}" if p.get("warm_level") else "") + cold + falls


SELECTIONS = {"value": "ranked by value", "consensus": "as its candidates' medoid"}


def _selection(guide: str, planner: dict) -> str | None:
    """How a guide chose the executed plan among its candidates, in words, where that departs from the
    guide's own protocol (the value guide ranks by value, the others take the first candidate)."""
    select, k = planner.get("select"), planner.get("average", 1)
    parts = [] if guide == "value" and select in ("value", "guide") else [SELECTIONS.get(select)]
    if k > 1:
        parts.append(f"averaged over its {k} candidates" if k == planner.get("candidates") else f"the best {k} averaged")
        if planner.get("warm_from") == "best":
            parts.append("warm-started from the best")
    return ", ".join(p for p in parts if p) or None


def _guide_name(guide: str, planner: dict) -> str:
    """A guide as the targets name it: "value guidance", "classifier-free, ranked by value", ..."""
    if guide == "value" and planner.get("scale") == 0:
        return "value ranking, scale 0"  # candidates ranked by the value function, no gradient
    selection = _selection(guide, planner)
    w = planner.get("inverse_weight", 0.0)
    actions = "" if not w else ", actions from inverse dynamics" if w == 1 else f", actions {w:g} inverse dynamics"
    limit = planner.get("speed_limit")
    by_choice = planner.get("speed_limit_by", "cost") == "choice"
    speed = "" if limit is None else (f", candidates under {limit:g} m/s" if by_choice else
                                      f", speed limit {limit:g} m/s (weight {planner.get('speed_weight', 1.0):g})")
    return (dict(GUIDES)[guide] + (f", {selection}" if selection else "")
            + (", planned falls avoided" if planner.get("avoid_falls") else "") + actions + speed)


def _planner(row: dict) -> str:
    """The row's sampler: one description when every guide used it (e.g. DDIM 5), else one per guide;
    then whatever departs from the defaults: the horizon (32), the return discount (0.99), returns
    continued past time limits (by default cut), guides that chose their plan otherwise than by their
    protocol, and the value guide's scale (1)."""
    groups: dict[str, list[str]] = {}  # sampler -> the guides that used it
    for g, name in GUIDES:
        if g in row:
            groups.setdefault(_solver(row[g]["planner"]), []).append(name)
    text = next(iter(groups)) if len(groups) == 1 else "; ".join(f"{', '.join(gs)}: {d}" for d, gs in groups.items())
    # Rows recorded before the horizon was stored all used the fast config's H 32 (no override in their commands).
    horizon = row["training"]["diffusion"].get("horizon", 32)
    discount = row["training"]["diffusion"].get("discount") or 0.99  # likewise for the discount
    scale = row["value"]["planner"].get("scale", 1.0) if "value" in row else 1.0
    continued = [who for k, who in (("diffusion", "condition"), ("value", "value"))
                 if row["training"].get(k, {}).get("bootstrap_truncated")]
    return (text + (f", H {horizon}" if horizon != 32 else "") + (f", γ {discount:g}" if discount != 0.99 else "")
            + (f", {' and '.join(continued)} returns continued past the cut" if continued else "")
            + "".join(f", {name} {_selection(g, row[g]['planner'])}" for g, name in GUIDES
                      if g in row and _selection(g, row[g]["planner"]))
            + (f", value scale {scale:g}" if scale != 1.0 else ""))


def _version(key: str) -> str:
    """A row's dataset version: ``hopper-medium-v1`` -> ``v1``; keys without a suffix are v0's."""
    match = re.search(r"-(v\d+)$", key)
    return match.group(1) if match else "v0"


def _target_line(key: str, row: dict, across: list[dict] = ()) -> str:
    """One dataset's targets: the best guided cell of >= 3 seeds (and, from ``across``, the best planner
    scored across training runs) against the data (or the expert), and against unguided sampling."""
    guided = {g: row[g] for g in ("value", "cfg") if g in row and len(row[g].get("seeds", [])) >= 3}
    data = row["dataset_average"]["score"]
    if not guided:
        return f"| {key} | {data:.1f} | - | - | no guided cell of 3 seeds yet | - | - |"
    best = max(guided, key=lambda g: guided[g]["score"])
    score, se = guided[best]["score"], guided[best]["score_se"]
    runs_cell, judged = "-", score
    across = [t for t in across if t["guide"] in ("value", "cfg")]  # unguided sampling is no candidate
    if across:
        decisive = [t for t in across if t["summary"]["training_runs"] >= 3] or across
        top = max(decisive, key=lambda t: t["summary"]["score"])
        s = top["summary"]
        runs_cell = (f"{s['score']:.1f} ± {s['score_se']:.1f} ({_guide_name(top['guide'], top['planner'])}, "
                     f"{s['training_runs']} runs)")
        if s["training_runs"] >= 3:
            judged = s["score"]
    if key.removesuffix(f"-{_version(key)}").endswith("medium-expert"):  # the level, without a version suffix
        goal, met = "≥ 90 (expert 100)", judged >= 90.0
    else:
        goal, met = f"> data {data:.1f}", judged > data
    none = row.get("none")
    beats_none = "-" if none is None else ("yes" if score > none["score"] else "no") + f" ({none['score']:.1f})"
    return (f"| {key} | {data:.1f} | {score:.1f} ± {se:.1f} ({_guide_name(best, guided[best]['planner'])}) | "
            f"{runs_cell} | {goal} | {'**met**' if met else 'missed'} | {beats_none} |")


def _training_runs(results_path: str) -> dict[str, list[dict]]:
    """The across-training-runs tables beside a results file, by dataset row, without superseded ones."""
    tables: dict[str, list[dict]] = {}
    for f in sorted((Path(results_path).parent / "training_runs").glob("*.json")):
        table = json.loads(f.read_text())
        tables.setdefault(table["key"], []).append(table)
    return {key: _latest(found) for key, found in tables.items()}


def _latest(tables: list[dict]) -> list[dict]:
    """Drop every table whose runs are some of another's of the same planner: the first three runs of a
    planner later scored on four say less than the four, and choosing the better of the two would pick a
    subset by its score."""
    models = [frozenset(r["diffusion_weights"] for r in t["runs"]) for t in tables]
    planner = lambda t: (t["guide"], planner_settings(t["planner"]))  # noqa: E731
    return [t for t, m in zip(tables, models)
            if not any(planner(o) == planner(t) and m < n for o, n in zip(tables, models))]


def main(path: str = "results/locomotion.json", env: str | None = None, version: str | None = None,
         targets: bool = False) -> None:
    rows = json.load(open(path))["rows"]
    if env is not None:
        rows = {k: r for k, r in rows.items() if k.split("-")[0] == env}
    if version is not None:
        rows = {k: r for k, r in rows.items() if _version(k) == version}
    if not rows:
        raise SystemExit(f"no rows for env {env or 'any'!r}, version {version or 'any'!r} in {path}")
    if targets:
        across = _training_runs(path)
        print("| dataset | data | best guide (3+ seeds) | across training runs | target | | beats unguided |")
        print("|---|---|---|---|---|---|---|")
        for key, row in rows.items():
            print(_target_line(key, row, across.get(key, [])))
        return
    print("| dataset | behaviour policy (dataset average) | " + " | ".join(name for _, name in GUIDES)
          + " | planner | training (CPU) |")
    print("|---|---|" + "---|" * len(GUIDES) + "---|---|")
    for key, row in rows.items():
        t = row["training"]
        train = f"{t['diffusion']['steps']:,} + {t.get('value', {}).get('steps', 0):,} steps, " \
                f"{t['diffusion']['minutes'] + t.get('value', {}).get('minutes', 0):.0f} min"
        print(f"| {key} | {row['dataset_average']['score']:.1f} | "
              + " | ".join(_cell(row.get(g)) for g, _ in GUIDES) + f" | {_planner(row)} | {train} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print the README's locomotion table from a results file.")
    parser.add_argument("path", nargs="?", default="results/locomotion.json")
    parser.add_argument("--env", help="only this env's rows, e.g. hopper, walker2d, halfcheetah")
    parser.add_argument("--version", help="only rows of this dataset version, e.g. v0, v1")
    parser.add_argument("--targets", action="store_true", help="the issue's targets per dataset, not the score table")
    args = parser.parse_args()
    main(args.path, args.env, args.version, args.targets)
