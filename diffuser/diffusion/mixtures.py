"""Gaussian mixtures with exact noised scores and energies: experts with no model error.

If x_0 ~ Σ_k π_k N(μ_k, diag(s_k²)), then x_t = α x_0 + σ ε ~ Σ_k π_k N(α μ_k, diag(α² s_k² + σ²)) exactly,
so the score and the energy (−log density) of every noise level have closed forms. Composing such
experts separates a sampler's bias from a trained model's error (and gives tests a ground truth).
Vectors are trajectories flattened: x (B, H, D) is read as (B, H·D).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from diffuser.diffusion.experts import NoiseLevel, gradient


class GaussianMixture:
    """Σ_k π_k N(μ_k, diag(s_k²)) over vectors of size n = H·D.

    Args:
        means: (K, n); stds: (K, n) or (K,) or a float; weights: (K,) (normalised here; default equal).
    """

    def __init__(self, means, stds, weights: Sequence[float] | None = None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        if self.means.ndim == 1:
            self.means = self.means[None]
        K, n = self.means.shape
        stds = torch.as_tensor(stds, dtype=torch.float64)
        self.stds = stds.reshape(-1, 1).expand(K, n) if stds.numel() in (1, K) and stds.ndim <= 1 else stds
        if self.stds.shape != (K, n) or bool((self.stds <= 0).any()):
            raise ValueError(f"stds must be positive and broadcast to ({K}, {n}), got shape {tuple(stds.shape)}")
        w = torch.ones(K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (K,) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(f"weights must be {K} non-negative numbers with a positive sum")
        self.weights = w / w.sum()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def log_prob(self, x: torch.Tensor, alpha: float = 1.0, sigma: float = 0.0) -> torch.Tensor:
        """log p_t(x) (B,) of flat x (B, n) under the mixture noised to (α, σ)."""
        x = x.to(torch.float64)
        mean = alpha * self.means  # (K, n)
        var = alpha**2 * self.stds.square() + sigma**2
        z = (x[:, None, :] - mean[None]).square() / var[None]  # (B, K, n)
        log_norm = -0.5 * (var.log().sum(-1) + self.dim * math.log(2 * math.pi))  # (K,)
        return torch.logsumexp(self.weights.log() + log_norm - 0.5 * z.sum(-1), dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, dim) exact draws (float32)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[k] + self.stds[k] * noise).float()

    def product(self, other: "GaussianMixture") -> "GaussianMixture":
        """The normalised product p·q: again a mixture, with K·L components (diagonal covariances)."""
        m1, v1 = self.means[:, None], self.stds.square()[:, None]  # (K, 1, n)
        m2, v2 = other.means[None], other.stds.square()[None]  # (1, L, n)
        var = 1 / (1 / v1 + 1 / v2)
        mean = var * (m1 / v1 + m2 / v2)
        # Each pair's mass: π_k ρ_l N(μ_k; ν_l, s_k² + r_l²).
        s = v1 + v2
        log_w = (self.weights.log()[:, None] + other.weights.log()[None]
                 - 0.5 * ((m1 - m2).square() / s + s.log() + math.log(2 * math.pi)).sum(-1))
        w = torch.softmax(log_w.flatten(), 0)
        return GaussianMixture(mean.reshape(-1, self.dim), var.sqrt().reshape(-1, self.dim), w)


class MixtureExpert:
    """A :class:`GaussianMixture` as an expert with exact ε and energy at every noise level."""

    uses_x0 = False
    needs_grad = True  # the score comes from autograd of the log density
    has_energy = True

    def __init__(self, mixture: GaussianMixture, weight: float = 1.0, name: str | None = None):
        self.mixture, self.weight = mixture, float(weight)
        self.name = name or "mixture"

    def energy(self, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        """−log p_t(x) (B,), x (B, H, D)."""
        return -self.mixture.log_prob(x.flatten(1), level.alpha, level.sigma).to(x.dtype)

    def epsilon(self, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        return level.sigma * gradient(lambda y: self.energy(y, level), x)
