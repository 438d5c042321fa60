"""Samplers: how to step from x_t to x_{t'} given the combined prediction (x̂_0, ε̂).

A sampler chooses the steps it visits and the update rule; it holds no weights and never calls a
network, so every sampler works with every combination of experts and constraints. Step
coefficients are Python floats read from the schedule: no device round trips inside the loop.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from diffuser.diffusion.noise import Generators, randn
from diffuser.diffusion.schedules import NoiseSchedule


def spaced_timesteps(schedule: NoiseSchedule, n: int | None) -> list[tuple[int, int]]:
    """``n`` evenly spaced steps (all T when None) as (t, t_prev) pairs, from T-1 (pure noise) to 0."""
    T = schedule.num_steps
    n = T if n is None else n
    if n > T:
        raise ValueError(f"num_inference_steps={n} exceeds the model's {T} training steps; use at most {T}")
    steps = np.unique(np.round(np.linspace(0, T - 1, n)).astype(int))[::-1].tolist()
    return list(zip(steps, steps[1:] + [-1]))


class Sampler:
    """Base class. ``timesteps`` lists the (t, t_prev) pairs to visit; t_prev = -1 means clean data."""

    name = "sampler"

    def timesteps(self, schedule: NoiseSchedule) -> list[tuple[int, int]]:
        raise NotImplementedError

    def step(self, x: torch.Tensor, t: int, t_prev: int, x0: torch.Tensor, eps: torch.Tensor,
             schedule: NoiseSchedule, generator: Generators) -> torch.Tensor:
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
        return mean + math.sqrt(variance) * randn(x.shape, generator, x.device, x.dtype)

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
        return spaced_timesteps(schedule, self.num_inference_steps)

    def step(self, x, t, t_prev, x0, eps, schedule, generator):
        ab, ab_prev = schedule.alpha_bar_at(t), schedule.alpha_bar_at(t_prev)
        sigma = self.eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) if t_prev >= 0 else 0.0
        direction = math.sqrt(max(1 - ab_prev - sigma**2, 0.0))
        out = math.sqrt(ab_prev) * x0 + direction * eps
        if sigma > 0:
            out = out + sigma * randn(x.shape, generator, x.device, x.dtype)
        return out

    def __repr__(self) -> str:
        return f"DDIM(num_inference_steps={self.num_inference_steps}, eta={self.eta})"


class DPMSolverPP(Sampler):
    """DPM-Solver++(2M) (Lu et al., 2022): a second-order multistep solver of the probability-flow ODE
    in its data-prediction form, on ``num_inference_steps`` evenly spaced steps.

    With λ = log(α/σ) and h = λ_{t'} − λ_t, a first-order step is DDIM(eta=0):
    x_{t'} = (σ_{t'}/σ_t) x_t − α_{t'} (e^{−h} − 1) x̂_0. The second-order step replaces x̂_0 by a
    linear extrapolation D = (1 + 1/(2r)) x̂_0 − 1/(2r) x̂_0^{prev}, r = h_prev / h, from the previous
    step's prediction (so no extra network call). The first step is first order, and so is the last
    (to clean data, where λ is infinite and the step returns x̂_0).
    """

    name = "dpmpp"

    def __init__(self, num_inference_steps: int | None = None):
        if num_inference_steps is not None and num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        self.num_inference_steps = num_inference_steps
        self.reset()

    def reset(self) -> None:
        self._prev: tuple[torch.Tensor, float] | None = None  # (x̂_0, h) of the previous step

    def timesteps(self, schedule: NoiseSchedule) -> list[tuple[int, int]]:
        return spaced_timesteps(schedule, self.num_inference_steps)

    def step(self, x, t, t_prev, x0, eps, schedule, generator):
        if t_prev < 0:
            self._prev = None
            return x0
        a, s = schedule.alpha_sigma(t)
        a2, s2 = schedule.alpha_sigma(t_prev)
        h = math.log(a2 / s2) - math.log(a / s)
        d = x0
        if self._prev is not None:
            x0_prev, h_prev = self._prev
            r = h_prev / h
            d = (1 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
        self._prev = (x0, h)
        return (s2 / s) * x - a2 * math.expm1(-h) * d

    def __repr__(self) -> str:
        return f"DPMSolverPP(num_inference_steps={self.num_inference_steps})"


SAMPLERS = {"ddpm": DDPM, "ddim": DDIM, "dpmpp": DPMSolverPP}


def make_sampler(name: str = "ddpm", num_inference_steps: int | None = None, eta: float = 0.0) -> Sampler:
    """Build a sampler by name: "ddpm" (all steps, ancestral), "ddim" (any step count, eta) or
    "dpmpp" (DPM-Solver++(2M), any step count)."""
    if name == "ddpm":
        if num_inference_steps is not None:
            raise ValueError("ddpm visits every training step; for fewer steps use sampler='ddim' "
                             "(eta=1 keeps ancestral noise) or 'dpmpp'")
        return DDPM()
    if name == "ddim":
        return DDIM(num_inference_steps, eta)
    if name == "dpmpp":
        return DPMSolverPP(num_inference_steps)
    raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
