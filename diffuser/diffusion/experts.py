"""Experts: the score terms that meet in the sampling loop.

A plan is drawn from p̃(τ) ∝ p_θ(τ) · Π_i h_i(τ)^{w_i}. At noise level t each factor contributes a score
∇ log h_i, and the loop sums them with their weights. Everything is expressed in ε-units
(ε = -σ_t · score), the currency every sampler understands, so a combined prediction is simply
Σ_i w_i ε_i. A single diffusion model is the one-expert case; value guidance, analytic costs,
classifier-free deltas and further diffusion models are more experts, never another loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from diffuser.diffusion.predictions import check_prediction_type, to_x0_eps


@dataclass(frozen=True)
class NoiseLevel:
    """Where the loop stands: step t with x_t = alpha · x_0 + sigma · ε, shared by the whole batch."""

    t: int  # diffusion step in {0, …, T-1}
    alpha: float  # √ᾱ_t
    sigma: float  # √(1 - ᾱ_t)
    t_batch: torch.Tensor  # (B,) long, t repeated for every sample, as networks take it


@runtime_checkable
class Expert(Protocol):
    """One score term. ``weight`` multiplies its contribution (negative weights negate it)."""

    weight: float
    #: True when the expert differentiates through its input (value or cost gradients): the loop then
    #: runs under no_grad instead of inference_mode so that the expert may enable autograd locally.
    needs_grad: bool

    def epsilon(self, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        """ε-prediction (B, H, D) at noisy x (B, H, D) and noise level ``level``."""
        ...


class DenoiserExpert:
    """A trained denoiser network as an expert.

    Args:
        network: ``network(x (B, H, D), t (B,), **kwargs) -> (B, H, D)``.
        prediction_type: what the network outputs: "epsilon", "x0" or "v".
        weight: multiplier of its score.
        kwargs: extra arguments for every call (e.g. ``cond=`` for a conditional network).
    """

    needs_grad = False

    def __init__(self, network: nn.Module, prediction_type: str, weight: float = 1.0, **kwargs):
        self.network = network
        self.prediction_type = check_prediction_type(prediction_type)
        self.weight = float(weight)
        self.kwargs = kwargs

    def epsilon(self, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        prediction = self.network(x, level.t_batch, **self.kwargs)
        return to_x0_eps(prediction, self.prediction_type, x, level.alpha, level.sigma)[1]


def combined_epsilon(experts: Sequence[Expert], x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
    """Σ_i w_i ε_i(x, t): the ε of the product of experts (at the level of noised scores)."""
    if not experts:
        raise ValueError("sampling needs at least one expert (e.g. a DenoiserExpert)")
    total = None
    for expert in experts:
        eps = expert.epsilon(x, level)
        term = eps if expert.weight == 1.0 else expert.weight * eps
        total = term if total is None else total + term
    return total
