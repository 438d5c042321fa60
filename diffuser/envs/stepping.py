"""Stepping PointMaze fast: the env's own computation without its per-step Python overhead.

``PointMazeEnv.step`` spends most of its ~45 us per step on Python around one ~8 us ``mj_step``:
array copies for the observation dict, three ``np.linalg.norm`` calls, ``np.clip``, an ``mj_forward``
that ``mj_step`` repeats anyway. :func:`pointmaze_step_fn` returns a step function on plain floats that
does the same computation (identical numbers; tests/test_collect.py compares both paths), about 3x faster.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["pointmaze_step_fn", "StepFn"]

# action (2,) float32 in [-1, 1] -> (x, y, vx, vy, goal_x, goal_y, reward, success); the goal is the one the
# env showed in the returned observation (before a success moved it).
StepFn = Callable[[np.ndarray], tuple]


def pointmaze_step_fn(env, fast: bool = True) -> StepFn:
    """A step function for a PointMaze env (continuing task): the fast path when ``fast`` and the env has
    the structure it was checked against, else ``env.unwrapped.step`` itself."""
    u = env.unwrapped
    return (_fast_step_fn(u) if fast else None) or _env_step_fn(u)


def _fast_step_fn(u):
    """A step function equivalent to ``PointMazeEnv.step`` (continuing task) without its per-step Python
    overhead, or None when the env is not the structure it was checked against.

    It does what the env does: clip the velocity to [-5, 5], apply the action, one ``mj_step``, reward and
    success against the current goal, and on success the env's own ``update_goal`` (so goals are drawn from
    the env's seeded RNG; a no-op when reset_target=False). It skips what cannot change the trajectory: the
    ``mj_forward`` after setting the clipped velocity (``mj_step`` runs the same forward pass first),
    ``mj_rnePostConstraint`` (force diagnostics), the action clip (callers pass actions already in [-1, 1])
    and the observation dict copies.
    tests/test_collect.py checks that both paths give identical arrays.
    """
    import mujoco

    pe = getattr(u, "point_env", None)
    if pe is None or not u.continuing_task or getattr(pe, "render_mode", None):
        return None
    model, data = pe.model, pe.data
    if pe.frame_skip != 1 or (model.nq, model.nv, model.nu, model.na) != (2, 2, 2, 0):
        return None
    dense = u.reward_type == "dense"
    mj_step, clip, norm = mujoco.mj_step, np.clip, np.linalg.norm
    lo, hi = 0.449 ** 2, 0.451 ** 2

    def step(action):
        qvel = data.qvel
        clip(qvel, -5.0, 5.0, out=qvel)
        data.ctrl[:] = action
        mj_step(model, data)
        x, y = data.qpos.tolist()
        vx, vy = data.qvel.tolist()
        goal = u.goal
        gx, gy = goal.tolist()
        d2 = (x - gx) ** 2 + (y - gy) ** 2
        if lo < d2 < hi or dense:  # near the radius (or for exp(-d)) use the env's own norm, bit for bit
            dist = float(norm(np.array([x, y]) - goal, axis=-1))
            success = dist <= 0.45
        else:
            success = d2 <= lo
        reward = float(np.exp(-dist)) if dense else float(success)
        if success:
            u.update_goal(np.array([x, y]))
        return x, y, vx, vy, gx, gy, reward, success

    return step


def _env_step_fn(u):
    """The reference path: ``PointMazeEnv.step`` itself."""

    def step(action):
        obs, reward, _, _, info = u.step(action)
        x, y, vx, vy = obs["observation"].tolist()
        gx, gy = obs["desired_goal"].tolist()
        return x, y, vx, vy, gx, gy, float(reward), bool(info["success"])

    return step
