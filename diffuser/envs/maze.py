"""Maze geometry without MuJoCo: the grid, cell <-> xy conversions, wall rectangles and grid paths.

A :class:`MazeMap` is the discrete maze of gymnasium-robotics' PointMaze: a grid of cells indexed
``(row i, col j)``, row 0 at the top. Cell centres in the simulator's continuous frame (``scale`` = the
env's ``maze_size_scaling``, 1 for PointMaze)::

    x = (j + 0.5) * scale - W * scale / 2        y = H * scale / 2 - (i + 0.5) * scale

so y points up and the maze is centred on the origin. Maps are read from gymnasium's list-of-lists
(1 wall, 0 free, "g" goal candidate, "r" reset candidate, "c" both), from text rows (``#`` wall, ``.`` free,
``g``/``r``/``c`` marks) or from JSON holding gymnasium's list format.

Two grid planners are offered: :meth:`MazeMap.shortest_path` (breadth-first, what Q-iteration computes)
and :meth:`MazeMap.dfs_path`, the depth-first search that actually produced the published
D4RL/pointmaze-v2 datasets (their metadata says "QIteration"; the DFS gives longer, winding paths and
the published episode counts).
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = ["MazeMap", "MazeError", "PRESET_NAMES", "DFS_NEIGHBOUR_ORDER"]

Cell = tuple[int, int]

# Neighbour order of the published DFS, as (d_row, d_col). Changing it changes the paths and therefore
# the dataset, so it is fixed here.
DFS_NEIGHBOUR_ORDER: tuple[Cell, ...] = ((0, 1), (0, -1), (-1, 0), (1, 0))

PRESET_NAMES = ("open", "umaze", "medium", "large")
_PRESET_ATTRS = {"open": "OPEN", "umaze": "U_MAZE", "medium": "MEDIUM_MAZE", "large": "LARGE_MAZE"}

_WALL, _FREE, _GOAL, _RESET, _BOTH = 1, 0, "g", "r", "c"
_TEXT_CODES = {"#": _WALL, "1": _WALL, ".": _FREE, "0": _FREE, "g": _GOAL, "r": _RESET, "c": _BOTH}


class MazeError(ValueError):
    """A maze map that cannot be used: malformed, no free cell, a goal in a wall or unreachable."""


class MazeMap:
    """A grid maze: walls, free cells and gymnasium's goal/reset marks.

    Args:
        grid: rows of gymnasium codes: 1 (wall), 0 (free), "g", "r", "c" (free cells marked as goal
            candidates, reset candidates, or both). Ints may also be given as bools or numpy ints.
        scale: side of one cell in simulator units (PointMaze: 1.0, AntMaze: 4.0).
        name: a label for messages and dataset names.

    Raises:
        MazeError: ragged rows, an unknown code, or no free cell.
    """

    def __init__(self, grid: Sequence[Sequence[int | str]], scale: float = 1.0, name: str = "custom"):
        rows = [list(r) for r in grid]
        if not rows or not rows[0]:
            raise MazeError(f"maze {name!r} is empty")
        width = len(rows[0])
        for i, r in enumerate(rows):
            if len(r) != width:
                raise MazeError(f"maze {name!r}: row {i} has {len(r)} cells, row 0 has {width}; rows must be equal")
        codes: list[list[int | str]] = []
        for i, r in enumerate(rows):
            out_row: list[int | str] = []
            for j, v in enumerate(r):
                if isinstance(v, str) and v.lower() in (_GOAL, _RESET, _BOTH):
                    out_row.append(v.lower())
                elif not isinstance(v, str) and int(v) in (0, 1) and float(v) == int(v):
                    out_row.append(int(v))
                else:
                    raise MazeError(
                        f"maze {name!r}: cell ({i}, {j}) holds {v!r}; use 1 (wall), 0 (free), 'g', 'r' or 'c'"
                    )
            codes.append(out_row)
        self._codes = codes
        self.walls = np.array([[c == _WALL for c in r] for r in codes], dtype=bool)  # (H, W)
        self.scale = float(scale)
        self.name = name
        if not (~self.walls).any():
            raise MazeError(f"maze {name!r} has no free cell: every cell is a wall")

    # ----------------------------------------------------------------------------------- constructors
    @classmethod
    def preset(cls, name: str) -> MazeMap:
        """One of gymnasium-robotics' PointMaze maps: "open", "umaze", "medium", "large".

        The maps are read from gymnasium_robotics itself so they cannot drift from the envs.
        """
        key = name.lower().replace("-", "").replace("_", "")
        if key == "u":
            key = "umaze"
        if key not in _PRESET_ATTRS:
            raise MazeError(f"unknown maze preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
        import contextlib
        import io

        # gymnasium_robotics prints an unrelated Adroit notice to stderr on first import.
        with contextlib.redirect_stderr(io.StringIO()):
            from gymnasium_robotics.envs.maze import maps

        return cls(getattr(maps, _PRESET_ATTRS[key]), name=key)

    @classmethod
    def from_text(cls, text: str, name: str = "custom", scale: float = 1.0) -> MazeMap:
        """Parse text rows: ``#`` wall, ``.`` free, ``g``/``r``/``c`` marked free cells (``1``/``0`` also work).

        Blank lines and surrounding whitespace are ignored; every row must have the same width.
        """
        rows = [line.strip() for line in text.splitlines() if line.strip()]
        grid: list[list[int | str]] = []
        for i, line in enumerate(rows):
            row: list[int | str] = []
            for j, ch in enumerate(line):
                code = _TEXT_CODES.get(ch.lower())
                if code is None:
                    raise MazeError(
                        f"maze {name!r}: character {ch!r} at row {i}, column {j}; use '#' for walls, '.' for "
                        f"free cells, 'g'/'r'/'c' for goal/reset/both candidate cells"
                    )
                row.append(code)
            grid.append(row)
        return cls(grid, scale=scale, name=name)

    @classmethod
    def from_json(cls, data: str | dict | list, name: str = "custom") -> MazeMap:
        """Gymnasium's format as JSON: a list of rows, or an object ``{"maze_map": [...], "scale": 1}``."""
        obj = json.loads(data) if isinstance(data, str) else data
        scale = 1.0
        if isinstance(obj, dict):
            if "maze_map" not in obj:
                raise MazeError(f"maze {name!r}: JSON object needs a 'maze_map' key, found {sorted(obj)}")
            scale = float(obj.get("scale", obj.get("maze_size_scaling", 1.0)))
            obj = obj["maze_map"]
        if not isinstance(obj, list) or not all(isinstance(r, list) for r in obj):
            raise MazeError(f"maze {name!r}: JSON must be a list of rows (lists) in gymnasium's format")
        return cls(obj, scale=scale, name=name)

    @classmethod
    def from_file(cls, path: str | Path) -> MazeMap:
        """Read a map file: JSON (``.json`` or content starting with ``[``/``{``) or text rows."""
        path = Path(path)
        if not path.is_file():
            raise MazeError(f"maze map file {str(path)!r} does not exist")
        text = path.read_text()
        name = path.stem
        stripped = text.lstrip()
        if path.suffix.lower() == ".json" or stripped.startswith(("[", "{")):
            try:
                return cls.from_json(text, name=name)
            except json.JSONDecodeError as err:
                raise MazeError(f"maze map file {str(path)!r} is not valid JSON: {err}") from None
        return cls.from_text(text, name=name)

    @classmethod
    def load(cls, maze: str | Path | MazeMap | Sequence[Sequence[int | str]]) -> MazeMap:
        """A MazeMap from a preset name, a file path, a gymnasium grid, or a MazeMap (returned as is)."""
        if isinstance(maze, MazeMap):
            return maze
        if isinstance(maze, (str, Path)):
            if isinstance(maze, str) and maze.lower() in _PRESET_ATTRS:
                return cls.preset(maze)
            return cls.from_file(maze)
        return cls(maze)

    # ------------------------------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple[int, int]:
        """(rows H, columns W)."""
        return self.walls.shape  # type: ignore[return-value]

    def to_gym(self) -> list[list[int | str]]:
        """Gymnasium's list-of-lists with plain Python ints/strs (JSON-serialisable for env specs)."""
        return [list(r) for r in self._codes]

    def to_text(self) -> str:
        """Text rows (``#``, ``.``, ``g``/``r``/``c``)."""
        sym = {_WALL: "#", _FREE: "."}
        return "\n".join("".join(sym.get(c, c) for c in r) for r in self._codes)  # type: ignore[arg-type]

    def code(self, cell: Cell) -> int | str:
        return self._codes[cell[0]][cell[1]]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MazeMap) and self._codes == other._codes and self.scale == other.scale

    def __hash__(self) -> int:
        return hash((self.to_text(), self.scale))

    def __repr__(self) -> str:
        return f"MazeMap(name={self.name!r}, shape={self.shape}, scale={self.scale})"

    def same_layout(self, other: MazeMap) -> bool:
        """Same walls and scale, ignoring goal/reset marks."""
        return self.scale == other.scale and np.array_equal(self.walls, other.walls)

    # ------------------------------------------------------------------------------- cells and coords
    def in_bounds(self, cell: Cell) -> bool:
        return 0 <= cell[0] < self.shape[0] and 0 <= cell[1] < self.shape[1]

    def is_free(self, cell: Cell) -> bool:
        """True for an in-bounds non-wall cell."""
        return self.in_bounds(cell) and not self.walls[cell[0], cell[1]]

    def free_cells(self) -> list[Cell]:
        """Every non-wall cell in row-major order."""
        return [(int(i), int(j)) for i, j in zip(*np.nonzero(~self.walls))]

    def marked_cells(self, marks: Iterable[str]) -> list[Cell]:
        """Free cells whose code is in ``marks`` (e.g. ``("g", "c")``), row-major."""
        marks = set(marks)
        return [c for c in self.free_cells() if self.code(c) in marks]

    def cell_to_xy(self, cell: Cell | np.ndarray) -> np.ndarray:
        """Centre of cell(s) ``(i, j)`` -> ``(x, y)``; (2,) -> (2,) or (N, 2) -> (N, 2) float64."""
        c = np.asarray(cell, dtype=np.float64)
        h, w = self.shape
        x = (c[..., 1] + 0.5) * self.scale - w * self.scale / 2
        y = h * self.scale / 2 - (c[..., 0] + 0.5) * self.scale
        return np.stack([x, y], axis=-1)

    def xy_to_cell(self, xy: np.ndarray | Sequence[float]) -> np.ndarray:
        """Cell index of point(s): (2,) -> (2,) int64 or (N, 2) -> (N, 2); may fall outside the grid."""
        p = np.asarray(xy, dtype=np.float64)
        h, w = self.shape
        i = np.floor((h * self.scale / 2 - p[..., 1]) / self.scale)
        j = np.floor((p[..., 0] + w * self.scale / 2) / self.scale)
        return np.stack([i, j], axis=-1).astype(np.int64)

    def cell_of(self, xy: np.ndarray | Sequence[float]) -> Cell | None:
        """The cell ``(i, j)`` holding point ``xy`` (2,), or None when it lies outside the grid."""
        i, j = (int(v) for v in self.xy_to_cell(xy))
        return (i, j) if self.in_bounds((i, j)) else None

    def is_free_xy(self, xy: np.ndarray | Sequence[float]) -> np.ndarray | bool:
        """Whether point(s) lie in a free cell: (2,) -> bool, (N, 2) -> (N,) bool. Outside = False."""
        cells = self.xy_to_cell(xy)
        h, w = self.shape
        inside = (cells[..., 0] >= 0) & (cells[..., 0] < h) & (cells[..., 1] >= 0) & (cells[..., 1] < w)
        ci = np.clip(cells[..., 0], 0, h - 1)
        cj = np.clip(cells[..., 1], 0, w - 1)
        free = inside & ~self.walls[ci, cj]
        return bool(free) if free.ndim == 0 else free

    def bounds(self) -> tuple[float, float, float, float]:
        """(x_min, x_max, y_min, y_max) of the whole grid."""
        h, w = self.shape
        return (-w * self.scale / 2, w * self.scale / 2, -h * self.scale / 2, h * self.scale / 2)

    def wall_rects(self) -> np.ndarray:
        """(K, 4) float64 rows ``(x_min, y_min, x_max, y_max)``, one per wall cell (row-major)."""
        cells = np.argwhere(self.walls)
        if len(cells) == 0:
            return np.zeros((0, 4))
        centres = self.cell_to_xy(cells)
        half = self.scale / 2
        return np.concatenate([centres - half, centres + half], axis=1)

    def is_enclosed(self) -> bool:
        """True when every border cell is a wall (nothing can leave the maze)."""
        w = self.walls
        return bool(w[0].all() and w[-1].all() and w[:, 0].all() and w[:, -1].all())

    # ------------------------------------------------------------------------------------------ paths
    def _require_free(self, cell: Cell, what: str) -> Cell:
        cell = (int(cell[0]), int(cell[1]))
        if not self.in_bounds(cell):
            raise MazeError(f"{what} cell {cell} is outside maze {self.name!r} of shape {self.shape}")
        if self.walls[cell]:
            raise MazeError(f"{what} cell {cell} is a wall in maze {self.name!r}")
        return cell

    def neighbours(self, cell: Cell) -> list[Cell]:
        """Free 4-neighbours in the published DFS order (right, left, up, down)."""
        out = []
        for di, dj in DFS_NEIGHBOUR_ORDER:
            nb = (cell[0] + di, cell[1] + dj)
            if self.is_free(nb):
                out.append(nb)
        return out

    def distances(self, source: Cell) -> np.ndarray:
        """(H, W) int64 breadth-first step counts from ``source``; -1 for walls and unreachable cells."""
        source = self._require_free(source, "source")
        dist = np.full(self.shape, -1, dtype=np.int64)
        dist[source] = 0
        queue = deque([source])
        while queue:
            c = queue.popleft()
            for nb in self.neighbours(c):
                if dist[nb] < 0:
                    dist[nb] = dist[c] + 1
                    queue.append(nb)
        return dist

    def _unreachable(self, start: Cell, goal: Cell) -> MazeError:
        return MazeError(f"goal cell {goal} is unreachable from cell {start} in maze {self.name!r}")

    def shortest_path(self, start: Cell, goal: Cell) -> list[Cell]:
        """Cells from ``start`` to ``goal`` inclusive along a shortest 4-connected path (BFS).

        Ties are broken by the DFS neighbour order, so the path is deterministic. Raises MazeError when
        either cell is a wall or outside, or the goal is unreachable.
        """
        start, goal = self._require_free(start, "start"), self._require_free(goal, "goal")
        dist = self.distances(goal)  # distances *to* the goal: walk downhill from the start
        if dist[start] < 0:
            raise self._unreachable(start, goal)
        path = [start]
        while path[-1] != goal:
            c = path[-1]
            path.append(next(nb for nb in self.neighbours(c) if dist[nb] == dist[c] - 1))
        return path

    def dfs_path(self, start: Cell, goal: Cell) -> list[Cell]:
        """Cells from ``start`` to ``goal`` inclusive as found by the published depth-first search.

        The search keeps a stack; a cell's free, unvisited neighbours are pushed in
        :data:`DFS_NEIGHBOUR_ORDER` and marked visited (with their parent) when pushed; it stops when the
        goal is popped. The path follows the parents back from the goal. Same errors as
        :meth:`shortest_path`.
        """
        start, goal = self._require_free(start, "start"), self._require_free(goal, "goal")
        parent: dict[Cell, Cell] = {}
        visited = {start}
        stack = [start]
        found = False
        while stack:
            c = stack.pop()
            if c == goal:
                found = True
                break
            for nb in self.neighbours(c):
                if nb not in visited:
                    visited.add(nb)
                    parent[nb] = c
                    stack.append(nb)
        if not found:
            raise self._unreachable(start, goal)
        path = [goal]
        while path[-1] != start:
            path.append(parent[path[-1]])
        return path[::-1]

    def path(self, start: Cell, goal: Cell, planner: str = "dfs") -> list[Cell]:
        """``dfs_path`` (planner "dfs") or ``shortest_path`` (planner "shortest")."""
        if planner == "dfs":
            return self.dfs_path(start, goal)
        if planner == "shortest":
            return self.shortest_path(start, goal)
        raise ValueError(f"unknown planner {planner!r}; use 'dfs' or 'shortest'")

    def components(self) -> list[list[Cell]]:
        """Connected groups of free cells (4-connectivity), each row-major, largest first."""
        seen = np.zeros(self.shape, dtype=bool)
        groups = []
        for c in self.free_cells():
            if seen[c]:
                continue
            reach = self.distances(c) >= 0
            seen |= reach
            groups.append([(int(i), int(j)) for i, j in np.argwhere(reach)])
        return sorted(groups, key=len, reverse=True)

    def require_connected(self, cells: Iterable[Cell] | None = None) -> None:
        """Raise MazeError unless all ``cells`` (default: every free cell) are mutually reachable."""
        cells = self.free_cells() if cells is None else [self._require_free(c, "cell") for c in cells]
        if not cells:
            return
        dist = self.distances(cells[0])
        for c in cells[1:]:
            if dist[c] < 0:
                raise self._unreachable(cells[0], c)

    def diameter(self) -> int:
        """Longest shortest path (in moves) between two free cells of the same component."""
        return max(int(self.distances(c).max()) for c in self.free_cells())

    def farthest_cell(self, source: Cell) -> Cell:
        """A free cell with the largest BFS distance from ``source`` (last one in row-major on ties)."""
        dist = self.distances(source)
        best = int(dist.max())
        return tuple(int(v) for v in np.argwhere(dist == best)[-1])  # type: ignore[return-value]
