"""Samplers: how to step from x_t to x_{t'} given the combined prediction (x̂_0, ε̂).

A sampler chooses the steps it visits and the update rule; it holds no weights and never calls a
network, so every sampler works with every combination of experts and constraints. Step
coefficients are Python floats read from the schedule: no device round trips inside the loop.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from diffuser.diffusion.schedules import NoiseSchedule


class Sampler:
    """Base class. ``timesteps`` lists the (t, t_prev) pairs to visit; t_prev = -1 means clean data."""

    name = "sampler"

    def timesteps(self, schedule: NoiseSchedule) -> list[tuple[int, int]]:
        raise NotImplementedError

    def step(self, x: torch.Tensor, t: int, t_prev: int, x0: torch.Tensor, eps: torch.Tensor,
             schedule: NoiseSchedule, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget per-trajectory state (multistep solvers keep some)."""


class DDPM(Sampler):
    """Ancestral sampling through all T steps with the DDPM posterior q(x_{t-1} | x_t, x̂_0)."""

    name = "ddpm"

    def timesteps(self, schedule: NoiseSchedule) -> list[tuple[int, int]]:
        return [(t, t - 1) for t in range(schedule.num_steps - 1, -1, -1)]

    def step(self, x, t, t_prev, x0, eps, schedule, generator):
        mean, variance = schedule.posterior(x0, x, t)
        if t == 0:  # the last step returns the posterior mean: no noise is added to clean data
            return mean
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return mean + math.sqrt(variance) * noise

    def __repr__(self) -> str:
        return "DDPM()"


class DDIM(Sampler):
    """DDIM (Song et al., 2021) on a subsequence of ``num_inference_steps`` steps.

    Args:
        num_inference_steps: how many network evaluations; any number from 1 to T, chosen at sampling
            time without retraining. None = all T steps.
        eta: 0 gives the deterministic sampler; 1 with all steps is the DDPM posterior exactly.
    """

    name = "ddim"

    def __init__(self, num_inference_steps: int | None = None, eta: float = 0.0):
        if num_inference_steps is not None and num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.num_inference_steps = num_inference_steps
        self.eta = float(eta)

    def timesteps(self, schedule: NoiseSchedule) -> list[tuple[int, int]]:
        T = schedule.num_steps
        n = T if self.num_inference_steps is None else self.num_inference_steps
        if n > T:
            raise ValueError(f"num_inference_steps={n} exceeds the model's {T} training steps; use at most {T}")
        # Evenly spaced steps that always include T-1 (pure noise) and 0.
        steps = np.unique(np.round(np.linspace(0, T - 1, n)).astype(int))[::-1].tolist()
        return list(zip(steps, steps[1:] + [-1]))

    def step(self, x, t, t_prev, x0, eps, schedule, generator):
        ab, ab_prev = schedule.alpha_bar_at(t), schedule.alpha_bar_at(t_prev)
        sigma = self.eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) if t_prev >= 0 else 0.0
        direction = math.sqrt(max(1 - ab_prev - sigma**2, 0.0))
        out = math.sqrt(ab_prev) * x0 + direction * eps
        if sigma > 0:
            out = out + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return out

    def __repr__(self) -> str:
        return f"DDIM(num_inference_steps={self.num_inference_steps}, eta={self.eta})"


SAMPLERS = {"ddpm": DDPM, "ddim": DDIM}


def make_sampler(name: str = "ddpm", num_inference_steps: int | None = None, eta: float = 0.0) -> Sampler:
    """Build a sampler by name: "ddpm" (all steps, ancestral) or "ddim" (any step count, eta)."""
    if name == "ddpm":
        if num_inference_steps is not None:
            raise ValueError("ddpm visits every training step; for fewer steps use sampler='ddim' "
                             "(eta=1 keeps ancestral noise)")
        return DDPM()
    if name == "ddim":
        return DDIM(num_inference_steps, eta)
    raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
