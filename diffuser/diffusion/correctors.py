"""MCMC correctors: sampling the product of experts at each noise level, inside the one loop.

Summing the experts' scores at level t gives the score of Π_i p_t^i, the product of the *noised*
experts, which is not the noised product; plain reverse diffusion with summed scores is therefore
biased (shared/REFERENCE.md §4). Treating the levels as an annealing path and running a few MCMC steps
that target Π_i p_t^i at every level removes the bias at the end of the path, where the product of
noised experts and the product itself coincide.

- :class:`ULA` (unadjusted Langevin) and :class:`UHMC` (unadjusted Hamiltonian Monte Carlo) need
  scores only;
- :class:`MALA` and :class:`HMC` add a Metropolis–Hastings test and need every expert's energy.

Step sizes: with ``scale="sigma"`` they follow the level's noise (a Langevin step η = step_size·σ_t², a
leapfrog step h = step_size·σ_t), so the nearly clean levels take tiny steps; with ``scale="fixed"``
(η = step_size, h = step_size) every level takes the same step, which suits data normalised to unit
scale, where the noised marginals of a VP schedule keep unit variance at every level. The bias that
summed scores leave is only removed where the chain can still move, so "fixed" corrects better near the
end of the path, and MALA/HMC (whose test rejects steps that are too large) can afford larger steps. Constrained entries (inpainting) never move: the
proposals live on the free entries only, and the constraints are re-applied after every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from diffuser.diffusion.experts import Expert, NoiseLevel, combined_energy, combined_epsilon, gradient
from diffuser.diffusion.noise import Generators, randn


@dataclass
class LevelTarget:
    """What a corrector sees at one level: the experts' combined ε and energy, the free entries, and
    counters of network evaluations."""

    experts: Sequence[Expert]
    level: NoiseLevel
    free: torch.Tensor | None = None  # (H, D) float, 1 where an entry may move; None: all free
    project: object = None  # x -> x with constraints re-applied (or None)
    score_evals: int = 0
    energy_evals: int = 0

    def epsilon(self, x: torch.Tensor) -> torch.Tensor:
        self.score_evals += 1
        return combined_epsilon(self.experts, x, self.level)

    def energy_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E(x) (B,), ∇E(x) (B, H, D)) of Σ_i w_i E_i, one autograd pass."""
        self.energy_evals += 1
        with torch.enable_grad():
            y = x.detach().requires_grad_(True)
            e = combined_energy(self.experts, y, self.level)
            (grad,) = torch.autograd.grad(e.sum(), y)
        return e.detach(), grad

    def mask(self, v: torch.Tensor) -> torch.Tensor:
        return v if self.free is None else v * self.free

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.project is None else self.project(x)


class Corrector:
    """Base class: ``steps`` MCMC iterations per noise level.

    Args:
        steps: iterations per level.
        step_size: Langevin step η, or leapfrog step h (see the module docstring).
        scale: "sigma" (multiplied by σ_t², resp. σ_t) or "fixed".
    """

    name = "corrector"
    needs_energy = False

    def __init__(self, steps: int = 1, step_size: float = 0.05, scale: str = "sigma"):
        if scale not in ("sigma", "fixed"):
            raise ValueError(f"corrector scale must be 'sigma' or 'fixed', got {scale!r}")
        self.scale = scale
        if steps < 0:
            raise ValueError(f"corrector steps must be >= 0, got {steps}")
        if step_size <= 0:
            raise ValueError(f"corrector step_size must be > 0, got {step_size}")
        self.steps, self.step_size = int(steps), float(step_size)

    def run(self, x: torch.Tensor, target: LevelTarget, generator: Generators) -> tuple[torch.Tensor, float | None]:
        """x (B, H, D) after ``steps`` iterations, and the acceptance rate (None when unadjusted)."""
        accepted = []
        for _ in range(self.steps):
            x, acc = self.step(x, target, generator)
            if acc is not None:
                accepted.append(acc)
        return x, (float(torch.cat(accepted).float().mean()) if accepted else None)

    def step(self, x, target: LevelTarget, generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def langevin_step(self, sigma: float) -> float:
        """η at a level of noise σ."""
        return self.step_size * (sigma**2 if self.scale == "sigma" else 1.0)

    def leapfrog_step(self, sigma: float) -> float:
        """h at a level of noise σ."""
        return self.step_size * (sigma if self.scale == "sigma" else 1.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps}, step_size={self.step_size}, scale={self.scale!r})"


class ULA(Corrector):
    """Unadjusted Langevin: x ← x + η·s(x) + √(2η)·z with s = −ε/σ, η = step_size·σ_t²."""

    name = "ula"

    def step(self, x, target, generator):
        sigma = target.level.sigma
        eta = self.langevin_step(sigma)
        eps = target.epsilon(x)
        z = randn(x.shape, generator, x.device, x.dtype)
        move = -(eta / sigma) * eps + math.sqrt(2 * eta) * z
        return target.apply(x + target.mask(move)), None


class MALA(Corrector):
    """Metropolis-adjusted Langevin: the ULA proposal, accepted with probability
    min(1, exp(−E(x') + E(x)) · q(x | x') / q(x' | x)), q(y | x) = N(y; x − η∇E(x), 2η I)."""

    name = "mala"
    needs_energy = True

    def step(self, x, target, generator):
        eta = self.langevin_step(target.level.sigma)
        e, g = target.energy_and_grad(x)
        z = randn(x.shape, generator, x.device, x.dtype)
        proposal = target.apply(x + target.mask(-eta * g + math.sqrt(2 * eta) * z))
        e2, g2 = target.energy_and_grad(proposal)
        log_ratio = mala_log_acceptance(x, proposal, e, g, e2, g2, eta, target.free)
        u = torch.rand(x.shape[0], generator=_first(generator), device=x.device, dtype=x.dtype)
        accept = u.log() < log_ratio
        return torch.where(accept[:, None, None], proposal, x), accept


def mala_log_acceptance(x, y, e_x, g_x, e_y, g_y, eta: float, free: torch.Tensor | None = None) -> torch.Tensor:
    """log of the MALA acceptance ratio (B,) for a move x → y (before min(0, ·)).

    log π(y) − log π(x) + log q(x | y) − log q(y | x), with π = exp(−E) and the Langevin proposal
    q(y | x) = N(y; x − η∇E(x), 2η I) on the free entries.
    """
    free = 1.0 if free is None else free
    forward = ((y - x + eta * g_x) * free).square().flatten(1).sum(-1)
    backward = ((x - y + eta * g_y) * free).square().flatten(1).sum(-1)
    return (e_x - e_y) + (forward - backward) / (4 * eta)


class _Hamiltonian(Corrector):
    """Shared leapfrog integration: momentum p ~ N(0, I), step h = step_size·σ_t, ``leapfrog_steps``."""

    def __init__(self, steps: int = 1, step_size: float = 0.05, leapfrog_steps: int = 3, scale: str = "sigma"):
        super().__init__(steps, step_size, scale)
        if leapfrog_steps < 1:
            raise ValueError(f"leapfrog_steps must be >= 1, got {leapfrog_steps}")
        self.leapfrog_steps = int(leapfrog_steps)

    def _grad(self, x, target) -> tuple[torch.Tensor | None, torch.Tensor]:
        raise NotImplementedError

    def leapfrog(self, x, p, grad, target):
        """Integrate (x, p) for ``leapfrog_steps`` steps; returns x, p, the last (energy, grad)."""
        h = self.leapfrog_step(target.level.sigma)
        energy = None
        p = p - 0.5 * h * target.mask(grad)
        for i in range(self.leapfrog_steps):
            x = target.apply(x + h * target.mask(p))
            energy, grad = self._grad(x, target)
            p = p - (h if i < self.leapfrog_steps - 1 else 0.5 * h) * target.mask(grad)
        return x, p, energy, grad

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(steps={self.steps}, step_size={self.step_size}, "
                f"leapfrog_steps={self.leapfrog_steps}, scale={self.scale!r})")


class UHMC(_Hamiltonian):
    """Unadjusted HMC: fresh momentum, a leapfrog trajectory on the score (∇E = ε/σ), always kept."""

    name = "uhmc"

    def _grad(self, x, target):
        return None, target.epsilon(x) / target.level.sigma

    def step(self, x, target, generator):
        p = target.mask(randn(x.shape, generator, x.device, x.dtype))
        _, grad = self._grad(x, target)
        x, _, _, _ = self.leapfrog(x, p, grad, target)
        return x, None


class HMC(_Hamiltonian):
    """HMC with a Metropolis test on H = E(x) + ½‖p‖² (needs energies)."""

    name = "hmc"
    needs_energy = True

    def _grad(self, x, target):
        return target.energy_and_grad(x)

    def step(self, x, target, generator):
        p = target.mask(randn(x.shape, generator, x.device, x.dtype))
        e, grad = self._grad(x, target)
        y, q, e2, _ = self.leapfrog(x, p, grad, target)
        log_ratio = (e + 0.5 * p.square().flatten(1).sum(-1)) - (e2 + 0.5 * q.square().flatten(1).sum(-1))
        u = torch.rand(x.shape[0], generator=_first(generator), device=x.device, dtype=x.dtype)
        accept = u.log() < log_ratio
        return torch.where(accept[:, None, None], y, x), accept


def _first(generator: Generators) -> torch.Generator | None:
    """The accept test's uniforms come from the first generator: runs stay reproducible, but with
    per-row generators a corrected batch is no longer identical to its rows sampled one at a time."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return list(generator)[0]


CORRECTORS = {"ula": ULA, "mala": MALA, "uhmc": UHMC, "hmc": HMC}


def make_corrector(name: str | None, steps: int = 1, step_size: float = 0.05, leapfrog_steps: int = 3,
                   scale: str = "sigma") -> Corrector | None:
    """A corrector by name ("ula" | "mala" | "uhmc" | "hmc"); None or "none" for plain reverse diffusion."""
    if name in (None, "none"):
        return None
    if name not in CORRECTORS:
        raise ValueError(f"unknown corrector {name!r}; valid: none, {', '.join(CORRECTORS)}")
    if name in ("uhmc", "hmc"):
        return CORRECTORS[name](steps, step_size, leapfrog_steps, scale)
    return CORRECTORS[name](steps, step_size, scale)
