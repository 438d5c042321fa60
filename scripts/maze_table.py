"""Print the README's Maze2D / Multi2D table (Markdown) from results/maze2d.json.

    python scripts/maze_table.py [results/maze2d.json]
"""

from __future__ import annotations

import json
import sys

from diffuser.maze_job import MAZES, PUBLISHED


def main(path: str = "results/maze2d.json") -> None:
    table = json.load(open(path))["mazes"]
    print("| maze | protocol | this project | success | median steps to goal | training (CPU) | "
          "Diffuser (paper) | best published | command |")
    print("|---|---|---|---|---|---|---|---|---|")
    for maze in MAZES:
        for protocol in ("single", "multi"):
            row = table.get(maze, {}).get(protocol)
            if row is None:
                continue
            minutes = row.get("training_minutes")
            train = f"{row['training_steps']:,} steps, {minutes:.0f} min" if minutes is not None else "-"
            to_goal = row.get("steps_to_goal_median")
            print(f"| {maze} | {protocol} | **{row['score_mean']:.1f} ± {row['score_se']:.1f}** | "
                  f"{100 * row['success_rate']:.0f} % | {'-' if to_goal is None else f'{to_goal:.0f}'} | {train} | "
                  f"{PUBLISHED['diffuser'][protocol][maze]} | {PUBLISHED['best'][protocol][maze]} | "
                  f"`{row.get('command') or '-'}` |")


if __name__ == "__main__":
    main(*sys.argv[1:])
