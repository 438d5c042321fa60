"""Maze geometry: presets, parsing, cell <-> xy, paths and bad maps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffuser.envs.maze import PRESET_NAMES, MazeError, MazeMap

maps = pytest.importorskip("gymnasium_robotics.envs.maze.maps")


@pytest.mark.parametrize(
    "name, attr", [("open", "OPEN"), ("umaze", "U_MAZE"), ("medium", "MEDIUM_MAZE"), ("large", "LARGE_MAZE")]
)
def test_presets_are_gymnasium_maps(name, attr):
    assert MazeMap.preset(name).to_gym() == getattr(maps, attr)


def test_cell_xy_matches_gymnasium_formula():
    from gymnasium_robotics.envs.maze.maze_v4 import Maze

    for name in PRESET_NAMES:
        m = MazeMap.preset(name)
        ref = Maze(m.to_gym(), 1.0, 0.4)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                xy = m.cell_to_xy((i, j))
                np.testing.assert_allclose(xy, ref.cell_rowcol_to_xy(np.array([i, j])))
                assert tuple(ref.cell_xy_to_rowcol(xy)) == (i, j)
                assert m.cell_of(xy + 0.3) == (i, j)
        cells = np.array(m.free_cells())
        np.testing.assert_array_equal(m.xy_to_cell(m.cell_to_xy(cells)), cells)


def test_umaze_geometry():
    m = MazeMap.preset("umaze")
    assert m.shape == (5, 5)
    np.testing.assert_allclose(m.cell_to_xy((1, 1)), [-1.0, 1.0])  # row 0 on top: y up
    assert m.cell_of([100.0, 0.0]) is None
    np.testing.assert_array_equal(m.is_free_xy(np.array([[-1.0, 1.0], [0.0, 0.0], [9.0, 9.0]])), [True, False, False])
    assert m.is_free_xy([1.0, -1.0]) is True
    rects = m.wall_rects()
    assert rects.shape == (int(m.walls.sum()), 4)
    assert m.bounds() == (-2.5, 2.5, -2.5, 2.5)
    np.testing.assert_allclose(rects.min(0)[:2], [-2.5, -2.5])
    np.testing.assert_allclose(rects.max(0)[2:], [2.5, 2.5])
    assert m.is_enclosed()
    assert m.diameter() == 6


def test_text_and_json_round_trip(tmp_path):
    text = "#####\n#g.r#\n#.#.#\n#...#\n#####\n"
    m = MazeMap.from_text(text, name="t")
    assert m.to_text() == text.strip()
    assert m.marked_cells("g") == [(1, 1)] and m.marked_cells("r") == [(1, 3)]
    assert MazeMap.from_json(json.dumps(m.to_gym())) == m
    assert MazeMap.from_json({"maze_map": m.to_gym()}) == m
    f = tmp_path / "mine.txt"
    f.write_text(text)
    assert MazeMap.from_file(f) == m and MazeMap.from_file(f).name == "mine"
    g = tmp_path / "mine.json"
    g.write_text(json.dumps(m.to_gym()))
    assert MazeMap.load(str(g)) == m
    assert MazeMap.load("umaze") == MazeMap.preset("umaze")


def test_published_dfs_path_and_shortest_path():
    m = MazeMap.preset("open")
    # Hand-traced from the published search (stack, neighbour order right, left, up, down).
    assert m.dfs_path((1, 1), (3, 5)) == [
        (1, 1), (2, 1), (3, 1), (3, 2), (3, 3), (2, 3), (1, 3), (1, 4), (1, 5), (2, 5), (3, 5)]
    assert len(m.shortest_path((1, 1), (3, 5))) == 7
    u = MazeMap.preset("umaze")
    assert u.dfs_path((1, 1), (3, 1)) == [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3), (3, 2), (3, 1)]
    assert u.path((2, 3), (2, 3)) == [(2, 3)]


def test_paths_are_valid_everywhere_in_medium():
    m = MazeMap.preset("medium")
    cells = m.free_cells()
    for a in cells[::3]:
        dist = m.distances(a)
        for b in cells:
            for path in (m.dfs_path(a, b), m.shortest_path(a, b)):
                assert path[0] == a and path[-1] == b
                assert all(m.is_free(c) for c in path)
                assert all(abs(p[0] - q[0]) + abs(p[1] - q[1]) == 1 for p, q in zip(path, path[1:]))
            assert len(m.shortest_path(a, b)) - 1 == dist[b] <= len(m.dfs_path(a, b)) - 1


@pytest.mark.parametrize(
    "text, match",
    [
        ("###\n###\n###", "no free cell"),
        ("####\n#..\n####", "row 1 has 3 cells"),
        ("###\n#x#\n###", "character 'x'"),
        ("", "empty"),
    ],
)
def test_bad_text_maps(text, match):
    with pytest.raises(MazeError, match=match):
        MazeMap.from_text(text)


def test_bad_json_and_files(tmp_path):
    with pytest.raises(MazeError, match="maze_map"):
        MazeMap.from_json({"rows": []})
    with pytest.raises(MazeError, match="holds 7"):
        MazeMap([[1, 1, 1], [1, 7, 1], [1, 1, 1]])
    bad = tmp_path / "bad.json"
    bad.write_text("[[1, 1], [1, 0")
    with pytest.raises(MazeError, match="not valid JSON"):
        MazeMap.from_file(bad)
    with pytest.raises(MazeError, match="does not exist"):
        MazeMap.from_file(tmp_path / "missing.txt")
    with pytest.raises(MazeError, match="unknown maze preset"):
        MazeMap.preset("huge")


def test_unreachable_goal_and_goals_in_walls():
    m = MazeMap.from_text("#####\n#.#.#\n#####")
    with pytest.raises(MazeError, match="unreachable"):
        m.shortest_path((1, 1), (1, 3))
    with pytest.raises(MazeError, match="unreachable"):
        m.dfs_path((1, 1), (1, 3))
    with pytest.raises(MazeError, match="unreachable"):
        m.require_connected()
    assert len(m.components()) == 2
    u = MazeMap.preset("umaze")
    with pytest.raises(MazeError, match="is a wall"):
        u.shortest_path((1, 1), (2, 2))
    with pytest.raises(MazeError, match="outside"):
        u.dfs_path((1, 1), (7, 1))
    with pytest.raises(ValueError, match="unknown planner"):
        u.path((1, 1), (3, 1), planner="astar")
