"""Print the README's Markdown tables from results/compose.json.

    python scripts/compose_tables.py [results/compose.json]
"""

import json
import sys
from pathlib import Path


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def toy(d) -> str:
    lines = ["| experts | sampler | MMD² | grid KL | score evals | energy evals | acceptance |", "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        acc = f"{r['acceptance_mean']:.2f}" if r["acceptance_mean"] is not None else "–"
        lines.append(f"| {r['experts']} | {r['sampler']} | {r['mmd2']:.4f} | {r['grid_kl']:.2f} | {r['score_evals']} | "
                     f"{r['energy_evals']} | {acc} |")
    return "\n".join(lines)


def obstacle(d) -> str:
    n_av = next(iter(d["rows"].values()))["avoidable"]["episodes"]
    n_cr = next(iter(d["rows"].values()))["crossing"]["episodes"]
    lines = [f"| planner | success | plan enters disc | path enters disc | avoidable ({n_av}): plan / path | "
             f"opposite arms ({n_cr}): plan / path | score |", "|---|---|---|---|---|---|---|"]
    for name, r in d["rows"].items():
        a, c = r["avoidable"], r["crossing"]
        lines.append(f"| {name} | {pct(r['success_rate'])} | {pct(r['plan_collision_rate'])} | {pct(r['path_collision_rate'])} | "
                     f"{pct(a['plan_collision_rate'])} / {pct(a['path_collision_rate'])} | "
                     f"{pct(c['plan_collision_rate'])} / {pct(c['path_collision_rate'])} | {r['score_mean']:.1f} ± {r['score_se']:.1f} |")
    return "\n".join(lines)


def prefer(d) -> str:
    lines = ["| RegionPrefer weight | success | steps to goal (mean / median) | time in region until the goal | score |",
             "|---|---|---|---|---|"]
    for r in d["rows"].values():
        mean = "–" if r["steps_to_goal_mean"] is None else f"{r['steps_to_goal_mean']:.1f}"
        lines.append(f"| {r['weight']:g} | {pct(r['success_rate'])} | {mean} / {r['steps_to_goal_median']} | "
                     f"{pct(r['time_in_region'])} | {r['score_mean']:.1f} ± {r['score_se']:.1f} |")
    return "\n".join(lines)


def split(d) -> str:
    lines = ["| starts from windows that move | sampled from | plans moving right | up | both | in free cells |",
             "|---|---|---|---|---|---|"]
    pools = {"both": "right and up"}  # the start pools' keys, as the README names them
    for pool, rows in d["rows_by_starts"].items():
        for name, r in rows.items():
            lines.append(f"| {pools.get(pool, pool)} | {name.replace(' x ', ' × ')} | {pct(r['right'])} | {pct(r['up'])} | {pct(r['both'])} | "
                         f"{pct(r['in_free_cells'])} |")
    return "\n".join(lines)


def main() -> None:
    table = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "results/compose.json").read_text())
    for key, fn in [("toy2d", toy), ("maze_obstacle", obstacle), ("maze_prefer", prefer), ("maze_split", split)]:
        if key in table:
            print(f"### {key}\n\n{fn(table[key])}\n")


if __name__ == "__main__":
    main()
