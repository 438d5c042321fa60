"""Analytic cost experts: obstacles, preferred regions and smoothness, added at test time.

A cost C(τ) ≥ 0 is the expert h = exp(−C): its ε-term is +w·σ_t·∇C (the opposite of a value). Costs
judge the *positions of the predicted clean trajectory* x̂_0 (as guides, see
:func:`diffuser.diffusion.experts.combined_epsilon`), so an obstacle acts on where the plan will go, not
on the noise. Everything lives in the normalised space the model samples in: ``position_dims`` are
transition indices, centres and box corners are normalised coordinates, and ``scale`` (world units per
normalised unit, per position dim) measures distances in world units, so a disc stays a disc under a
limits normaliser that stretches x and y differently. The ``from_world`` constructors take raw maze
coordinates and the model's normalizer and do the conversion.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from diffuser.diffusion.experts import NoiseLevel, gradient


def _world_frame(normalizer, layout, position_state_dims: Sequence[int]):
    """(transition dims, a function world xy -> normalised xy, world units per normalised unit)."""
    S = normalizer.observation_dim
    dims = list(position_state_dims)

    def to_norm(point) -> np.ndarray:
        full = np.zeros((1, S))
        full[0, dims] = np.asarray(point, dtype=np.float64)
        return np.asarray(normalizer.normalize_observations(full))[0, dims]

    # The normalisers are affine per dimension: the scale is the image of a unit step.
    scale = to_norm(np.ones(len(dims))) - to_norm(np.zeros(len(dims)))
    return layout.state_dims(dims), to_norm, 1.0 / scale


class CostExpert:
    """Base of the analytic costs: h = exp(−C) on positions of x̂_0 (or of x_t when ``on="xt"``).

    Subclasses define :meth:`point_cost` on positions (B, H, k) in normalised units → (B, H).

    Args:
        position_dims: transition indices of the positions the cost reads (e.g. x, y).
        scale: world units per normalised unit for each position dim (default 1: distances in
            normalised units).
        weight: w; negative weights turn an avoided region into an attracting one.
        on: "x0" (default) judges the predicted clean trajectory; "xt" the noisy sample itself
            (then the cost is also an energy, for MALA/HMC).
    """

    needs_grad = True
    #: Hard costs mark plans as violating (selection then avoids them): obstacles are hard,
    #: preferences and smoothness are not.
    hard = False

    def __init__(self, position_dims: Sequence[int], scale: Sequence[float] | None = None, weight: float = 1.0,
                 on: str = "x0", name: str | None = None):
        if on not in ("x0", "xt"):
            raise ValueError(f"{type(self).__name__} on= must be 'x0' or 'xt', got {on!r}")
        self.position_dims = [int(d) for d in position_dims]
        k = len(self.position_dims)
        self.scale = torch.ones(k) if scale is None else torch.as_tensor(np.asarray(scale, dtype=np.float32))
        if self.scale.shape != (k,):
            raise ValueError(f"scale needs one entry per position dim ({k}), got shape {tuple(self.scale.shape)}")
        self.weight, self.on = float(weight), on
        self.uses_x0 = on == "x0"
        self.has_energy = on == "xt"
        self.name = name or type(self).__name__

    def positions(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, D) -> (B, H, k) normalised positions."""
        return x[..., self.position_dims]

    def point_cost(self, p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cost(self, x: torch.Tensor) -> torch.Tensor:
        """C(τ) (B,) of clean trajectories (B, H, D), normalised."""
        return self.point_cost(self.positions(x)).sum(-1)

    def epsilon(self, x: torch.Tensor, level: NoiseLevel, x0: torch.Tensor | None = None) -> torch.Tensor:
        if self.on == "xt":
            return level.sigma * gradient(self.cost, x)
        # ∂x̂_0/∂x_t ≈ I/α: the chain rule through the linear part of x̂_0 only (no network backprop).
        return (level.sigma / level.alpha) * gradient(self.cost, x0)

    def energy(self, x: torch.Tensor, level: NoiseLevel) -> torch.Tensor:
        if self.on != "xt":
            raise TypeError(f"{self.name}: a cost on x̂_0 is no energy of x_t; use on='xt' for MALA/HMC")
        return self.cost(x)

    def _metric(self, d: torch.Tensor) -> torch.Tensor:
        """Normalised offsets (…, k) in world units."""
        return d * self.scale.to(d)

    def violated(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) bool: whether a hard cost is violated anywhere on the trajectory (never for soft costs)."""
        return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)


class DiscAvoid(CostExpert):
    """Keep out of a disc: C = Σ_h relu(r + margin − ‖p_h − c‖)² (distances in world units via ``scale``).

    The margin gives plans that graze the rim a push too. ``violated`` uses the bare radius.
    """

    hard = True

    def __init__(self, center: Sequence[float], radius: float, position_dims: Sequence[int],
                 scale: Sequence[float] | None = None, weight: float = 1.0, margin: float = 0.0, **kwargs):
        super().__init__(position_dims, scale, weight, **kwargs)
        self.center = torch.as_tensor(np.asarray(center, dtype=np.float32))
        if self.center.shape != (len(self.position_dims),):
            raise ValueError(f"center needs {len(self.position_dims)} coordinates, got {tuple(self.center.shape)}")
        if radius <= 0:
            raise ValueError(f"radius must be > 0, got {radius}")
        self.radius, self.margin = float(radius), float(margin)

    @classmethod
    def from_world(cls, center_xy: Sequence[float], radius: float, normalizer, layout,
                   position_state_dims: Sequence[int] = (0, 1), **kwargs) -> "DiscAvoid":
        """A disc given in raw (world) coordinates for a model with this normalizer and layout."""
        dims, to_norm, scale = _world_frame(normalizer, layout, position_state_dims)
        return cls(to_norm(center_xy), radius, dims, scale, **kwargs)

    def distance(self, p: torch.Tensor) -> torch.Tensor:
        """World distance (…) of normalised positions (…, k) to the centre."""
        return self._metric(p - self.center.to(p)).norm(dim=-1)

    def point_cost(self, p):
        return torch.relu(self.radius + self.margin - self.distance(p)).square()

    def violated(self, x):
        return (self.distance(self.positions(x)) < self.radius).any(-1)


class BoxAvoid(CostExpert):
    """Keep out of an axis-aligned box [lo, hi]: C = Σ_h relu(depth_h + margin)², depth = the distance
    (world units) to the nearest face, positive inside."""

    hard = True

    def __init__(self, lo: Sequence[float], hi: Sequence[float], position_dims: Sequence[int],
                 scale: Sequence[float] | None = None, weight: float = 1.0, margin: float = 0.0, **kwargs):
        super().__init__(position_dims, scale, weight, **kwargs)
        self.lo, self.hi = _corners(lo, hi, len(self.position_dims))
        self.margin = float(margin)

    @classmethod
    def from_world(cls, lo_xy, hi_xy, normalizer, layout, position_state_dims=(0, 1), **kwargs) -> "BoxAvoid":
        dims, to_norm, scale = _world_frame(normalizer, layout, position_state_dims)
        a, b = to_norm(lo_xy), to_norm(hi_xy)
        return cls(np.minimum(a, b), np.maximum(a, b), dims, scale, **kwargs)

    def depth(self, p):
        inside = torch.minimum(self._metric(p - self.lo.to(p)), self._metric(self.hi.to(p) - p))
        return inside.min(dim=-1).values

    def point_cost(self, p):
        return torch.relu(self.depth(p) + self.margin).square()

    def violated(self, x):
        return (self.depth(self.positions(x)) > 0).any(-1)


class RegionPrefer(CostExpert):
    """Prefer a box [lo, hi]: C = Σ_h dist(p_h, box)² (world units), 0 inside. Soft: a plan that must
    leave the region (to reach a goal) pays for every step outside, so the weight sets the trade-off."""

    def __init__(self, lo: Sequence[float], hi: Sequence[float], position_dims: Sequence[int],
                 scale: Sequence[float] | None = None, weight: float = 1.0, **kwargs):
        super().__init__(position_dims, scale, weight, **kwargs)
        self.lo, self.hi = _corners(lo, hi, len(self.position_dims))

    @classmethod
    def from_world(cls, lo_xy, hi_xy, normalizer, layout, position_state_dims=(0, 1), **kwargs) -> "RegionPrefer":
        dims, to_norm, scale = _world_frame(normalizer, layout, position_state_dims)
        a, b = to_norm(lo_xy), to_norm(hi_xy)
        return cls(np.minimum(a, b), np.maximum(a, b), dims, scale, **kwargs)

    def point_cost(self, p):
        outside = torch.relu(self.lo.to(p) - p) + torch.relu(p - self.hi.to(p))
        return self._metric(outside).square().sum(-1)

    def inside(self, p: torch.Tensor) -> torch.Tensor:
        return ((p >= self.lo.to(p)) & (p <= self.hi.to(p))).all(-1)


class Ceiling(CostExpert):
    """Stay below a limit (e.g. a forward speed the data never sustains): C = Σ_h Σ_k relu(p_hk − limit_k)²
    (world units), 0 below it.

    Its ε-term is not the cost's gradient scaled by σ/α, which is ~400 at a cosine schedule's top level
    and blows a few-step sampler's first prediction apart. It moves x̂_0 itself: each coordinate over
    the limit comes down by ``weight`` times its excess (weight 1: exactly onto the limit), through the
    ε that changes x̂_0 = (x − σε)/α by that much. So the pull is the same at every noise level, and the
    model's own prediction is left alone wherever the plan is under the limit.
    """

    needs_grad = False  # the pull is the excess itself: no autograd

    def __init__(self, limit: Sequence[float], position_dims: Sequence[int], scale: Sequence[float] | None = None,
                 weight: float = 1.0, **kwargs):
        super().__init__(position_dims, scale, weight, **kwargs)
        if self.on != "x0":
            raise ValueError("Ceiling acts on the predicted clean plan x̂_0 only (on='x0')")
        self.limit = torch.as_tensor(np.asarray(limit, dtype=np.float32))
        if self.limit.shape != (len(self.position_dims),):
            raise ValueError(f"limit needs {len(self.position_dims)} values, got {tuple(self.limit.shape)}")

    @classmethod
    def from_world(cls, limit: Sequence[float], normalizer, layout, position_state_dims: Sequence[int],
                   **kwargs) -> "Ceiling":
        """A limit in raw units on the observation coordinates ``position_state_dims``."""
        dims, to_norm, scale = _world_frame(normalizer, layout, position_state_dims)
        return cls(to_norm(limit), dims, scale, **kwargs)

    def excess(self, p: torch.Tensor) -> torch.Tensor:
        """(…, k) how far normalised coordinates are over the limit (0 under it)."""
        return torch.relu(p - self.limit.to(p))

    def point_cost(self, p):
        return self._metric(self.excess(p)).square().sum(-1)

    def epsilon(self, x: torch.Tensor, level: NoiseLevel, x0: torch.Tensor | None = None) -> torch.Tensor:
        eps = torch.zeros_like(x)
        eps[..., self.position_dims] = (level.alpha / level.sigma) * self.excess(self.positions(x0))
        return eps


class Smoothness(CostExpert):
    """Penalise second differences: C = Σ_h ‖p_{h+1} − 2p_h + p_{h−1}‖² (world units)."""

    def point_cost(self, p):
        second = self._metric(p[:, 2:] - 2 * p[:, 1:-1] + p[:, :-2])
        return second.square().sum(-1)

    @classmethod
    def from_world(cls, normalizer, layout, position_state_dims=(0, 1), **kwargs) -> "Smoothness":
        dims, _, scale = _world_frame(normalizer, layout, position_state_dims)
        return cls(dims, scale, **kwargs)


def _corners(lo, hi, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    lo = torch.as_tensor(np.asarray(lo, dtype=np.float32))
    hi = torch.as_tensor(np.asarray(hi, dtype=np.float32))
    if lo.shape != (k,) or hi.shape != (k,):
        raise ValueError(f"box corners need {k} coordinates each, got {tuple(lo.shape)} and {tuple(hi.shape)}")
    if not bool((lo < hi).all()):
        raise ValueError(f"box needs lo < hi in every dim, got lo={lo.tolist()}, hi={hi.tolist()}")
    return lo, hi
