"""The training objective: a weighted regression of the denoiser's output on its target."""

from __future__ import annotations

from typing import Sequence

import torch

from diffuser.data.layout import TrajectoryLayout

LOSS_TYPES = ("l2", "l1")


def loss_weights(layout: TrajectoryLayout, horizon: int, *, action_weight: float = 1.0,
                 loss_discount: float = 1.0, dim_weights: Sequence[float] | None = None) -> torch.Tensor:
    """Weights (H, D) of the per-entry loss.

    ones(H, D) × discount^t (normalised to mean 1 over t) × per-dimension weights, with the first
    action's entries set to ``action_weight`` (the first action is the one a receding-horizon policy
    executes, so the original Diffuser weights it 10× for locomotion).
    """
    D = layout.transition_dim
    if loss_discount <= 0:
        raise ValueError(f"loss_discount must be > 0, got {loss_discount}")
    discounts = loss_discount ** torch.arange(horizon, dtype=torch.float64)
    discounts = discounts / discounts.mean()
    weights = discounts[:, None].repeat(1, D)
    if dim_weights is not None:
        dim_weights = torch.as_tensor(list(dim_weights), dtype=torch.float64)
        if dim_weights.shape != (D,):
            raise ValueError(f"dim_weights needs {D} entries (one per transition dim), got {len(dim_weights)}")
        weights = weights * dim_weights
    weights[0, layout.action_slice] = action_weight
    return weights.float()


def weighted_loss(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                  loss_type: str = "l2") -> torch.Tensor:
    """Mean over all entries of weights × error; ``weights`` broadcasts against (B, H, D)."""
    diff = prediction - target
    if loss_type == "l2":
        err = diff.square()
    elif loss_type == "l1":
        err = diff.abs()
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}; valid: {', '.join(LOSS_TYPES)}")
    return (err * weights).mean()
