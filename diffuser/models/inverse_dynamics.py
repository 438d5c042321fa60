"""Inverse dynamics a_t = g(s_t, s_{t+1}): the action that takes the body from one state to the next.

A diffusion plan's actions need not produce the plan's own states: on Walker2d the plans foresee a walker
gathering speed while their first actions leave it standing. Decision Diffuser reads the actions off an
inverse-dynamics model learned from the dataset's transitions instead; the locomotion planner can execute
g's action in place of the plan's own, or a blend of the two
(:attr:`~diffuser.planning.locomotion.LocomotionPlanConfig.inverse_weight`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diffuser.models.net_config import NetConfig

__all__ = ["InverseDynamicsConfig", "InverseDynamics"]


@dataclass
class InverseDynamicsConfig(NetConfig):
    hidden: int = 256  # width of each MLP's hidden layers
    layers: int = 2  # hidden layers per MLP
    members: int = 1  # independently initialised MLPs, averaged: one fit's quirks (its seed) matter less

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.layers < 1 or self.members < 1:
            raise ValueError(f"hidden, layers and members must be >= 1, got {self.hidden}, {self.layers}, {self.members}")


class InverseDynamics(nn.Module):
    """``forward(state (..., S), next_state (..., S)) -> action (..., A)``, raw units in and out.

    Each member is an MLP on the standardised state and the standardised change of state (the change is
    what the action decides, and it is far smaller than the state); the members' actions are averaged.
    The standardisation is set from data by :meth:`set_statistics` and saved with the weights.
    """

    def __init__(self, observation_dim: int, action_dim: int, config: InverseDynamicsConfig | None = None):
        super().__init__()
        self.config = config = config or InverseDynamicsConfig()
        self.observation_dim, self.action_dim = observation_dim, action_dim
        self.register_buffer("state_mean", torch.zeros(observation_dim))
        self.register_buffer("state_std", torch.ones(observation_dim))
        self.register_buffer("delta_std", torch.ones(observation_dim))

        def mlp() -> nn.Sequential:
            blocks: list[nn.Module] = []
            width = 2 * observation_dim
            for _ in range(config.layers):
                blocks += [nn.Linear(width, config.hidden), nn.Mish()]
                width = config.hidden
            return nn.Sequential(*blocks, nn.Linear(width, action_dim))

        self.members = nn.ModuleList(mlp() for _ in range(config.members))

    @torch.no_grad()
    def set_statistics(self, states: torch.Tensor, next_states: torch.Tensor) -> None:
        """Standardise inputs with these transitions' statistics (a constant dimension gets scale 1)."""
        self.state_mean.copy_(states.mean(0))
        for buffer, x in ((self.state_std, states), (self.delta_std, next_states - states)):
            std = x.std(0)
            buffer.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def inputs(self, state: torch.Tensor, next_state: torch.Tensor) -> torch.Tensor:
        """(..., 2S): what every member reads, the standardised state and change of state."""
        if state.shape[-1] != self.observation_dim or next_state.shape != state.shape:
            raise ValueError(f"inverse dynamics takes two states of size {self.observation_dim} and equal shapes, "
                             f"got {tuple(state.shape)} and {tuple(next_state.shape)}")
        return torch.cat([(state - self.state_mean) / self.state_std, (next_state - state) / self.delta_std], -1)

    def member_actions(self, state: torch.Tensor, next_state: torch.Tensor) -> torch.Tensor:
        """(M, ..., A): every member's action."""
        x = self.inputs(state, next_state)
        return torch.stack([member(x) for member in self.members])

    def forward(self, state: torch.Tensor, next_state: torch.Tensor) -> torch.Tensor:
        return self.member_actions(state, next_state).mean(0)
