"""The termination rule of Gymnasium's legged MuJoCo envs, applied to planned states.

Hopper and Walker2d end an episode when the body leaves a "healthy" region: the torso height outside a
range, the torso angle outside a range, or (Hopper) any other observed coordinate outside a wide box.
The same test on a plan's predicted states tells a planner which of its candidate plans expects to fall,
before any of them is executed. The ranges are read from the env itself, so an env made with other
``healthy_*`` arguments is judged by its own rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["HealthRule"]


@dataclass(frozen=True)
class HealthRule:
    """Open intervals that observation coordinates must stay inside for the episode to go on."""

    z_index: int  # torso height in the observation
    z_range: tuple[float, float]
    angle_index: int | None = None  # torso angle in the observation
    angle_range: tuple[float, float] | None = None
    state_start: int | None = None  # observation[state_start:] must lie inside state_range (Hopper)
    state_range: tuple[float, float] | None = None

    @classmethod
    def from_env(cls, env) -> HealthRule | None:
        """The rule of a Gymnasium MuJoCo env (wrapped or not), or None where the env never terminates
        (HalfCheetah, or ``terminate_when_unhealthy=False``)."""
        env = env.unwrapped
        if not getattr(env, "_terminate_when_unhealthy", False) or not hasattr(env, "_healthy_z_range"):
            return None
        # The observation starts at qpos[1] (height) unless the env also observes the x position.
        offset = 0 if getattr(env, "_exclude_current_positions_from_observation", True) else 1
        angle = getattr(env, "_healthy_angle_range", None)
        state = getattr(env, "_healthy_state_range", None)
        return cls(z_index=offset, z_range=tuple(map(float, env._healthy_z_range)),
                   angle_index=None if angle is None else offset + 1,
                   angle_range=None if angle is None else tuple(map(float, angle)),
                   state_start=None if state is None else offset + 1,
                   state_range=None if state is None else tuple(map(float, state)))

    def healthy(self, states: torch.Tensor) -> torch.Tensor:
        """(..., S) raw observations -> (...) bool: inside every range."""
        ok = _inside(states[..., self.z_index], self.z_range)
        if self.angle_index is not None:
            ok &= _inside(states[..., self.angle_index], self.angle_range)
        if self.state_start is not None:
            ok &= _inside(states[..., self.state_start:], self.state_range).all(-1)
        return ok

    def healthy_steps(self, states: torch.Tensor) -> torch.Tensor:
        """(B, H, S) planned states -> (B,) how many steps each plan stays healthy before it first is not
        (H for a plan that never falls)."""
        return self.healthy(states).long().cumprod(dim=1).sum(dim=1)


def _inside(x: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    return (x > bounds[0]) & (x < bounds[1])
