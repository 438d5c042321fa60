"""Energy-parameterised denoisers: a network whose ε-prediction is the gradient of a scalar energy.

A score model gives ∇ log p_t only; a Metropolis correction (MALA, HMC) also needs log p_t itself, up
to a constant. :class:`EnergyDenoiser` wraps any network g(x, t) of the data's shape and defines

    E_t(x) = ‖x − f(x, t)‖² / (2σ_t),   f(x, t) = x − g(x, t),   so   E_t(x) = ‖g(x, t)‖² / (2σ_t),

with score −∇E and hence ε̂ = σ_t·∇E = J_gᵀ g (ε-units, O(1) at every level). It trains with the usual ε
objective through double back-propagation (the ε-prediction is a gradient, so the loss differentiates
it again); it samples like any ε-network, and :meth:`energy` is what MALA and HMC read.
"""

from __future__ import annotations

import torch
from torch import nn


class EnergyDenoiser(nn.Module):
    """ε-network from an energy.

    Args:
        network: ``g(x (B, …), t (B,)) -> (B, …)`` of the same shape as x.
        sigmas: (T,) σ_t of the noise schedule, so that the energy carries its 1/σ_t.
    """

    def __init__(self, network: nn.Module, sigmas: torch.Tensor):
        super().__init__()
        self.network = network
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float32), persistent=False)

    def energy(self, x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        """E_t(x) (B,) for x (B, …), t (B,)."""
        g = self.network(x, t, **kwargs)
        sigma = self.sigmas[t]
        return g.flatten(1).square().sum(-1) / (2 * sigma)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        """ε̂ = σ_t ∇_x E_t(x) (B, …). Keeps the graph while training (the loss differentiates it)."""
        create_graph = self.training and torch.is_grad_enabled()
        with torch.enable_grad():
            y = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
            e = self.energy(y, t, **kwargs)
            (grad,) = torch.autograd.grad(e.sum(), y, create_graph=create_graph)
        sigma = self.sigmas[t].reshape(-1, *([1] * (x.ndim - 1)))
        return sigma * grad
