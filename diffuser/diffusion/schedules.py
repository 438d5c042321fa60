"""Noise schedules: the fixed forward process q(x_t | x_0) and its closed forms.

A schedule holds no weights. Its coefficients are computed once in float64 (so that 1 - ᾱ_t near t=0
keeps its precision) and kept both as Python floats, which samplers read per step without touching the
device, and as float32 tensors for batched indexing during training.

Indexing: t ∈ {0, …, T-1} is a diffusion step; t = -1 stands for "clean data" (ᾱ = 1), which is where
every sampling trajectory ends.
"""

from __future__ import annotations

import math

import numpy as np
import torch

BETA_SCHEDULES = ("cosine", "linear")


def make_betas(num_steps: int, beta_schedule: str = "cosine", *, cosine_s: float = 0.008,
               beta_start: float = 1e-4, beta_end: float = 2e-2, max_beta: float = 0.999) -> np.ndarray:
    """β_1..β_T as a float64 array of shape (T,).

    cosine: ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2) (Nichol & Dhariwal), β clipped at ``max_beta``.
    linear: β evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. use 1e-4 .. 2e-2 for T=1000).
    """
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if beta_schedule == "cosine":
        steps = np.arange(num_steps + 1, dtype=np.float64) / num_steps
        alpha_bar = np.cos((steps + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
        betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
        return np.clip(betas, 0.0, max_beta)
    if beta_schedule == "linear":
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"linear schedule needs 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
    raise ValueError(f"unknown beta_schedule {beta_schedule!r}; valid: {', '.join(BETA_SCHEDULES)}")


class NoiseSchedule:
    """The forward process of a T-step diffusion model.

    Args:
        num_steps: T, the number of training diffusion steps.
        beta_schedule: "cosine" or "linear".
    """

    def __init__(self, num_steps: int, beta_schedule: str = "cosine", **kwargs):
        betas = make_betas(num_steps, beta_schedule, **kwargs)
        self.num_steps = int(num_steps)
        self.beta_schedule = beta_schedule
        alphas = 1.0 - betas
        alpha_bar = np.cumprod(alphas)
        alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
        # DDPM posterior q(x_{t-1} | x_t, x_0) = N(c0 x_0 + c1 x_t, σ̃²): Ho et al. eq. (7).
        self.betas = betas
        self.alpha_bar = alpha_bar
        self.posterior_variance = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        self.posterior_coef_x0 = betas * np.sqrt(alpha_bar_prev) / (1.0 - alpha_bar)
        self.posterior_coef_xt = (1.0 - alpha_bar_prev) * np.sqrt(alphas) / (1.0 - alpha_bar)
        self._tensors: dict[tuple, dict[str, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return f"NoiseSchedule(num_steps={self.num_steps}, beta_schedule={self.beta_schedule!r})"

    # --- scalar access (samplers) -------------------------------------------------------------
    def alpha_bar_at(self, t: int) -> float:
        """ᾱ_t as a Python float; ᾱ_{-1} = 1 (clean data)."""
        return 1.0 if t < 0 else float(self.alpha_bar[t])

    def alpha_sigma(self, t: int) -> tuple[float, float]:
        """(α_t, σ_t) = (√ᾱ_t, √(1-ᾱ_t)) so that x_t = α_t x_0 + σ_t ε."""
        ab = self.alpha_bar_at(t)
        return math.sqrt(ab), math.sqrt(1.0 - ab)

    # --- batched access (training) ------------------------------------------------------------
    def tensors(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Coefficient tables of shape (T,) on ``device``, cached per (device, dtype)."""
        key = (str(device), dtype)
        if key not in self._tensors:
            ab = self.alpha_bar
            self._tensors[key] = {
                "alpha": torch.as_tensor(np.sqrt(ab), dtype=dtype, device=device),
                "sigma": torch.as_tensor(np.sqrt(1.0 - ab), dtype=dtype, device=device),
            }
        return self._tensors[key]

    def alpha_sigma_batch(self, t: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(α_t, σ_t) for a batch of steps t (B,), shaped (B, 1, …) to broadcast against ndim-dim x."""
        tab = self.tensors(t.device)
        shape = (t.shape[0],) + (1,) * (ndim - 1)
        return tab["alpha"][t].reshape(shape), tab["sigma"][t].reshape(shape)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) = N(α_t x_0, σ_t² I) with the given noise. Shapes (B, …), t (B,)."""
        alpha, sigma = self.alpha_sigma_batch(t, x0.ndim)
        return alpha * x0 + sigma * noise

    def posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: int) -> tuple[torch.Tensor, float]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) at a scalar step t."""
        mean = self.posterior_coef_x0[t] * x0 + self.posterior_coef_xt[t] * xt
        return mean, float(self.posterior_variance[t])
