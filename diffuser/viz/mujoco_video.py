"""Videos of MuJoCo locomotion plans: the executed rollout (left) next to the plan (right).

Works with Gymnasium's Hopper-v5, Walker2d-v5 and HalfCheetah-v5 (default observations, which
exclude the x position): observation = ``[qpos[1:], qvel]``. mujoco, gymnasium and imageio are
imported inside the functions so that this module imports on machines without them.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

# (nq, nv, dt) of the v5 envs with default kwargs; dt = frame_skip * timestep. Kept here so that
# turning observations into states needs no mujoco (nor a GL backend). Unknown ids are probed.
_DIMS = {
    "Hopper-v5": (6, 6, 0.008),
    "Walker2d-v5": (9, 9, 0.008),
    "HalfCheetah-v5": (9, 9, 0.05),
}


def _gym():
    # Must happen before mujoco is first imported: it picks its GL backend at import time.
    os.environ.setdefault("MUJOCO_GL", "egl")
    import gymnasium as gym

    return gym


def _dims(env_id: str) -> tuple[int, int, float]:
    if env_id not in _DIMS:
        env = _gym().make(env_id)
        model = env.unwrapped.model
        _DIMS[env_id] = (int(model.nq), int(model.nv), float(env.unwrapped.dt))
        env.close()
    return _DIMS[env_id]


def observations_to_states(env_id: str, observations: np.ndarray, x0: float = 0.0,
                           x: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """qpos and qvel from observations ``[qpos[1:], qvel]``.

    Args:
        observations: (T, S) with S = nq - 1 + nv (11 for Hopper, 17 for Walker2d/HalfCheetah).
        x0: x position at step 0, used only when ``x`` is None.
        x: optional (T,) known x positions (an executed rollout has them); used as given.
            Without it x is integrated from ``x0`` with the x-velocity qvel[0] (trapezoidal rule,
            which is ~10x closer to the simulator's x than a one-sided sum: the observed velocity
            is a sample at the end of each step of several substeps).

    Returns:
        qpos (T, nq), qvel (T, nv), float64. Hopper/Walker2d observations clip qvel to [-10, 10];
        that clipping cannot be undone (harmless for rendering, which only uses qpos).
    """
    nq, nv, dt = _dims(env_id)
    obs = np.asarray(observations, dtype=np.float64)
    size = nq - 1 + nv
    if obs.ndim != 2 or obs.shape[0] < 1 or obs.shape[1] != size:
        raise ValueError(f"{env_id}: expected observations of shape (T>=1, {size}) "
                         f"(qpos[1:] {nq - 1} + qvel {nv}), got {obs.shape}")
    T = obs.shape[0]
    qpos = np.empty((T, nq))
    qpos[:, 1:] = obs[:, : nq - 1]
    qvel = obs[:, nq - 1:].copy()
    if x is not None:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (T,):
            raise ValueError(f"{env_id}: expected x of shape ({T},), got {x.shape}")
        qpos[:, 0] = x
    else:
        vx = qvel[:, 0]
        qpos[0, 0] = x0
        qpos[1:, 0] = x0 + np.cumsum(0.5 * (vx[1:] + vx[:-1]) * dt)
    return qpos, qvel


def _make_render_env(env_id: str, size: tuple[int, int]):
    width, height = size
    env = _gym().make(env_id, render_mode="rgb_array", width=int(width), height=int(height))
    env.reset(seed=0)  # the model's data must be initialised before set_state
    return env


def _render_with(env, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    frames = []
    for p, v in zip(qpos, qvel):
        env.unwrapped.set_state(p, v)  # also runs mj_forward, so the tracking camera follows
        frames.append(np.asarray(env.render(), dtype=np.uint8).copy())  # the buffer is reused
    return np.stack(frames)


def render_states(env_id: str, qpos: np.ndarray, qvel: np.ndarray,
                  size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """Render states offscreen with the env's default (body-tracking) camera.

    Args:
        qpos: (T, nq); qvel: (T, nv). size: (width, height) in pixels.

    Returns:
        (T, height, width, 3) uint8 frames.
    """
    nq, nv, _ = _dims(env_id)
    qpos, qvel = np.asarray(qpos, dtype=np.float64), np.asarray(qvel, dtype=np.float64)
    if qpos.ndim != 2 or qpos.shape[1] != nq or qpos.shape[0] < 1:
        raise ValueError(f"{env_id}: expected qpos of shape (T>=1, {nq}), got {qpos.shape}")
    if qvel.shape != (qpos.shape[0], nv):
        raise ValueError(f"{env_id}: expected qvel of shape ({qpos.shape[0]}, {nv}), got {qvel.shape}")
    env = _make_render_env(env_id, size)
    try:
        return _render_with(env, qpos, qvel)
    finally:
        env.close()


def _check_frames(frames: np.ndarray, name: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1 or frames.dtype != np.uint8:
        raise ValueError(f"expected {name} as uint8 (T>=1, h, w, 3), got {frames.dtype} {frames.shape}")
    return frames


def _label_overlay(text: str, h: int, w: int) -> np.ndarray:
    """(h, w, 4) float RGBA in [0, 1]: white text on a translucent dark box, top-left corner."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=max(8, min(h, w) // 14))
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((3, 2), text, font=font)
    draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0, 140))
    draw.text((3, 2), text, font=font, fill=(255, 255, 255, 255))
    return np.asarray(img, dtype=np.float32) / 255.0


def side_by_side(left: np.ndarray, right: np.ndarray,
                 labels: Sequence[str] | None = ("executed", "plan")) -> np.ndarray:
    """Two videos next to each other, each panel labelled, with a thin separator line.

    Args:
        left, right: (T, h, w, 3) uint8 of equal shape. labels: (left, right) text, or None.

    Returns:
        (T, h, 2w, 3) uint8.
    """
    left, right = _check_frames(left, "left"), _check_frames(right, "right")
    if left.shape != right.shape:
        raise ValueError(f"left and right must have the same shape, got {left.shape} and {right.shape}")
    if labels is not None and len(labels) != 2:
        raise ValueError(f"expected 2 labels (left, right), got {len(labels)}")
    _, h, w, _ = left.shape
    panels = []
    for frames, text in zip((left, right), labels or ("", "")):
        if text:
            # One overlay per panel, alpha-blended into all frames at once.
            over = _label_overlay(str(text), h, w)
            alpha = over[..., 3:]
            frames = (frames * (1.0 - alpha) + over[..., :3] * 255.0 * alpha).round().astype(np.uint8)
        panels.append(frames)
    out = np.concatenate(panels, axis=2)
    out[:, :, w - 1: w + 1] = 255  # separator: the two columns at the seam, so the width stays 2w
    return out


def _mp4_available() -> bool:
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def write_video(frames: np.ndarray, path: str | Path, fps: int = 30) -> Path:
    """Write (T, h, w, 3) uint8 frames atomically; returns the path actually written.

    An .mp4 path is written as mp4 when imageio-ffmpeg is installed; otherwise (or for any
    suffix other than .mp4/.gif) the suffix is changed to .gif, written with pillow. GIF delays are whole centiseconds, so fps is approximate, and
    pillow merges identical consecutive frames into one longer frame (timing is kept).
    """
    frames = _check_frames(frames, "frames")
    path = Path(path)
    if path.suffix.lower() != ".gif" and not (path.suffix.lower() == ".mp4" and _mp4_available()):
        path = path.with_suffix(".gif")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target, so os.replace is an atomic rename; same suffix, so imageio
    # picks the right writer.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        if path.suffix.lower() == ".mp4":
            import imageio.v2 as iio2

            iio2.mimwrite(tmp, list(frames), fps=fps)
        else:
            import imageio.v3 as iio

            iio.imwrite(tmp, frames, duration=1000.0 / fps, loop=0)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _pad(frames: np.ndarray, n: int) -> np.ndarray:
    """Repeat the last frame so that there are n frames."""
    return np.concatenate([frames, np.repeat(frames[-1:], n - len(frames), axis=0)])


def plan_rollout_video(env_id: str, segments: Sequence[dict], path: str | Path, fps: int = 30,
                       size: tuple[int, int] = (320, 240)) -> Path:
    """One video of all segments: executed rollout on the left, plan on the right.

    Args:
        segments: dicts with "plan" (H, S) planned observations, "executed" (K, S) executed
            observations from the step the plan was made, and "x" (K,) executed x positions.
            The plan's x is integrated from ``x[0]``. The shorter side of each segment is padded
            by repeating its last frame.
        size: (width, height) of one panel; the video is (2 * width, height).

    Returns:
        The path written (see ``write_video`` for mp4 vs gif).
    """
    if len(segments) == 0:
        raise ValueError("segments is empty")
    states = []  # validate and convert everything before opening a GL context
    for i, seg in enumerate(segments):
        missing = {"plan", "executed", "x"} - set(seg)
        if missing:
            raise ValueError(f"segment {i} lacks {sorted(missing)}")
        x = np.asarray(seg["x"], dtype=np.float64)
        if x.ndim != 1 or len(x) < 1:
            raise ValueError(f"segment {i}: expected x of shape (K>=1,), got {x.shape}")
        executed = observations_to_states(env_id, seg["executed"], x=x)
        plan = observations_to_states(env_id, seg["plan"], x0=float(x[0]))
        states.append((executed, plan))
    env = _make_render_env(env_id, size)  # one env for all segments: a GL context is costly
    try:
        chunks = []
        for executed, plan in states:
            left, right = _render_with(env, *executed), _render_with(env, *plan)
            n = max(len(left), len(right))
            chunks.append(side_by_side(_pad(left, n), _pad(right, n)))
    finally:
        env.close()
    return write_video(np.concatenate(chunks), path, fps=fps)
