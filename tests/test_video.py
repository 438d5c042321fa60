"""MuJoCo plan/rollout videos: observations -> states, offscreen rendering, side-by-side, writing."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco

import numpy as np
import pytest

from diffuser.viz import mujoco_video as mv

W, H = 64, 48


def _gym():
    """gymnasium with mujoco importable, else skip: mujoco picks its GL backend at import and
    fails to import at all where MUJOCO_GL names a backend the machine lacks (e.g. no libEGL)."""
    gym = pytest.importorskip("gymnasium")
    try:
        import mujoco  # noqa: F401
    except Exception as e:
        pytest.skip(f"mujoco does not import (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {e!r}")
    return gym


def _hopper_rollout(steps: int = 6, seed: int = 0):
    """obs (T, 11), qpos (T, 6), qvel (T, 6) of a short random Hopper-v5 rollout, T = steps + 1."""
    gym = _gym()
    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    u = env.unwrapped
    out = [(obs, u.data.qpos.copy(), u.data.qvel.copy())]
    for _ in range(steps):
        obs, _, terminated, _, _ = env.step(env.action_space.sample())
        out.append((obs, u.data.qpos.copy(), u.data.qvel.copy()))
        if terminated:
            break
    env.close()
    return tuple(np.array(a) for a in zip(*out))


@pytest.fixture(scope="module")
def egl():
    """Skip rendering tests where offscreen (EGL) rendering cannot be set up."""
    try:
        mv.render_states("Hopper-v5", np.zeros((1, 6)) + [0, 1.25, 0, 0, 0, 0], np.zeros((1, 6)), size=(W, H))
    except Exception as e:  # missing libEGL, no GPU/Mesa driver, mujoco/gymnasium absent...
        pytest.skip(f"MuJoCo offscreen rendering unavailable (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {e!r}")


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"])
def test_dims_table_matches_env(env_id):
    # The module hard-codes (nq, nv, dt) so that it needs no mujoco for conversion; check them.
    gym = _gym()
    env = gym.make(env_id)
    nq, nv, dt = mv._DIMS[env_id]
    assert (env.unwrapped.model.nq, env.unwrapped.model.nv) == (nq, nv)
    assert env.unwrapped.dt == pytest.approx(dt)
    assert env.observation_space.shape == (nq - 1 + nv,)
    env.close()


def test_observations_round_trip_hopper():
    obs, qpos, qvel = _hopper_rollout()
    assert len(obs) >= 3

    p, v = mv.observations_to_states("Hopper-v5", obs, x=qpos[:, 0])
    np.testing.assert_array_equal(p, qpos)  # with the true x, qpos is recovered exactly
    np.testing.assert_array_equal(v, np.clip(qvel, -10, 10))  # the obs clips qvel (no-op here)

    p, v = mv.observations_to_states("Hopper-v5", obs, x0=qpos[0, 0])
    np.testing.assert_array_equal(p[:, 1:], qpos[:, 1:])
    # x from the trapezoidal rule on the end-of-step velocities. If vx is monotone within a step,
    # the step's true displacement lies between dt*v0 and dt*v1, so the trapezoid is off by at
    # most dt*|v1 - v0|/2 per step; summed over steps that is the bound below.
    dt = mv._DIMS["Hopper-v5"][2]
    bound = np.concatenate([[0.0], np.cumsum(0.5 * dt * np.abs(np.diff(qvel[:, 0])))])
    assert p[0, 0] == qpos[0, 0]
    assert np.all(np.abs(p[:, 0] - qpos[:, 0]) <= bound + 1e-9)


def test_wrong_observation_size_raises():
    with pytest.raises(ValueError, match=r"Hopper-v5.*11.*\(4, 17\)"):
        mv.observations_to_states("Hopper-v5", np.zeros((4, 17)))
    with pytest.raises(ValueError, match="17"):
        mv.observations_to_states("Walker2d-v5", np.zeros(17))  # missing the time axis
    with pytest.raises(ValueError, match=r"x of shape \(4,\)"):
        mv.observations_to_states("HalfCheetah-v5", np.zeros((4, 17)), x=np.zeros(3))


def test_render_states_wrong_shapes_raise():
    # Checked before any env is made, so this needs no rendering.
    with pytest.raises(ValueError, match=r"qpos of shape \(T>=1, 6\)"):
        mv.render_states("Hopper-v5", np.zeros((3, 9)), np.zeros((3, 6)))
    with pytest.raises(ValueError, match=r"qvel of shape \(3, 6\)"):
        mv.render_states("Hopper-v5", np.zeros((3, 6)), np.zeros((2, 6)))


def test_render_states_shape_and_content(egl):
    obs, qpos, qvel = _hopper_rollout(steps=2)
    frames = mv.render_states("Hopper-v5", qpos, qvel, size=(W, H))
    assert frames.shape == (len(qpos), H, W, 3) and frames.dtype == np.uint8
    for f in frames:  # not one flat colour: floor, sky and robot are all there
        assert len(np.unique(f.reshape(-1, 3), axis=0)) > 10


def test_side_by_side():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    out = mv.side_by_side(a, b)
    assert out.shape == (3, H, 2 * W, 3) and out.dtype == np.uint8
    plain = mv.side_by_side(a, b, labels=None)
    np.testing.assert_array_equal(plain[:, :, : W - 1], a[:, :, : W - 1])  # only the seam changes
    np.testing.assert_array_equal(plain[:, :, W + 1:], b[:, :, 1:])
    assert (out[:, :12, :30] != plain[:, :12, :30]).any()  # the label is burnt in top-left
    with pytest.raises(ValueError, match="same shape"):
        mv.side_by_side(a, b[:2])


def test_write_video_reads_back(tmp_path):
    iio = pytest.importorskip("imageio.v3")
    rng = np.random.default_rng(0)
    # Distinct frames: GIF writers merge identical consecutive frames.
    frames = rng.integers(0, 256, (5, H, W, 3), dtype=np.uint8)
    written = mv.write_video(frames, tmp_path / "clip.mp4", fps=10)
    assert written.suffix == (".mp4" if mv._mp4_available() else ".gif")
    assert written.exists() and sorted(tmp_path.iterdir()) == [written]  # no temp file left
    back = iio.imread(written, index=None)
    assert back.shape[:3] == (5, H, W)
    with pytest.raises(ValueError, match="uint8"):
        mv.write_video(frames.astype(np.float32), tmp_path / "bad.gif")


def test_plan_rollout_video(egl, tmp_path, monkeypatch):
    obs, qpos, qvel = _hopper_rollout(steps=4)
    noisy = obs + np.random.default_rng(0).normal(0, 0.05, obs.shape)
    segments = [
        {"plan": noisy[:3], "executed": obs[:2], "x": qpos[:2, 0]},  # plan longer: 3 frames
        {"plan": noisy[2:3], "executed": obs[2:4], "x": qpos[2:4, 0]},  # executed longer: 2
    ]
    seen = {}
    real_write = mv.write_video

    def spy(frames, path, fps=30):
        seen["shape"] = frames.shape
        return real_write(frames, path, fps)

    monkeypatch.setattr(mv, "write_video", spy)
    written = mv.plan_rollout_video("Hopper-v5", segments, tmp_path / "plan.mp4", size=(W, H))
    assert seen["shape"] == (5, H, 2 * W, 3)
    assert written.exists() and written.stat().st_size > 0
