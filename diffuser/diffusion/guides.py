"""Diffuser's value guidance (Janner et al., 2022) as an expert of the one sampling loop.

Diffuser steers each denoising step by moving the noisy sample uphill on a learned value before the
posterior step: ``n_guide_steps`` times ``x ← x + scale · Σ̃_t · ∇V(x, t)``, with Σ̃_t the variance of
the step's posterior and no guidance below ``t_stopgrad``. That is a shift δ of x_t. Expressed in
ε-units, the currency of every sampler here, the shift is

    Δε = −(σ_t / β_t) · δ,    β_t = 1 − ᾱ_t / ᾱ_{t'}  (the step t → t')

chosen so that the DDPM posterior mean computed from (x_t, ε + Δε) equals the one computed from
(x_t + δ, ε): the same update as Diffuser's. With Σ̃_t = β_t · σ²_{t'} / σ²_t, one guide step gives
Δε = −scale · (σ²_{t'} / σ_t) · ∇V, i.e. classifier guidance with the gradient scaled by the step's
posterior variance. DDIM and DPM-Solver++ take the same ε, so guidance works with every sampler.

The value model is any ``value(x (B, H, D), t (B,)) -> (B,)``: a trained
:class:`~diffuser.diffusion.value.ValueFunction` (standardised returns, so one guide scale suits every
reward scale), or an analytic function in tests.

Each call keeps the values it differentiated at its first gradient step (``last_values``, with the step
``last_t``), so a sampler's candidates can be ranked at no extra network call. They judge the sample at
the last guided step (t ≥ t_stopgrad), noisier than the original's, whose guide also runs (gradient
zeroed) at the steps below t_stopgrad and so ranks by values at t = 0.
"""

from __future__ import annotations

from typing import Callable

import torch

from diffuser.diffusion.experts import NoiseLevel, value_and_gradient

__all__ = ["ValueGuide"]


class ValueGuide:
    """Value guidance with Diffuser's knobs.

    Args:
        value: ``value(x, t) -> (B,)``, differentiable in x.
        scale: guide scale (Diffuser's ``scale``; 0 turns guidance off exactly: the expert is skipped).
        n_guide_steps: gradient steps per denoising step, each at the point the previous one reached.
        t_stopgrad: no guidance at diffusion steps t < t_stopgrad (the last, nearly clean steps).
        name: how errors and reports call it.
    """

    uses_x0 = False  # judges the noisy sample itself, as Diffuser's value model is trained to
    needs_grad = True
    has_energy = False

    def __init__(self, value: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], scale: float = 0.1,
                 n_guide_steps: int = 2, t_stopgrad: int = 2, name: str = "value_guide"):
        if n_guide_steps < 1:
            raise ValueError(f"n_guide_steps must be >= 1 (scale=0 turns guidance off), got {n_guide_steps}")
        if t_stopgrad < 0:
            raise ValueError(f"t_stopgrad must be >= 0, got {t_stopgrad}")
        self.value, self.n_guide_steps, self.t_stopgrad, self.name = value, int(n_guide_steps), int(t_stopgrad), name
        self.weight = float(scale)  # the loop multiplies the returned ε by it, and skips the expert at 0
        self.last_values: torch.Tensor | None = None  # (B,) V(x_t, t) at the last guided step; reset() clears it
        self.last_t: int | None = None

    def reset(self) -> None:
        """Forget the last guided step's values (call before sampling, so stale ones are never used)."""
        self.last_values, self.last_t = None, None

    @property
    def scale(self) -> float:
        return self.weight

    def epsilon(self, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        """Δε per unit of scale (the loop multiplies by ``scale``): −(σ²_{t'} / σ_t) Σ_k ∇V(x_k, t)."""
        if level.t < self.t_stopgrad or level.sigma_prev == 0.0:
            return torch.zeros_like(x)
        step = self.weight * level.posterior_variance  # Diffuser's x-step: scale · Σ̃_t · ∇V
        y, total = x, torch.zeros_like(x)
        for k in range(self.n_guide_steps):
            v, g = value_and_gradient(lambda z: self.value(z, level.t_batch), y)
            if k == 0:
                self.last_values, self.last_t = v, level.t
            total = total + g
            y = y + step * g
        return -(level.sigma_prev ** 2 / level.sigma) * total

    def __repr__(self) -> str:
        return f"ValueGuide(scale={self.weight}, n_guide_steps={self.n_guide_steps}, t_stopgrad={self.t_stopgrad})"
