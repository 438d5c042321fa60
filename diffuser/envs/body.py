"""Where a Gymnasium MuJoCo locomotion env keeps facts about its body in the observation."""

from __future__ import annotations

__all__ = ["forward_speed_index"]


def forward_speed_index(env) -> int | None:
    """The observation coordinate of a Gymnasium MuJoCo locomotion env (Hopper, Walker2d, HalfCheetah, ...)
    that holds the root's forward velocity, qvel[0]; None for other envs. The observation is qpos (less
    the x position unless the env observes it) followed by qvel."""
    u = env.unwrapped
    model = getattr(u, "model", None)
    if model is None or not hasattr(u, "_exclude_current_positions_from_observation"):
        return None
    return int(model.nq) - (1 if u._exclude_current_positions_from_observation else 0)
