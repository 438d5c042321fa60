"""The trajectory layout: where actions and states live inside one transition vector.

Chosen once, here: a transition is ``[actions | states]`` (the original Diffuser's order), so a
trajectory tensor is ``(B, H, A + S)`` with ``x[..., :A]`` the actions and ``x[..., A:]`` the states.
Every other module asks this class instead of slicing by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TrajectoryLayout:
    """Sizes of one transition: ``action_dim`` actions followed by ``observation_dim`` states."""

    observation_dim: int
    action_dim: int

    def __post_init__(self) -> None:
        if self.observation_dim < 1 or self.action_dim < 0:
            raise ValueError(
                f"TrajectoryLayout needs observation_dim >= 1 and action_dim >= 0, "
                f"got observation_dim={self.observation_dim}, action_dim={self.action_dim}"
            )

    @property
    def transition_dim(self) -> int:
        return self.action_dim + self.observation_dim

    @property
    def action_slice(self) -> slice:
        return slice(0, self.action_dim)

    @property
    def state_slice(self) -> slice:
        return slice(self.action_dim, self.transition_dim)

    def state_dims(self, dims: list[int] | None = None) -> list[int]:
        """Transition indices of state dimensions ``dims`` (all states when None)."""
        dims = range(self.observation_dim) if dims is None else dims
        out = []
        for d in dims:
            if not 0 <= d < self.observation_dim:
                raise ValueError(f"state dim {d} out of range for observation_dim={self.observation_dim}")
            out.append(self.action_dim + d)
        return out

    def actions(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H, D) -> (..., H, A)"""
        return x[..., self.action_slice]

    def states(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H, D) -> (..., H, S)"""
        return x[..., self.state_slice]

    def join(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """(..., H, S), (..., H, A) -> (..., H, A + S)"""
        return torch.cat([actions, states], dim=-1)

    def to_dict(self) -> dict:
        return {"observation_dim": self.observation_dim, "action_dim": self.action_dim}

    @classmethod
    def from_dict(cls, d: dict) -> "TrajectoryLayout":
        return cls(observation_dim=int(d["observation_dim"]), action_dim=int(d["action_dim"]))
