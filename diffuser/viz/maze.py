"""Maze figures: walls under the plans, executed paths, starts and goals; the denoising chain in a maze."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from diffuser.envs.maze import MazeMap
from diffuser.viz.plans import plot_chain, plot_plans

__all__ = ["draw_walls", "plot_maze_plans", "plot_maze_chain"]


def draw_walls(maze: MazeMap, goal_radius: float | None = None, goal=None):
    """A background function ``fn(ax)`` drawing the maze's wall cells (and optionally the goal disc)."""

    def draw(ax) -> None:
        from matplotlib.patches import Circle, Rectangle

        for x0, y0, x1, y1 in maze.wall_rects():
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, color="0.25", zorder=1))
        if goal_radius is not None and goal is not None:
            ax.add_patch(Circle(tuple(goal[:2]), goal_radius, color="tab:red", alpha=0.15, zorder=1))

    return draw


def plot_maze_plans(maze: MazeMap, plans: Sequence[np.ndarray], executed: Sequence[np.ndarray] | None,
                    goals: np.ndarray, *, path: str | Path, titles: Sequence[str] | None = None,
                    cols: int = 4) -> Path:
    """One panel per episode: walls, the plan (dots coloured by time), the executed path (dashed),
    start, goal and its success disc."""
    goals = np.asarray(goals)
    h, w = maze.shape
    return plot_plans(plans, executed, goals, bounds=maze.bounds(), titles=titles, path=path, cols=cols,
                      draw_background=lambda ax, i: draw_walls(maze, 0.45, goals[i])(ax),
                      panel_size=max(2.5, min(4.0, 0.45 * max(h, w))))


def plot_maze_chain(maze: MazeMap, chain: np.ndarray, *, path: str | Path, panels: int = 6) -> Path:
    """The denoising chain of one plan (steps+1, H, S) drawn over the maze, from noise to plan."""
    return plot_chain(chain, bounds=maze.bounds(), path=path, panels=panels, draw_background=draw_walls(maze))
