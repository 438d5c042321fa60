"""Hard constraints by inpainting: entries of the trajectory overwritten after every sampling step.

A :class:`Constraint` names one timestep, a set of transition dimensions and the values they must take
(already normalised). A list of them compiles into an :class:`Inpaint` — a boolean mask (H, D) and a
value tensor (B, H, D) — so that enforcing every constraint costs one ``torch.where`` per step and the
constrained entries equal their targets bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from diffuser.data.layout import TrajectoryLayout


@dataclass
class Constraint:
    """x[:, timestep, dims] = values.

    Args:
        timestep: index into the horizon; negative values count from the end (-1 = last step).
        dims: transition indices (see :class:`TrajectoryLayout` for where states and actions live).
        values: (B, len(dims)) or (len(dims),), broadcast over the batch.
    """

    timestep: int
    dims: Sequence[int]
    values: torch.Tensor


class Inpaint:
    """Compiled constraints for trajectories of shape (B, H, D)."""

    def __init__(self, mask: torch.Tensor, values: torch.Tensor):
        self.mask = mask  # (H, D) bool
        self.values = values  # (B, H, D)

    @classmethod
    def from_constraints(cls, constraints: Sequence[Constraint], shape: Sequence[int],
                         device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
                         ) -> "Inpaint | None":
        """Compile ``constraints`` for x of ``shape`` = (B, H, D). Returns None when there are none."""
        if not constraints:
            return None
        batch, horizon, dim = shape
        mask = torch.zeros(horizon, dim, dtype=torch.bool, device=device)
        values = torch.zeros(batch, horizon, dim, dtype=dtype, device=device)
        for c in constraints:
            t = c.timestep + horizon if c.timestep < 0 else c.timestep
            if not 0 <= t < horizon:
                raise ValueError(f"constraint timestep {c.timestep} is outside a horizon of {horizon}")
            dims = list(c.dims)
            if any(not 0 <= d < dim for d in dims):
                raise ValueError(f"constraint dims {dims} outside a transition of {dim} dims")
            v = torch.as_tensor(c.values, dtype=dtype, device=device)
            if v.ndim == 1:
                v = v.expand(batch, -1)
            if v.shape != (batch, len(dims)):
                raise ValueError(
                    f"constraint at t={c.timestep} on dims {dims} needs values of shape ({batch}, {len(dims)}) "
                    f"or ({len(dims)},), got {tuple(v.shape)}"
                )
            if not torch.isfinite(v).all():
                raise ValueError(f"constraint at t={c.timestep} has NaN or inf values")
            mask[t, dims] = True
            values[:, t, dims] = v
        return cls(mask, values)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, D) -> (B, H, D) with constrained entries set to their values."""
        return torch.where(self.mask, self.values, x)

    @property
    def loss_mask(self) -> torch.Tensor:
        """(H, D) float: 0 where an entry is constrained (nothing to learn there), 1 elsewhere."""
        return (~self.mask).float()


def state_constraints(layout: TrajectoryLayout, conditions: Mapping[int, torch.Tensor],
                      state_dims: Sequence[int] | None = None) -> list[Constraint]:
    """Constraints fixing (some) state dims at given timesteps.

    Args:
        conditions: {timestep: (B, k) or (k,) normalised values}, as produced by the window datasets
            (k = observation_dim) or by a planner (e.g. k = 2 for a goal position).
        state_dims: which state dims the values cover (default: all of them, in order).
    """
    dims = layout.state_dims(state_dims)
    return [Constraint(int(t), dims, v) for t, v in conditions.items()]
