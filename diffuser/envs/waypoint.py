"""The waypoint controller that generated D4RL/pointmaze-v2 (the behaviour policy of the recipe).

Per step, given the ball position ``p``, velocity ``v`` and desired goal ``g``:

1. When ``g`` moved (by more than 1e-3) since the last plan, plan a grid path from ``cell_of(p)`` to
   ``cell_of(g)`` (published: depth-first search; ``planner="shortest"``: breadth-first shortest path)
   and target the *centre* of the next cell (the goal itself when the ball already is in the goal cell).
2. When within ``waypoint_threshold`` (0.1) of the target, move on to the next cell: its centre minus
   ``U[0,1)^2 * 0.2`` (a jitter toward -x/-y that varies the paths), or the exact goal for the goal cell.
3. ``action = 10 (target - p) - 1 v``, plus ``N(0, action_noise^2)`` noise, clipped to [-1, 1].

Note the published quirk kept here: if the first cell after a replan is already the goal cell, the
target is that cell's centre, not the goal (the goal is at most 0.35 from the centre, inside the 0.45
success radius, so the ball still succeeds on the way).
"""

from __future__ import annotations

import math

import numpy as np

from diffuser.envs.maze import Cell, MazeMap

__all__ = ["WaypointController"]


class WaypointController:
    """PD controller that follows grid waypoints to the desired goal.

    Args:
        maze: the maze geometry (a :class:`MazeMap` or a preset name).
        planner: "dfs" (published) or "shortest".
        p_gain, d_gain: PD gains on the position error and on the velocity (published 10 and -1).
        waypoint_threshold: distance at which the next waypoint becomes the target.
        jitter: size of the ``U[0,1)^2`` offset subtracted from intermediate waypoints.
        action_noise: std of the Gaussian action noise (0.5 for data collection, 0 for the expert).
        rng: a numpy Generator or seed for the jitter and the noise (deterministic for a seed).
        noise_block: how many noise draws to make at a time (speed only; fixed so a seed always gives
            the same sequence).
    """

    def __init__(
        self,
        maze: MazeMap | str,
        planner: str = "dfs",
        p_gain: float = 10.0,
        d_gain: float = -1.0,
        waypoint_threshold: float = 0.1,
        jitter: float = 0.2,
        action_noise: float = 0.0,
        rng: np.random.Generator | int | None = None,
        noise_block: int = 4096,
    ):
        if planner not in ("dfs", "shortest"):
            raise ValueError(f"unknown planner {planner!r}; use 'dfs' (published) or 'shortest'")
        if action_noise < 0:
            raise ValueError(f"action_noise must be >= 0, got {action_noise}")
        self.maze = MazeMap.load(maze)
        self.planner = planner
        self.p_gain, self.d_gain = float(p_gain), float(d_gain)
        self.waypoint_threshold = float(waypoint_threshold)
        self.jitter = float(jitter)
        self.action_noise = float(action_noise)
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._noise_block = int(noise_block)
        self._noise = np.zeros((0, 2))
        self._noise_pos = 0
        self._paths: dict[tuple[Cell, Cell], dict[Cell, Cell]] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the current plan (the next call replans). The random streams are not reset."""
        self._goal: tuple[float, float] | None = None
        self._goal_cell: Cell | None = None
        self._next: dict[Cell, Cell] = {}
        self._target_cell: Cell | None = None
        self._tx = self._ty = 0.0

    # ------------------------------------------------------------------------------------- planning
    def _successors(self, start: Cell, goal: Cell) -> dict[Cell, Cell]:
        """cell -> next cell along the planned path; cached since paths depend only on the two cells."""
        key = (start, goal)
        nxt = self._paths.get(key)
        if nxt is None:
            path = self.maze.path(start, goal, self.planner)
            nxt = dict(zip(path[:-1], path[1:]))
            self._paths[key] = nxt
        return nxt

    def _locate(self, x: float, y: float) -> Cell:
        cell = self.maze.cell_of((x, y))
        if cell is None or not self.maze.is_free(cell):
            # The ball sits on a cell boundary that rounds into a wall (or left the maze): use the
            # nearest free cell so planning still works.
            free = np.array(self.maze.free_cells())
            d = np.linalg.norm(self.maze.cell_to_xy(free) - np.array([x, y]), axis=1)
            cell = tuple(int(v) for v in free[int(np.argmin(d))])  # type: ignore[assignment]
        return cell  # type: ignore[return-value]

    def _replan(self, x: float, y: float, gx: float, gy: float) -> None:
        start = self._locate(x, y)
        goal_cell = self.maze.cell_of((gx, gy))
        if goal_cell is None or not self.maze.is_free(goal_cell):
            from diffuser.envs.maze import MazeError

            raise MazeError(f"desired goal ({gx:.3f}, {gy:.3f}) is not in a free cell of maze {self.maze.name!r}")
        self._goal, self._goal_cell = (gx, gy), goal_cell
        self._next = self._successors(start, goal_cell)
        if self._next:
            self._target_cell = self._next[start]
            self._tx, self._ty = (float(v) for v in self.maze.cell_to_xy(self._target_cell))
        else:  # already in the goal cell
            self._target_cell = goal_cell
            self._tx, self._ty = gx, gy

    # --------------------------------------------------------------------------------------- acting
    def _draw_noise(self) -> tuple[float, float]:
        if self._noise_pos >= len(self._noise):
            self._noise = self.rng.standard_normal((self._noise_block, 2)) * self.action_noise
            self._noise_pos = 0
        n = self._noise[self._noise_pos]
        self._noise_pos += 1
        return float(n[0]), float(n[1])

    def act(self, x: float, y: float, vx: float, vy: float, gx: float, gy: float) -> tuple[float, float]:
        """One action from plain floats (the fast path used by the generator): returns (ax, ay)."""
        goal = self._goal
        if goal is None or math.hypot(goal[0] - gx, goal[1] - gy) > 1e-3:
            self._replan(x, y, gx, gy)
        if (
            self._target_cell != self._goal_cell
            and math.hypot(self._tx - x, self._ty - y) <= self.waypoint_threshold
        ):
            self._target_cell = self._next[self._target_cell]  # type: ignore[index]
            if self._target_cell == self._goal_cell:
                self._tx, self._ty = self._goal  # type: ignore[misc]
            else:
                cx, cy = self.maze.cell_to_xy(self._target_cell)
                jx, jy = self.rng.uniform(size=2) * self.jitter
                self._tx, self._ty = float(cx - jx), float(cy - jy)
        ax = self.p_gain * (self._tx - x) + self.d_gain * vx
        ay = self.p_gain * (self._ty - y) + self.d_gain * vy
        if self.action_noise > 0:
            nx, ny = self._draw_noise()
            ax, ay = ax + nx, ay + ny
        return min(1.0, max(-1.0, ax)), min(1.0, max(-1.0, ay))

    def __call__(self, obs: dict) -> np.ndarray:
        """Action (2,) float32 for a PointMaze observation dict (observation, achieved_goal, desired_goal)."""
        x, y, vx, vy = (float(v) for v in np.asarray(obs["observation"])[:4])
        gx, gy = (float(v) for v in np.asarray(obs["desired_goal"])[:2])
        return np.array(self.act(x, y, vx, vy, gx, gy), dtype=np.float32)

    @property
    def target(self) -> np.ndarray:
        """The current tracking target (x, y)."""
        return np.array([self._tx, self._ty])
