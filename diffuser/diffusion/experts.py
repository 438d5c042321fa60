"""Experts: the score terms that meet in the sampling loop.

A plan is drawn from p̃(τ) ∝ p_θ(τ) · Π_i h_i(τ)^{w_i}. At noise level t each factor contributes a score
∇ log h_i, and the loop sums them with their weights. Everything is expressed in ε-units
(ε = -σ_t · score), the currency every sampler understands, so a combined prediction is simply
Σ_i w_i ε_i. A single diffusion model is the one-expert case; value guidance, analytic costs
(:mod:`diffuser.diffusion.costs`), classifier-free deltas and further diffusion models are more
experts, never another loop.

Two kinds of expert:

- *density* experts (a denoiser, a condition delta, an analytic mixture) give ε at x_t by themselves;
- *guides* (values, costs; ``uses_x0 = True``) judge the predicted clean trajectory x̂_0, which the
  loop forms from the density experts' combined ε and hands to them.

An expert that can also give an *energy* E_t(x) with score −∇E (``energy(x, level)``, (B,)) lets the
Metropolis-adjusted correctors (MALA, HMC) check their proposals; ``has_energy`` says whether it can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

from diffuser.diffusion.predictions import check_prediction_type, eps_to_x0, to_x0_eps


@dataclass(frozen=True)
class NoiseLevel:
    """Where the loop stands: step t with x_t = alpha · x_0 + sigma · ε, shared by the whole batch."""

    t: int  # diffusion step in {0, …, T-1}
    alpha: float  # √ᾱ_t
    sigma: float  # √(1 - ᾱ_t)
    t_batch: torch.Tensor  # (B,) long, t repeated for every sample, as networks take it
    # The level the sampler steps to next (√ᾱ, √(1-ᾱ) of t_prev; 1 and 0 when it steps to clean data).
    # Guides that scale by the step's posterior variance (Diffuser's value guide) need it.
    alpha_prev: float = 1.0
    sigma_prev: float = 0.0

    @property
    def posterior_variance(self) -> float:
        """Variance of the DDPM posterior of the step t → t_prev: σ²_prev / σ² · (1 − ᾱ_t / ᾱ_prev)."""
        if self.sigma == 0.0:
            return 0.0
        beta = 1.0 - (self.alpha / self.alpha_prev) ** 2
        return self.sigma_prev ** 2 / self.sigma ** 2 * beta


@runtime_checkable
class Expert(Protocol):
    """One score term. ``weight`` multiplies its contribution (negative weights negate it; 0 skips it)."""

    weight: float
    #: True when the expert differentiates through its input (value or cost gradients, energies): the
    #: loop then runs under no_grad instead of inference_mode so that the expert may enable autograd locally.
    needs_grad: bool

    def epsilon(self, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        """ε-prediction (B, H, D) at noisy x (B, H, D) and noise level ``level``."""
        ...


def expert_name(expert) -> str:
    return getattr(expert, "name", None) or type(expert).__name__


def has_energy(expert) -> bool:
    """Whether ``expert`` can give an energy (needed by MALA and HMC)."""
    flag = getattr(expert, "has_energy", None)
    return bool(flag) if flag is not None else callable(getattr(expert, "energy", None))


class DenoiserExpert:
    """A trained denoiser network as an expert.

    Args:
        network: ``network(x (B, H, D), t (B,), **kwargs) -> (B, H, D)``. A network with an
            ``energy(x, t, **kwargs) -> (B,)`` method (see :mod:`diffuser.diffusion.energy`) makes the
            expert energy-parameterised.
        prediction_type: what the network outputs: "epsilon", "x0" or "v".
        weight: multiplier of its score.
        layout / horizon / normalizer / schedule: what the model was trained with (optional), checked
            for agreement by :func:`diffuser.diffusion.compose.compose`.
        name: how errors and reports call it.
        kwargs: extra arguments for every call (e.g. ``cond=`` for a conditional network).
    """

    uses_x0 = False

    def __init__(self, network: nn.Module, prediction_type: str, weight: float = 1.0, *, layout=None,
                 horizon: int | None = None, normalizer=None, schedule=None, name: str | None = None, **kwargs):
        self.network = network
        self.prediction_type = check_prediction_type(prediction_type)
        self.weight = float(weight)
        self.kwargs = kwargs
        self.layout, self.horizon, self.normalizer, self.schedule = layout, horizon, normalizer, schedule
        self.name = name or "denoiser"
        self.has_energy = callable(getattr(network, "energy", None))
        if self.has_energy and self.prediction_type != "epsilon":
            raise ValueError(f"{self.name}: an energy network predicts ε (σ·∇E), not {prediction_type!r}")
        # An energy network's ε is a gradient: the loop must leave autograd available.
        self.needs_grad = self.has_energy

    def epsilon(self, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        prediction = self.network(x, level.t_batch, **self.kwargs)
        return to_x0_eps(prediction, self.prediction_type, x, level.alpha, level.sigma)[1]

    def energy(self, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        """E_t(x) (B,) of an energy-parameterised network (score = −∇E)."""
        if not self.has_energy:
            raise TypeError(f"{self.name}: its network has no energy(); MALA/HMC need an energy model "
                            "(diffuser.diffusion.energy.EnergyDenoiser), ULA/UHMC need only scores")
        return self.network.energy(x, level.t_batch, **self.kwargs)


class ConditionDelta:
    """Classifier-free guidance as an expert: ε(x, cond) − ε(x, uncond) of one network.

    Added with weight w to the unconditional model's ε this gives ε(∅) + w·(ε(c) − ε(∅)); several
    deltas compose conditions, and a negative weight steers away from one.

    Args:
        network: a conditional denoiser (e.g. a TemporalUnet with ``cond_dim`` > 0).
        cond / uncond: keyword arguments of the conditional and unconditional calls, e.g.
            ``{"cond": c}`` and ``{"cond": null_c}``.
    """

    uses_x0 = False
    needs_grad = False
    has_energy = False

    def __init__(self, network: nn.Module, prediction_type: str, cond: dict, uncond: dict, weight: float = 1.0,
                 *, layout=None, horizon: int | None = None, normalizer=None, schedule=None, name: str | None = None):
        self.network = network
        self.prediction_type = check_prediction_type(prediction_type)
        self.cond, self.uncond, self.weight = dict(cond), dict(uncond), float(weight)
        self.layout, self.horizon, self.normalizer, self.schedule = layout, horizon, normalizer, schedule
        self.name = name or "condition_delta"

    def epsilon(self, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        a, s = level.alpha, level.sigma
        on = to_x0_eps(self.network(x, level.t_batch, **_batched(self.cond, x.shape[0])), self.prediction_type,
                       x, a, s)[1]
        off = to_x0_eps(self.network(x, level.t_batch, **_batched(self.uncond, x.shape[0])), self.prediction_type,
                        x, a, s)[1]
        return on - off


def _batched(kwargs: dict, batch: int) -> dict:
    """Keyword tensors with one row broadcast to ``batch`` rows (one condition for a whole batch of plans)."""
    return {k: v.expand(batch, *v.shape[1:]) if torch.is_tensor(v) and v.ndim and v.shape[0] == 1 else v
            for k, v in kwargs.items()}


class ValueExpert:
    """Value guidance: h = exp(V), so ε −= w·σ_t·∇V (classifier guidance in ε-units).

    Args:
        value: ``value(x (B, H, D), t (B,)) -> (B,)``, differentiable (e.g. a trained ValueNet, or any
            function of the trajectory).
        on: "xt" differentiates V(x_t, t) at the noisy sample (as Diffuser's value guide, trained on
            noisy trajectories); "x0" differentiates V at the predicted clean trajectory x̂_0 (for values
            of clean trajectories), with ∂x̂_0/∂x_t taken as I/α (the network's Jacobian is not
            back-propagated: cheap, and exact for the linear part of x̂_0).
    """

    needs_grad = True
    has_energy = False

    def __init__(self, value: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], weight: float = 1.0,
                 on: str = "xt", name: str | None = None):
        if on not in ("xt", "x0"):
            raise ValueError(f"ValueExpert on= must be 'xt' or 'x0', got {on!r}")
        self.value, self.weight, self.on = value, float(weight), on
        self.uses_x0 = on == "x0"
        self.name = name or "value"

    def epsilon(self, x: torch.Tensor, level: NoiseLevel, x0: torch.Tensor | None = None) -> torch.Tensor:
        point = x if self.on == "xt" else x0
        grad = gradient(lambda y: self.value(y, level.t_batch), point)
        scale = level.sigma if self.on == "xt" else level.sigma / level.alpha
        return -scale * grad


def gradient(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """∇_x Σ_b fn(x)_b, computed with autograd even inside no_grad (never inside inference_mode)."""
    return value_and_gradient(fn, x)[1]


def value_and_gradient(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fn(x) detached, ∇_x Σ_b fn(x)_b), for callers that also keep the value they differentiated."""
    with torch.enable_grad():
        y = x.detach().requires_grad_(True)
        out = fn(y)
        (grad,) = torch.autograd.grad(out.sum(), y)
    return out.detach(), grad


def combined_epsilon(experts: Sequence[Expert], x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
    """Σ_i w_i ε_i(x, t): the ε of the product of experts (at the level of noised scores).

    Density experts are summed first; guides (``uses_x0``) then see x̂_0 implied by that sum. An expert
    of weight 0 is never called, so it leaves the result (and the network-call count) exactly as
    without it.
    """
    if not experts:
        raise ValueError("sampling needs at least one expert (e.g. a DenoiserExpert)")
    active = [e for e in experts if e.weight != 0.0]
    density = [e for e in active if not getattr(e, "uses_x0", False)]
    guides = [e for e in active if getattr(e, "uses_x0", False)]
    total = None
    for expert in density:
        eps = expert.epsilon(x, level)
        term = eps if expert.weight == 1.0 else expert.weight * eps
        total = term if total is None else total + term
    if guides:
        # With no density expert, x̂_0 is the noisy sample rescaled (ε = 0).
        x0 = eps_to_x0(total, x, level.alpha, level.sigma) if total is not None else x / level.alpha
        x0 = x0.detach()
        for expert in guides:
            term = expert.weight * expert.epsilon(x, level, x0=x0)
            total = term if total is None else total + term
    if total is None:  # every weight is 0: the product is flat, its score 0
        total = torch.zeros_like(x)
    return total


def combined_energy(experts: Sequence[Expert], x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
    """Σ_i w_i E_i(x, t) (B,); raises naming every active expert without an energy."""
    active = [e for e in experts if e.weight != 0.0]
    missing = [expert_name(e) for e in active if not has_energy(e)]
    if missing:
        raise TypeError(f"experts {missing} expose no energy: Metropolis-adjusted correctors (MALA, HMC) need "
                        "an energy from every expert; use ULA or UHMC (scores only) or energy models")
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for expert in active:
        total = total + expert.weight * expert.energy(x, level)
    return total
