"""PointMaze env ids, episode lengths, env construction, and reference-score tables.

Everything env-specific that the data, collection and evaluation code look up lives here, so the
numbers exist once. gymnasium / gymnasium-robotics are imported inside functions: the tables can be
read without them.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from typing import Any

from diffuser.envs.maze import MazeError, MazeMap

__all__ = [
    "POINTMAZE_ENV_NAMES",
    "POINTMAZE_EPISODE_STEPS",
    "POINTMAZE_EVAL_GOAL_CELLS",
    "D4RL_REF_SCORES",
    "pointmaze_env_id",
    "pointmaze_episode_steps",
    "eval_goal_cell",
    "eval_maze_map",
    "make_pointmaze_env",
    "make_pointmaze_eval_env",
    "d4rl_ref_scores",
    "import_gymnasium_robotics",
]

POINTMAZE_ENV_NAMES = {"open": "PointMaze_Open", "umaze": "PointMaze_UMaze", "medium": "PointMaze_Medium",
                       "large": "PointMaze_Large"}

# Evaluation episode lengths of D4RL's maze2d (and gymnasium-robotics' registrations).
POINTMAZE_EPISODE_STEPS = {"open": 300, "umaze": 300, "medium": 600, "large": 800}

# The single goal cell of the published evaluation envs of D4RL/pointmaze-v2 (row, col).
POINTMAZE_EVAL_GOAL_CELLS = {"open": (2, 3), "umaze": (1, 1), "medium": (6, 6), "large": (7, 9)}

# D4RL's (REF_MIN_SCORE, REF_MAX_SCORE) per env. Locomotion scores hold for every dataset of that env
# (medium, medium-replay, medium-expert, ...).
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "maze2d-umaze": (23.85, 161.86),
    "maze2d-medium": (13.13, 277.39),
    "maze2d-large": (6.7, 273.99),
    "maze2d-umaze-dense": (68.54, 193.66),
    "maze2d-medium-dense": (44.26, 297.46),
    "maze2d-large-dense": (30.57, 303.49),
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}


def import_gymnasium_robotics():
    """Import gymnasium-robotics (registering its envs) without its unrelated Adroit notice on stderr."""
    with contextlib.redirect_stderr(io.StringIO()):
        import gymnasium_robotics
    import gymnasium as gym

    gym.register_envs(gymnasium_robotics)
    return gymnasium_robotics


def _preset_key(maze: str | MazeMap) -> str | None:
    """The preset name of ``maze`` when its layout is one of the four presets, else None."""
    if isinstance(maze, str):
        key = MazeMap.preset(maze).name
        return key
    for key in POINTMAZE_ENV_NAMES:
        if maze.same_layout(MazeMap.preset(key)):
            return key
    return None


def pointmaze_env_id(maze: str | MazeMap = "umaze", dense: bool = False) -> str:
    """``PointMaze_{Open,UMaze,Medium,Large}[Dense]-v3``. A custom layout uses the UMaze id with its own
    ``maze_map`` (gymnasium-robotics' own convention for custom mazes)."""
    key = _preset_key(maze) or "umaze"
    return f"{POINTMAZE_ENV_NAMES[key]}{'Dense' if dense else ''}-v3"


def pointmaze_episode_steps(maze: str | MazeMap) -> int:
    """Evaluation episode length: 300/300/600/800 for open/umaze/medium/large (D4RL's).

    Custom layouts get 40 steps per move of the maze's diameter, rounded up to a hundred, at least 300
    (the rule reproduces umaze's 300 and stays within the presets' budget per move).
    """
    key = _preset_key(maze)
    if key is not None:
        return POINTMAZE_EPISODE_STEPS[key]
    return max(300, int(math.ceil(40 * maze.diameter() / 100.0)) * 100)  # type: ignore[union-attr]


def eval_goal_cell(maze: str | MazeMap) -> tuple[int, int]:
    """The fixed goal cell of the evaluation env.

    Presets: the published cells. Custom maps: the one cell marked "g" or "c" when exactly one is
    marked, else the free cell farthest (by grid path) from the first free cell in row-major order.
    """
    key = _preset_key(maze)
    if key is not None:
        return POINTMAZE_EVAL_GOAL_CELLS[key]
    assert isinstance(maze, MazeMap)
    marked = maze.marked_cells(("g", "c"))
    if len(marked) == 1:
        return marked[0]
    return maze.farthest_cell(maze.free_cells()[0])


def eval_maze_map(maze: MazeMap, goal_cell: tuple[int, int]) -> list[list[int | str]]:
    """Gymnasium map of the evaluation env: ``"g"`` on ``goal_cell`` only; resets from the other cells.

    Cells marked "r" or "c" in ``maze`` stay reset candidates ("r"); otherwise gymnasium resets the
    agent in any other free cell, as in the published evaluation maps.
    """
    goal_cell = (int(goal_cell[0]), int(goal_cell[1]))
    if not maze.in_bounds(goal_cell):
        raise MazeError(f"evaluation goal cell {goal_cell} is outside maze {maze.name!r} of shape {maze.shape}")
    if not maze.is_free(goal_cell):
        raise MazeError(f"evaluation goal cell {goal_cell} is a wall in maze {maze.name!r}")
    grid = maze.to_gym()
    for i, row in enumerate(grid):
        for j, code in enumerate(row):
            if (i, j) == goal_cell:
                row[j] = "g"
            elif code in ("r", "c"):
                row[j] = "r"
            elif code == "g":
                row[j] = 0
    if len(maze.free_cells()) < 2:
        raise MazeError(f"maze {maze.name!r} needs at least two free cells (a goal and a start)")
    maze.require_connected()
    return grid


def make_pointmaze_env(
    maze: str | MazeMap = "umaze",
    dense: bool = False,
    *,
    continuing_task: bool = True,
    reset_target: bool = False,
    max_episode_steps: int | None = None,
    maze_map: list | None = None,
    **kwargs: Any,
):
    """``gym.make`` a PointMaze env for a preset name or a :class:`MazeMap`.

    Args:
        maze: preset name or MazeMap (its grid is passed as ``maze_map``).
        dense: dense reward ``exp(-distance)`` instead of sparse ``distance <= 0.45``.
        continuing_task / reset_target: gymnasium-robotics' flags (data collection uses True / True).
        max_episode_steps: an int (gymnasium 1.x rejects floats such as 1e6); default: the env's.
        maze_map: override the grid passed to the env (e.g. an evaluation map with one goal cell).
    """
    import gymnasium as gym

    import_gymnasium_robotics()
    maze_obj = MazeMap.load(maze)
    if max_episode_steps is not None:
        if isinstance(max_episode_steps, bool) or int(max_episode_steps) != max_episode_steps:
            raise ValueError(f"max_episode_steps must be an integer, got {max_episode_steps!r}")
        max_episode_steps = int(max_episode_steps)
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        kwargs["max_episode_steps"] = max_episode_steps
    if maze_obj.scale != 1.0:
        raise MazeError(f"PointMaze uses cells of size 1, maze {maze_obj.name!r} has scale {maze_obj.scale}")
    return gym.make(
        pointmaze_env_id(maze_obj, dense),
        maze_map=maze_map if maze_map is not None else maze_obj.to_gym(),
        continuing_task=continuing_task,
        reset_target=reset_target,
        **kwargs,
    )


def make_pointmaze_eval_env(
    maze: str | MazeMap = "umaze",
    dense: bool = False,
    goal_cell: tuple[int, int] | None = None,
    max_episode_steps: int | None = None,
    **kwargs: Any,
):
    """The evaluation env of the recipe: one fixed goal cell, ``continuing_task=True``,
    ``reset_target=False`` (reward keeps accruing at the goal), D4RL episode lengths (300/600/800)."""
    maze_obj = MazeMap.load(maze)
    goal_cell = eval_goal_cell(maze_obj) if goal_cell is None else goal_cell
    steps = pointmaze_episode_steps(maze_obj) if max_episode_steps is None else max_episode_steps
    return make_pointmaze_env(
        maze_obj,
        dense,
        continuing_task=True,
        reset_target=False,
        max_episode_steps=steps,
        maze_map=eval_maze_map(maze_obj, goal_cell),
        **kwargs,
    )


def d4rl_ref_scores(env_name: str) -> tuple[float, float]:
    """D4RL's (ref_min_score, ref_max_score) for an env or dataset name.

    Accepts names such as ``maze2d-umaze-v1``, ``maze2d-medium-dense-v1``, ``hopper-medium-v2``,
    ``halfcheetah_medium_expert-v2`` or a file stem; raises KeyError listing the known names.
    """
    name = env_name.lower().replace("_", "-")
    name = re.sub(r"-v\d+$", "", name)
    name = name.replace("-sparse", "")
    if name.startswith("maze2d-"):
        parts = name.split("-")
        key = "-".join(parts[:2]) + ("-dense" if "dense" in parts[2:] else "")
    else:
        key = name.split("-")[0]
    if key not in D4RL_REF_SCORES:
        raise KeyError(
            f"no D4RL reference scores for {env_name!r}; known: {', '.join(sorted(D4RL_REF_SCORES))} "
            f"(locomotion names match any dataset of that env, e.g. hopper-medium-v2)"
        )
    return D4RL_REF_SCORES[key]
