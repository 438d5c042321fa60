"""PointMaze generation: the controller, the recipe's episode structure, Minari metadata, atomicity."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")
minari = pytest.importorskip("minari")

from diffuser.collect import pointmaze as pm  # noqa: E402
from diffuser.collect.pointmaze import collect_pointmaze, collect_pointmaze_report  # noqa: E402
from diffuser.envs.maze import PRESET_NAMES, MazeError, MazeMap  # noqa: E402
from diffuser.envs.registry import (  # noqa: E402
    POINTMAZE_EPISODE_STEPS, eval_goal_cell, make_pointmaze_env, pointmaze_env_id)
from diffuser.envs.waypoint import WaypointController  # noqa: E402

STEPS, RESET = 3000, 1000  # resets every 1000 steps so that a tiny run has reseeded resets too


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    return tmp_path / "datasets"


def _tiny(dataset_id=None, **kw):
    kw.setdefault("steps", STEPS)
    kw.setdefault("reset_interval", RESET)
    kw.setdefault("ref_episodes", 2)
    return collect_pointmaze_report("umaze", progress=False, dataset_id=dataset_id, **kw)


@pytest.mark.parametrize("maze", PRESET_NAMES)
def test_noiseless_controller_reaches_goal_from_every_free_cell(maze):
    m = MazeMap.preset(maze)
    env = make_pointmaze_env(m, continuing_task=True, reset_target=False)
    u = env.unwrapped
    goal = eval_goal_cell(m)
    limit = POINTMAZE_EPISODE_STEPS[maze]
    for k, start in enumerate(c for c in m.free_cells() if c != goal):
        ctl = WaypointController(m, rng=k)
        obs, _ = u.reset(seed=k, options={"goal_cell": np.array(goal), "reset_cell": np.array(start)})
        for t in range(limit):
            obs, _, _, _, info = u.step(ctl(obs))
            if info["success"]:
                break
        assert info["success"], f"{maze}: no success from {start} to {goal} in {limit} steps"
    env.close()


def test_shortest_planner_is_faster_than_dfs_in_open():
    m = MazeMap.preset("open")
    steps = {}
    for planner in ("dfs", "shortest"):
        env = make_pointmaze_env(m, continuing_task=True, reset_target=False)
        ctl = WaypointController(m, planner=planner, rng=0)
        obs, _ = env.unwrapped.reset(seed=0, options={"goal_cell": np.array((3, 5)), "reset_cell": np.array((1, 1))})
        for t in range(300):
            obs, _, _, _, info = env.unwrapped.step(ctl(obs))
            if info["success"]:
                break
        steps[planner] = t
    assert steps["shortest"] < steps["dfs"]


def test_controller_noise_is_seeded_and_clipped():
    obs = {"observation": np.array([-1.0, 1.0, 0.0, 0.0]), "desired_goal": np.array([-1.0, -1.0])}
    a = [WaypointController("umaze", action_noise=0.5, rng=3)(obs) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    assert a[0].dtype == np.float32 and np.all(np.abs(a[0]) <= 1)
    with pytest.raises(ValueError, match="planner"):
        WaypointController("umaze", planner="qiteration")


def test_tiny_dataset_loads_back_through_minari(store):
    report = _tiny()
    assert report.dataset_id == "diffuser/pointmaze/umaze-v2"
    ds = minari.load_dataset(report.dataset_id)
    assert ds.total_steps == STEPS and ds.total_episodes == report.episodes > 10
    meta = ds.storage.metadata
    assert meta["ref_min_score"] == report.ref_min_score and meta["ref_max_score"] == report.ref_max_score
    assert report.ref_max_score > 100 > report.ref_min_score >= 0  # the controller reaches the goal, noise rarely
    assert meta["num_episodes_average_score"] == 2
    assert "DFS" in meta["algorithm_name"] and "recipe of D4RL/pointmaze-v2" in meta["description"]
    assert meta["code_permalink"] is None or "diffuser/collect/pointmaze.py" in meta["code_permalink"]
    assert ds.spec.env_spec.id == "PointMaze_UMaze-v3" and ds.spec.env_spec.max_episode_steps == STEPS
    assert ds.spec.env_spec.kwargs["continuing_task"] and ds.spec.env_spec.kwargs["reset_target"]
    eval_spec = json.loads(meta["eval_env_spec"])
    assert eval_spec["max_episode_steps"] == 300 and eval_spec["kwargs"]["reset_target"] is False
    assert eval_spec["kwargs"]["maze_map"][1][1] == "g"
    np.testing.assert_allclose(minari.get_normalized_score(ds, np.array([report.ref_max_score])), [1.0])

    episodes = list(ds.iterate_episodes())
    resets = {0, RESET, 2 * RESET}
    t = 0
    for k, ep in enumerate(episodes):
        n = len(ep)
        assert ep.observations["observation"].shape == (n + 1, 4)
        assert ep.observations["desired_goal"].shape == ep.observations["achieved_goal"].shape == (n + 1, 2)
        assert ep.actions.shape == (n, 2) and ep.actions.dtype == np.float32
        assert ep.infos["success"].shape == (n + 1,)
        assert not ep.terminations.any() and ep.truncations[-1] and not ep.truncations[:-1].any()
        ends_at_reset = (t + n) in resets or t + n == STEPS
        # Every episode ends at a success (the goal moves) unless a reseeded reset or the run's end cut it.
        assert ep.infos["success"][-1] or ends_at_reset
        assert not ep.infos["success"][1:-1].any()
        if k + 1 < len(episodes) and not ends_at_reset:
            nxt = episodes[k + 1]
            # Contiguous: the next episode starts from this one's last observation, previous goal included.
            for key in ("observation", "desired_goal"):
                np.testing.assert_array_equal(nxt.observations[key][0], ep.observations[key][-1])
            assert not np.allclose(nxt.observations["desired_goal"][-1], ep.observations["desired_goal"][-1])
        t += n
    assert t == STEPS


def test_same_seed_same_dataset_and_fast_path_matches_env_step(store):
    a = _tiny("tt/a-v0", seed=7, dense=True)
    b = _tiny("tt/b-v0", seed=7, dense=True, fast=False)  # the env's own step(): must be identical
    c = _tiny("tt/c-v0", seed=8, dense=True)
    d = _tiny("tt/d-v0", seed=7)  # sparse: the dense variant shares its trajectories
    ea, eb, ec, ed = (list(minari.load_dataset(r.dataset_id).iterate_episodes()) for r in (a, b, c, d))
    assert len(ed) == len(ea)
    for x, y in zip(ea, ed):
        np.testing.assert_array_equal(x.observations["observation"], y.observations["observation"])
        np.testing.assert_array_equal(y.rewards, (x.rewards >= np.exp(-0.45)).astype(float))  # d <= 0.45
    assert len(ea) == len(eb) and a.ref_min_score == b.ref_min_score and a.ref_max_score == b.ref_max_score
    for x, y in zip(ea, eb):
        for key in ("observation", "desired_goal"):
            np.testing.assert_array_equal(x.observations[key], y.observations[key])
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.rewards, y.rewards)
    assert 0 < ea[0].rewards.max() <= 1 and len(np.unique(ea[0].rewards)) > 2  # dense exp(-d)
    assert len(ea) != len(ec) or not np.array_equal(ea[0].actions, ec[0].actions)


def test_existing_id_and_interrupted_generation_leave_no_dataset(store, monkeypatch):
    _tiny("tt/done-v0", steps=200)
    with pytest.raises(FileExistsError, match="already exists"):
        _tiny("tt/done-v0", steps=200)

    real = minari.create_dataset_from_buffers

    def write_then_die(*args, **kwargs):
        real(*args, **kwargs)  # the files are written (into the staging area) ...
        raise KeyboardInterrupt  # ... and then the run is interrupted

    monkeypatch.setattr(minari, "create_dataset_from_buffers", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        _tiny("tt/cut-v0", steps=200)
    assert not (store / "tt" / "cut-v0").exists()
    assert not [p for p in store.iterdir() if p.name.startswith(".staging")]
    assert "tt/cut-v0" not in minari.list_local_datasets()


def test_custom_map_file(store, tmp_path):
    f = tmp_path / "corridor.txt"
    f.write_text("#######\n#.....#\n#.###.#\n#.....#\n#######\n")
    report = collect_pointmaze_report(map_file=f, steps=400, ref_episodes=1, progress=False)
    assert report.dataset_id == "diffuser/pointmaze/custom-corridor-v0"
    ds = minari.load_dataset(report.dataset_id)
    assert ds.spec.env_spec.kwargs["maze_map"] == MazeMap.from_file(f).to_gym()
    assert pointmaze_env_id(MazeMap.from_file(f)) == "PointMaze_UMaze-v3"


@pytest.mark.parametrize(
    "text, match",
    [
        ("#####\n#####\n#####\n", "no free cell"),
        ("#####\n#.#.#\n#####\n", "unreachable"),
        ("#####\n#...#\n#..#.\n#####\n", "surrounded by walls"),
        ("###\n#.#\n###\n", "two free cells"),
    ],
)
def test_bad_maps_are_refused(store, tmp_path, text, match):
    f = tmp_path / "bad.txt"
    f.write_text(text)
    with pytest.raises(MazeError, match=match):
        collect_pointmaze(map_file=f, steps=100, progress=False, ref_episodes=1)
    assert not store.exists() or not any(store.rglob("metadata.json"))


def test_bad_arguments(store):
    with pytest.raises(ValueError, match="steps"):
        collect_pointmaze(steps=0, progress=False)
    with pytest.raises(ValueError, match="planner"):
        collect_pointmaze(steps=10, planner="astar", progress=False)
    with pytest.raises(ValueError, match="versioned"):
        collect_pointmaze(steps=10, dataset_id="no-version", progress=False)
    with pytest.raises(ValueError, match="integer"):
        make_pointmaze_env("umaze", max_episode_steps=1e6 + 0.5)


def test_cli_collect_and_datasets(store, capsys):
    from diffuser.collect.cli import add_collect_parser
    from diffuser.data.cli import add_datasets_parser

    parser = argparse.ArgumentParser(prog="diffuser")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add_collect_parser(sub)
    add_datasets_parser(sub)

    def run(*argv):
        args = parser.parse_args(list(argv))
        args.func(args)
        return capsys.readouterr()

    out = run("collect", "pointmaze", "--maze", "umaze", "--steps", "300", "--ref-episodes", "1", "--no-progress",
              "--dataset-id", "cli/umaze-v0")
    assert "wrote cli/umaze-v0" in out.out
    out = run("datasets", "list")
    assert "cli/umaze-v0" in out.out and "300" in out.out
    out = run("datasets", "info", "cli/umaze-v0")
    assert "total_episodes" in out.out and "reach the goal" in out.out
    with pytest.raises(SystemExit) as exit_info:
        run("datasets", "info", "D4RL/pointmaze/large-v2")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "cli/umaze-v0" in err and "diffuser collect pointmaze --maze large" in err
    with pytest.raises(SystemExit):
        run("collect", "pointmaze", "--steps", "300", "--dataset-id", "cli/umaze-v0", "--no-progress")
    assert "already exists" in capsys.readouterr().err


def test_code_permalink_is_honest():
    link = pm._code_permalink()  # this checkout is a git repository: the module at a real commit
    pattern = r"diffuser/collect/pointmaze\.py at git commit [0-9a-f]{40}( \+ uncommitted changes)?"
    assert link is None or re.fullmatch(pattern, link)
