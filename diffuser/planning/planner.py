"""The planner: a trained model, its normalizer and a sampler, turning observations into plans.

Works in raw (unnormalised) units at its boundary; inside, everything is normalised once and the
start state and goal become inpainting constraints of the one sampling loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from diffuser.data.normalizers import TrajectoryNormalizer
from diffuser.diffusion.constraints import Constraint
from diffuser.diffusion.correctors import Corrector
from diffuser.diffusion.experts import Expert
from diffuser.diffusion.model import TrajectoryDiffusion
from diffuser.diffusion.noise import Generators, generators
from diffuser.diffusion.samplers import Sampler


def shift_plans(trajectories: torch.Tensor, steps, stride: int = 1) -> torch.Tensor:
    """Plans (N, H, D) advanced by ``steps`` (N,) env steps, for warm-starting the next plan.

    Planned step k becomes step k − steps / stride, linearly interpolated between planned steps (an
    advance shorter than the stride still moves the plan); the end is held at the last planned step.
    """
    N, H, D = trajectories.shape
    device = trajectories.device
    offset = torch.as_tensor(np.broadcast_to(np.asarray(steps, dtype=np.float32), (N,)) / stride, device=device)
    pos = torch.arange(H, device=device, dtype=torch.float32)[None] + offset[:, None]
    lo = pos.floor()
    w = torch.where(lo >= H - 1, torch.zeros_like(pos), pos - lo)[..., None].to(trajectories.dtype)
    lo = lo.clamp(max=H - 1).long()
    hi = (lo + 1).clamp(max=H - 1)
    take = lambda idx: torch.gather(trajectories, 1, idx[..., None].expand(-1, -1, D))  # noqa: E731
    return (1 - w) * take(lo) + w * take(hi)


@dataclass
class Plan:
    states: torch.Tensor  # (B, H, S) raw units
    actions: torch.Tensor  # (B, H, A) raw units
    trajectories: torch.Tensor  # (B, H, A+S) normalised, as sampled
    chain: torch.Tensor | None = None  # (B, steps+1, H, S) raw states along the denoising chain


class Planner:
    """Plans from a start state (and optionally to a goal) by inpainting.

    Args:
        model: a trained TrajectoryDiffusion.
        normalizer: the normalizer it was trained with.
        sampler: default sampler (DDPM when None); each call may override it.
        experts: extra score terms composed with the model on every call.
        model_weight: the weight of the model's own score among the experts (1: the model as trained).
        corrector: default MCMC corrector run at every noise level (None: plain reverse diffusion).
    """

    def __init__(self, model: TrajectoryDiffusion, normalizer: TrajectoryNormalizer,
                 sampler: Sampler | None = None, experts: Sequence[Expert] = (), model_weight: float = 1.0,
                 corrector: Corrector | None = None):
        if normalizer.observation_dim != model.layout.observation_dim or normalizer.action_dim != model.layout.action_dim:
            raise ValueError(
                f"normalizer dims (obs {normalizer.observation_dim}, act {normalizer.action_dim}) do not match the "
                f"model's (obs {model.layout.observation_dim}, act {model.layout.action_dim}): "
                "use the normalizer saved with this model")
        self.model, self.normalizer, self.sampler, self.experts = model, normalizer, sampler, list(experts)
        self.layout = model.layout
        self.model_weight = float(model_weight)
        self.corrector = corrector

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _batch(self, x, what: str, dim: int) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(x, dtype=np.float32) if not torch.is_tensor(x) else x,
                            dtype=torch.float32, device=self.device)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[-1] != dim:
            raise ValueError(f"{what} must have shape ({dim},) or (B, {dim}), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{what} holds NaN or inf")
        return x

    def plan(self, start, goal=None, *, goal_dims: Sequence[int] | None = None, horizon: int | None = None,
             num_samples: int = 1, sampler: Sampler | None = None, seed: int | Sequence[int] | None = None,
             generator: Generators = None, return_chain: bool = False,
             warm_start: torch.Tensor | None = None, warm_level: float = 1.0,
             model_weight: float | None = None, corrector: Corrector | None = None) -> Plan:
        """Sample plans from ``start`` (S,) or (B, S) to ``goal`` (k,) or (B, k), raw units.

        ``goal_dims`` are the state dims the goal fixes at the last step (default: all S). With
        ``num_samples`` > 1 each start gets that many candidates: the output batch is B·num_samples,
        start-major. ``seed``: one seed, or one per start (each start then gets the plans it would get
        alone with that seed). ``warm_start``: (B·num_samples, H, A+S) *normalised* trajectories to
        start from, noised to ``warm_level`` (e.g. the previous plan's ``trajectories``, shifted).
        ``model_weight`` / ``corrector``: override the planner's for this call.
        """
        S = self.layout.observation_dim
        start = self._batch(start, "start state", S)
        horizon = horizon or self.model.horizon
        check = getattr(self.model.denoiser, "check_horizon", None)
        if check is not None:
            check(horizon)
        conditions = {0: self.normalizer.normalize_observations(start)}
        constraints = []
        if goal is not None:
            dims = list(range(S)) if goal_dims is None else list(goal_dims)
            goal = self._batch(goal, "goal", len(dims))
            if goal.shape[0] not in (1, start.shape[0]):
                raise ValueError(f"{goal.shape[0]} goals for {start.shape[0]} start states")
            # Normalisers act per dimension: place the goal in a full state vector to normalise it.
            full = start.clone() if goal.shape[0] == start.shape[0] else start[:1].clone()
            full[:, dims] = goal
            goal_norm = self.normalizer.normalize_observations(full)[:, dims].expand(start.shape[0], -1)
            constraints.append(Constraint(-1, self.layout.state_dims(dims), goal_norm))
        if num_samples > 1:
            conditions = {t: v.repeat_interleave(num_samples, 0) for t, v in conditions.items()}
            constraints = [Constraint(c.timestep, c.dims, c.values.repeat_interleave(num_samples, 0))
                           for c in constraints]
        if generator is None and seed is not None:
            if isinstance(seed, (int, np.integer)):
                generator = torch.Generator(self.device).manual_seed(int(seed))
            else:
                if len(seed) != start.shape[0]:
                    raise ValueError(f"{len(seed)} seeds for {start.shape[0]} start states: give one per start")
                generator = generators(seed, self.device)
        out = self.model.sample(start.shape[0] * num_samples, horizon=horizon, conditions=conditions,
                                constraints=constraints, experts=self.experts, sampler=sampler or self.sampler,
                                generator=generator, return_chain=return_chain, warm_start=warm_start,
                                warm_level=warm_level, weight=self.model_weight if model_weight is None else model_weight,
                                corrector=corrector or self.corrector)
        raw = self.normalizer.unnormalize_trajectory(out.trajectories)
        chain = None
        if out.chain is not None:
            chain = self.layout.states(self.normalizer.unnormalize_trajectory(out.chain))
        return Plan(self.layout.states(raw), self.layout.actions(raw), out.trajectories, chain)
