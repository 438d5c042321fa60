"""ValueFunction: a value network trained on noisy trajectories, for value-guided planning.

V(x_t, t) predicts the discounted return-to-go from a window's first step (to the episode's end, with a
termination penalty; see :class:`~diffuser.data.windows.ValueDataset`) from the window noised to a random
diffusion step t, as the planner will see it mid-sampling. The start state is clamped in x_t (planning
always clamps it), so it carries no noise here either.

Targets are standardised with the training set's return mean and std, held by the model: the guide
differentiates the standardised value, so one guide scale means the same on every reward scale, and
:meth:`returns` gives raw returns back.

:class:`ValueEnsemble` reads several value functions trained apart (other seeds) as one, optionally
pessimistic where they disagree.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from diffuser.data.layout import TrajectoryLayout
from diffuser.diffusion.constraints import Inpaint, state_constraints
from diffuser.diffusion.schedules import NoiseSchedule
from diffuser.models.value_net import ValueNet

__all__ = ["ValueEnsemble", "ValueFunction"]


class ValueFunction(nn.Module):
    """A :class:`ValueNet` with its noise schedule and return statistics.

    Args:
        network: ``network(x (B, H, D), t (B,)) -> (B, 1)``.
        layout: the trajectory layout (the diffusion model's).
        horizon: H, the window length (the network's fixed horizon).
        num_steps / beta_schedule: the diffusion model's schedule; values are trained at its noise levels.
        return_mean / return_std: statistics of the training targets (raw returns).
    """

    def __init__(self, network: ValueNet, layout: TrajectoryLayout, horizon: int, num_steps: int,
                 beta_schedule: str = "cosine", return_mean: float = 0.0, return_std: float = 1.0):
        super().__init__()
        if network.horizon != horizon or network.transition_dim != layout.transition_dim:
            raise ValueError(f"value network takes (H={network.horizon}, D={network.transition_dim}), but the "
                             f"trajectories are (H={horizon}, D={layout.transition_dim})")
        if not return_std > 0:
            raise ValueError(f"return_std must be > 0, got {return_std}")
        self.network, self.layout, self.horizon = network, layout, int(horizon)
        self.schedule = NoiseSchedule(num_steps, beta_schedule)
        self.return_mean, self.return_std = float(return_mean), float(return_std)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Standardised value (B,) of noisy normalised trajectories x (B, H, D) at steps t (B,)."""
        return self.network(x, t)[:, 0]

    def returns(self, x: torch.Tensor, t: torch.Tensor | int = 0) -> torch.Tensor:
        """Predicted raw return (B,); ``t = 0`` for clean trajectories."""
        if not torch.is_tensor(t):
            t = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
        return self(x, t) * self.return_std + self.return_mean

    def loss(self, batch: Mapping) -> tuple[torch.Tensor, dict[str, float]]:
        """MSE of standardised values on windows noised at random steps; also the MAE in raw return units."""
        x0, target = batch["trajectories"], batch["values"][:, 0]
        t = torch.randint(0, self.schedule.num_steps, (x0.shape[0],), device=x0.device)
        xt = self.schedule.q_sample(x0, t, torch.randn_like(x0))
        inpaint = Inpaint.from_constraints(state_constraints(self.layout, batch.get("conditions", {})),
                                           x0.shape, device=x0.device, dtype=x0.dtype)
        if inpaint is not None:
            xt = inpaint.apply(xt)
        pred = self(xt, t)
        z = (target - self.return_mean) / self.return_std
        loss = torch.mean((pred - z) ** 2)
        mae = (pred.detach() - z).abs().mean() * self.return_std
        return loss, {"value_mae": mae}


class ValueEnsemble(nn.Module):
    """Value functions trained apart for the same diffusion model, read as one value: the members' mean
    standardised value minus ``pessimism`` times their spread (population std).

    Why: one value network, trained longer or on another seed, can rank the denoiser's own plans very
    differently (README, Hopper medium-expert-v1). The mean does not depend on one seed, and where the
    members disagree (plans unlike the data they were fitted on) ``pessimism > 0`` discounts the plan.
    Guidance differentiates this combined value, and candidates are ranked by it; with identical
    members it equals each of them. Measured on Hopper medium-expert-v1, three members scored between
    their single scores, with or without pessimism: an average, not a repair.

    Members must share the layout, horizon, noise schedule and return statistics (the same dataset,
    discount and termination penalty): the ensemble's values are standardised with their statistics.
    """

    def __init__(self, members: Sequence[ValueFunction], pessimism: float = 0.0):
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 value functions, got {len(members)}")
        if not pessimism >= 0:
            raise ValueError(f"pessimism must be >= 0, got {pessimism}")
        first = members[0]
        for i, m in enumerate(members[1:], 1):
            problems = [name for name, a, b in (
                ("layout", first.layout, m.layout), ("horizon", first.horizon, m.horizon),
                ("noise schedule", (first.schedule.num_steps, first.schedule.beta_schedule),
                 (m.schedule.num_steps, m.schedule.beta_schedule)),
                ("return statistics", (first.return_mean, first.return_std), (m.return_mean, m.return_std)))
                if a != b]
            if problems:
                raise ValueError(f"value function {i} differs from value function 0 in its {', '.join(problems)}: "
                                 "ensemble value functions trained for the same diffusion checkpoint with the same "
                                 "discount and termination penalty (only the seed differing)")
        self.members = nn.ModuleList(members)
        self.pessimism = float(pessimism)
        self.layout, self.horizon, self.schedule = first.layout, first.horizon, first.schedule
        self.return_mean, self.return_std = first.return_mean, first.return_std

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Standardised value (B,): the members' mean minus ``pessimism`` x their std."""
        values = torch.stack([m(x, t) for m in self.members], dim=0)  # (K, B)
        mean = values.mean(dim=0)
        if self.pessimism == 0.0:
            return mean
        # The small floor keeps the gradient finite where the members agree exactly (d sqrt(v)/dv at 0).
        spread = torch.sqrt(values.var(dim=0, correction=0) + 1e-12)
        return mean - self.pessimism * spread

    returns = ValueFunction.returns  # the same conversion to raw returns
