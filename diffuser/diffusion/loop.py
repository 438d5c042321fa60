"""The sampling loop, written once.

Goal inpainting, value guidance, classifier-free guidance and product-of-experts composition are all
configurations of this function: a list of experts (score terms), a list of constraints and a sampler.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch

from diffuser.diffusion.constraints import Constraint, Inpaint
from diffuser.diffusion.correctors import Corrector, LevelTarget
from diffuser.diffusion.experts import Expert, NoiseLevel, combined_epsilon, has_energy
from diffuser.diffusion.noise import Generators, randn
from diffuser.diffusion.predictions import eps_to_x0, x0_to_eps
from diffuser.diffusion.samplers import DDPM, Sampler
from diffuser.diffusion.schedules import NoiseSchedule
from diffuser.utils import progress


@dataclass
class SampleOutput:
    trajectories: torch.Tensor  # (B, H, D) final samples, constraints applied
    chain: torch.Tensor | None = None  # (B, S+1, H, D): initial noise, then x after each of S steps
    # Evaluations of the combined score (each calls every active expert once) and of the energy
    # (MALA/HMC), predictor and corrector together.
    score_evals: int = 0
    energy_evals: int = 0
    acceptance: list[tuple[int, float]] | None = None  # (t, rate) per corrected level (MALA/HMC)

    @property
    def acceptance_mean(self) -> float | None:
        """Mean acceptance over the corrected levels (None without a Metropolis corrector)."""
        return sum(r for _, r in self.acceptance) / len(self.acceptance) if self.acceptance else None


def sample(
    experts: Sequence[Expert],
    schedule: NoiseSchedule,
    shape: Sequence[int],
    *,
    sampler: Sampler | None = None,
    constraints: Sequence[Constraint] = (),
    clip_denoised: bool = False,
    generator: Generators = None,
    noise: torch.Tensor | None = None,
    device: torch.device | str | None = None,
    return_chain: bool = False,
    show_progress: bool = False,
    warm_start: torch.Tensor | None = None,
    warm_level: float = 1.0,
    corrector: Corrector | None = None,
) -> SampleOutput:
    """Draw trajectories of ``shape`` = (B, H, D) from the product of ``experts``.

    Each step: combine the experts' ε-predictions, turn them into x̂_0 (clipped to [-1, 1] when
    ``clip_denoised``: data normalised to limits), let the sampler step, then re-apply every
    constraint so constrained entries equal their targets exactly.

    Args:
        generator: the only source of randomness; the same generator state gives the same samples. A
            sequence of generators gives each batch row its own (see :mod:`diffuser.diffusion.noise`).
        noise: optional initial noise (B, H, D); drawn from ``generator`` when None.
        device: where to sample (default: the noise's device, else CPU).
        warm_start: optional (B, H, D) clean trajectories to start from instead of pure noise (e.g.
            the previous plan shifted by the elapsed steps).
        warm_level: with ``warm_start``, the share of the sampler's steps to run: the warm start is
            noised to the level of the first step kept (x = α_t·warm + σ_t·noise) and denoised from
            there. 0 returns the warm start itself (constraints applied); 1 is a cold start.
        corrector: optional MCMC corrector (:mod:`diffuser.diffusion.correctors`) run at every noise
            level before the sampler's step, targeting the product of the experts at that level.
    """
    sampler = sampler or DDPM()
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"shape must be (batch, horizon, transition_dim), got {shape}")
    if noise is not None:
        if tuple(noise.shape) != shape:
            raise ValueError(f"initial noise has shape {tuple(noise.shape)}, expected {shape}")
        device = noise.device
    else:
        device = torch.device(device) if device is not None else torch.device("cpu")
    steps = sampler.timesteps(schedule)
    sampler.reset()
    cold = warm_start is None or warm_level == 1.0
    if not cold:
        steps = _warm_steps(steps, warm_start, shape, warm_level)
    if not cold and not steps:
        x = warm_start.to(device).clone()  # level 0: nothing to denoise
    else:
        x = noise.clone() if noise is not None else randn(shape, generator, device)
        if not cold:  # noise the warm start to the level the first kept step expects
            alpha, sigma = schedule.alpha_sigma(steps[0][0])
            x = alpha * warm_start.to(device) + sigma * x
    inpaint = Inpaint.from_constraints(constraints, shape, device=device, dtype=x.dtype)

    # inference_mode is fastest, but its tensors cannot enter autograd; experts that differentiate
    # (value or cost gradients) get plain no_grad and enable grad locally.
    if corrector is not None and corrector.needs_energy:
        missing = [getattr(e, "name", type(e).__name__) for e in experts if e.weight != 0 and not has_energy(e)]
        if missing:
            raise ValueError(f"corrector {corrector.name!r} needs an energy from every expert, but {missing} "
                             "expose none: use 'ula' or 'uhmc' (scores only), or energy-parameterised experts")
    needs_grad = any(getattr(e, "needs_grad", False) for e in experts) or corrector is not None
    mode = torch.no_grad() if needs_grad else torch.inference_mode()
    with mode:
        if inpaint is not None:
            x = inpaint.apply(x)
        chain = [x] if return_chain else None
        t_batch = torch.empty(shape[0], dtype=torch.long, device=device)
        score_evals = energy_evals = 0
        acceptance = []
        free = None if inpaint is None else (~inpaint.mask).to(x.dtype)
        for t, t_prev in progress(steps, desc="sampling", disable=not show_progress):
            alpha, sigma = schedule.alpha_sigma(t)
            level = NoiseLevel(t, alpha, sigma, t_batch.fill_(t), *schedule.alpha_sigma(t_prev))
            if corrector is not None and corrector.steps:
                target = LevelTarget(experts, level, free, inpaint.apply if inpaint is not None else None)
                x, rate = corrector.run(x, target, generator)
                score_evals += target.score_evals
                energy_evals += target.energy_evals
                if rate is not None:
                    acceptance.append((t, rate))
            eps = combined_epsilon(experts, x, level)
            score_evals += 1
            x0 = eps_to_x0(eps, x, alpha, sigma)
            if clip_denoised:
                x0 = x0.clamp(-1.0, 1.0)
                eps = x0_to_eps(x0, x, alpha, sigma)
            x = sampler.step(x, t, t_prev, x0, eps, schedule, generator)
            if inpaint is not None:
                x = inpaint.apply(x)
            if chain is not None:
                chain.append(x)
    return SampleOutput(x, torch.stack(chain, dim=1) if chain is not None else None, score_evals=score_evals,
                        energy_evals=energy_evals, acceptance=acceptance or None)


def _warm_steps(steps: list[tuple[int, int]], warm_start: torch.Tensor, shape: tuple, level: float):
    """The tail of ``steps`` a warm start at ``level`` runs (all of them at level 1, none at 0)."""
    if tuple(warm_start.shape) != shape:
        raise ValueError(f"warm_start has shape {tuple(warm_start.shape)}, expected {shape}")
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"warm_level must be in [0, 1] (0: keep the warm start, 1: cold start), got {level}")
    k = int(round(level * len(steps)))
    return steps[len(steps) - k:] if k else []
