"""Readers (local Minari, D4RL HDF5), dataset preparation, and every bad input they can meet."""

from __future__ import annotations

import os

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from diffuser.data.d4rl import d4rl_ref_scores, guess_d4rl_env_name, load_d4rl_hdf5  # noqa: E402
from diffuser.data.episodes import Episode  # noqa: E402
from diffuser.data.minari_io import (  # noqa: E402
    CorruptDatasetError, DatasetError, DatasetNotFoundError, dataset_info, list_local_datasets, load_episodes,
    normalized_score)
from diffuser.data.prepare import (  # noqa: E402
    check_dims, dataset_stats, goal_segments, reached_goal, stitch_contiguous)

STEPS, RESET = 2000, 1000


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A datasets root holding one tiny generated PointMaze dataset (module-wide: generated once)."""
    pytest.importorskip("gymnasium_robotics")
    pytest.importorskip("minari")
    root = tmp_path_factory.mktemp("datasets")
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    from diffuser.collect.pointmaze import collect_pointmaze

    collect_pointmaze("umaze", steps=STEPS, progress=False, ref_episodes=2, reset_interval=RESET)
    yield root
    if old is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = old


ID = "diffuser/pointmaze/umaze-v2"


def _write_box_dataset(dataset_id, observations, n_episodes=2):
    """A tiny Minari dataset with plain Box observations, written with Minari's own API."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    T = len(observations) - 1
    buffers = [EpisodeBuffer(id=k, observations=observations, actions=np.zeros((T, 1), np.float32),
                             rewards=np.ones(T), terminations=np.eye(1, T, T - 1, dtype=bool)[0],
                             truncations=np.zeros(T, bool)) for k in range(n_episodes)]
    box = gym.spaces.Box(-np.inf, np.inf, (observations.shape[1],), np.float64)
    act = gym.spaces.Box(-1, 1, (1,), np.float32)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(dataset_id, buffers, observation_space=box, action_space=act,
                                           algorithm_name="test", code_permalink="test", author="t",
                                           author_email="t", description="test")


def test_load_pointmaze_episodes(store):
    episodes = load_episodes(ID)
    assert sum(len(ep) for ep in episodes) == STEPS
    ep = episodes[0]
    assert ep.observations.shape == (len(ep), 4) and ep.observations.dtype == np.float32
    assert ep.actions.shape == (len(ep), 2) and ep.final_observation.shape == (4,)
    assert ep.infos["desired_goal"].shape == ep.infos["achieved_goal"].shape == (len(ep), 2)
    np.testing.assert_array_equal(ep.infos["achieved_goal"], ep.observations[:, :2])
    assert set(ep.infos) == {"desired_goal", "achieved_goal", "info/success"}
    assert ep.truncated and not ep.terminated
    assert len(load_episodes(ID, max_episodes=3)) == 3


def test_dataset_info_list_and_normalized_score(store):
    info = dataset_info(ID)
    assert info["total_steps"] == STEPS and info["env_id"] == "PointMaze_UMaze-v3"
    assert info["eval_max_episode_steps"] == 300 and info["observation_dim"] == 4 and info["action_dim"] == 2
    assert list(list_local_datasets()) == [ID]
    lo, hi = info["ref_min_score"], info["ref_max_score"]
    np.testing.assert_allclose(normalized_score(ID, [lo, hi]), [0.0, 100.0])
    np.testing.assert_allclose(normalized_score((10.0, 20.0), 15.0), 50.0)
    np.testing.assert_allclose(normalized_score(info, hi), 100.0)
    with pytest.raises(DatasetError, match="equal"):
        normalized_score((1.0, 1.0), 3.0)


def test_prepare_segments_stats_and_stitching(store, capsys):
    episodes = load_episodes(ID)
    segments = goal_segments(episodes)
    # Cut only by the reseeded reset at step 1000 and by the end of the run: the rest reach their goal.
    assert len(episodes) - 2 <= len(segments) < len(episodes)
    assert all(reached_goal(ep) for ep in segments)
    stats = dataset_stats(episodes)
    assert "reach the goal" in capsys.readouterr().out
    assert stats.episodes.count == len(episodes) and stats.contiguous_streams == STEPS // RESET
    assert abs(stats.success_fraction - len(segments) / len(episodes)) < 1e-9

    streams = stitch_contiguous(episodes)
    assert [len(s) for s in streams] == [RESET, RESET]
    assert sum(int(s.infos["segment_end"].sum()) for s in streams) == len(episodes)
    assert not streams[0].truncations[:-1].any() and streams[0].truncated
    np.testing.assert_array_equal(streams[1].final_observation, episodes[-1].final_observation)
    # Without final observations nothing can be shown contiguous, so nothing is joined.
    bare = [Episode(ep.observations, ep.actions, ep.rewards, ep.terminations, ep.truncations) for ep in episodes[:5]]
    assert len(stitch_contiguous(bare)) == 5


def test_check_dims(store):
    episodes = load_episodes(ID, max_episodes=2)
    check_dims(episodes, 4, 2)
    with pytest.raises(ValueError, match="observation dim 4 and action dim 2, but the checkpoint expects"):
        check_dims(episodes, 17, 6)


@pytest.mark.parametrize("bad_id, match", [
    ("pointmaze-umaze", "not a versioned"),
    ("diffuser/pointmaze/umaze", "not a versioned"),
    ("x/pointmaze-umaze-v2", "not a valid"),
    ("umaze", "not a versioned"),
    ("diffuser/pointmaze/medium-v2", "no local Minari dataset"),
])
def test_unknown_or_unversioned_ids_list_local_datasets_and_the_command(store, bad_id, match):
    with pytest.raises(DatasetNotFoundError, match=match) as err:
        load_episodes(bad_id)
    msg = str(err.value)
    assert ID in msg and "diffuser collect pointmaze --maze" in msg


def test_official_id_explains_no_download(store):
    with pytest.raises(DatasetNotFoundError, match="cannot be downloaded") as err:
        dataset_info("D4RL/pointmaze/large-dense-v2")
    assert "diffuser collect pointmaze --maze large --dense" in str(err.value)
    with pytest.raises(DatasetNotFoundError) as err:
        load_episodes("mujoco/hopper/medium-v0")
    # locomotion ids name the locomotion collector (a local stand-in under diffuser/mujoco/...), never pointmaze
    assert "diffuser collect locomotion --env hopper --level medium" in str(err.value)
    assert "collect pointmaze" not in str(err.value)
    with pytest.raises(DatasetNotFoundError) as err:
        load_episodes("someone/cartpole/simple-v0")
    assert "diffuser collect" not in str(err.value)


def test_corrupted_and_truncated_files(store):
    import shutil

    src = store / "diffuser" / "pointmaze" / "umaze-v2"
    for name, damage, match in [
        ("trunc-v0", lambda d: _truncate(d / "data" / "main_data.hdf5"), "damaged|cannot be opened"),
        ("badmeta-v0", lambda d: (d / "data" / "metadata.json").write_text("{not json"), "not valid JSON"),
        ("nometa-v0", lambda d: (d / "data" / "metadata.json").unlink(), "no metadata.json"),
    ]:
        dst = store / "broken" / name
        shutil.copytree(src, dst)
        meta = dst / "data" / "metadata.json"
        meta.write_text(meta.read_text().replace(ID, f"broken/{name}"))
        damage(dst)
        with pytest.raises(CorruptDatasetError, match=match):
            load_episodes(f"broken/{name}")
        assert "error" in list_local_datasets().get(f"broken/{name}", {"error": ""})
        shutil.rmtree(dst)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def test_box_observations_and_nan(store):
    obs = np.arange(12, dtype=np.float64).reshape(4, 3)
    _write_box_dataset("tests/box-v0", obs)
    episodes = load_episodes("tests/box-v0")
    assert len(episodes) == 2 and episodes[0].observations.shape == (3, 3) and episodes[0].terminated
    np.testing.assert_array_equal(episodes[0].final_observation, obs[3])
    bad = obs.copy()
    bad[1, 2] = np.nan
    _write_box_dataset("tests/nan-v0", bad)
    with pytest.raises(DatasetError, match="NaN"):
        load_episodes("tests/nan-v0")


# ----------------------------------------------------------------------------------------------- D4RL
def _write_d4rl(path, n=10, ends=(3, 7), terminal_at=(), nan_at=None, drop=None, next_obs=True, extra=None):
    obs = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    if nan_at is not None:
        obs[nan_at, 0] = np.nan
    timeouts = np.zeros(n, bool)
    timeouts[list(ends)] = True
    terminals = np.zeros(n, bool)
    terminals[list(terminal_at)] = True
    data = {"observations": obs, "actions": np.ones((n, 2), np.float32), "rewards": np.arange(n, dtype=np.float32),
            "terminals": terminals, "timeouts": timeouts, "infos/goal": np.tile([1.0, 2.0], (n, 1)),
            "infos/qpos": obs[:, :2], "infos/qvel": obs[:, 2:]}
    if next_obs:
        data["next_observations"] = obs + 100
    data.update(extra or {})
    with h5py.File(path, "w") as f:
        for k, v in data.items():
            if k != drop:
                f.create_dataset(k, data=v)


def test_d4rl_reader_splits_at_terminals_and_timeouts(tmp_path):
    path = tmp_path / "maze2d-umaze-v1.hdf5"
    _write_d4rl(path, terminal_at=(5,))
    episodes = load_d4rl_hdf5(path)
    assert [len(e) for e in episodes] == [4, 2, 2, 2]
    assert [e.truncated for e in episodes] == [True, False, True, True]  # the last: the file stops
    assert episodes[1].terminated
    np.testing.assert_array_equal(episodes[0].final_observation, np.arange(12, 16) + 100)
    assert episodes[0].infos["goal"].shape == (4, 2) and set(episodes[0].infos) == {"goal", "qpos", "qvel"}
    np.testing.assert_array_equal(np.concatenate([e.rewards for e in episodes]), np.arange(10))
    assert len(load_d4rl_hdf5(path, max_episodes=2)) == 2
    assert guess_d4rl_env_name(path) == "maze2d-umaze-v1"
    _write_d4rl(tmp_path / "plain.hdf5", next_obs=False, drop="timeouts")
    flat = load_d4rl_hdf5(tmp_path / "plain.hdf5")
    assert len(flat) == 1 and flat[0].final_observation is None


def test_d4rl_bad_inputs(tmp_path):
    with pytest.raises(DatasetNotFoundError):
        load_d4rl_hdf5(tmp_path / "missing.hdf5")
    _write_d4rl(tmp_path / "noact.hdf5", drop="actions")
    with pytest.raises(DatasetError, match="missing \\['actions'\\]"):
        load_d4rl_hdf5(tmp_path / "noact.hdf5")
    _write_d4rl(tmp_path / "short.hdf5", extra={"rewards": np.zeros(7, np.float32)})
    with pytest.raises(CorruptDatasetError, match="disagree in length"):
        load_d4rl_hdf5(tmp_path / "short.hdf5")
    _write_d4rl(tmp_path / "nan.hdf5", nan_at=5)
    with pytest.raises(DatasetError, match="NaN"):
        load_d4rl_hdf5(tmp_path / "nan.hdf5")
    (tmp_path / "text.hdf5").write_text("not an hdf5 file")
    with pytest.raises(CorruptDatasetError, match="not HDF5"):
        load_d4rl_hdf5(tmp_path / "text.hdf5")
    _write_d4rl(tmp_path / "cut.hdf5")
    _truncate(tmp_path / "cut.hdf5")
    with pytest.raises(CorruptDatasetError):
        load_d4rl_hdf5(tmp_path / "cut.hdf5")


def test_d4rl_reference_scores():
    assert d4rl_ref_scores("maze2d-umaze-v1") == (23.85, 161.86)
    assert d4rl_ref_scores("maze2d-large-dense-v1") == (30.57, 303.49)
    assert d4rl_ref_scores("maze2d-medium-sparse-v1") == (13.13, 277.39)
    assert d4rl_ref_scores("hopper-medium-expert-v2")[1] == 3234.3
    assert d4rl_ref_scores("halfcheetah_medium-v2")[1] == 12135.0
    with pytest.raises(KeyError, match="known"):
        d4rl_ref_scores("antmaze-umaze-v0")
    assert guess_d4rl_env_name("/data/something.hdf5") is None
