"""A small MLP denoiser for low-dimensional data (2-D toys): x (B, H, D) flattened, plus a time embedding."""

from __future__ import annotations

import torch
from torch import nn

from diffuser.models.layers import SinusoidalPosEmb


class MLPDenoiser(nn.Module):
    """``forward(x (B, H, D), t (B,)) -> (B, H, D)``: an MLP on [x flattened, embedding of t].

    Args:
        shape: (H, D) of one sample.
        hidden: width of the hidden layers; layers: how many.
    """

    def __init__(self, shape: tuple[int, int] = (1, 2), hidden: int = 128, layers: int = 3, time_dim: int = 32):
        super().__init__()
        self.shape = tuple(shape)
        n = self.shape[0] * self.shape[1]
        self.time = nn.Sequential(SinusoidalPosEmb(time_dim), nn.Linear(time_dim, time_dim), nn.SiLU())
        blocks: list[nn.Module] = []
        width = n + time_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        blocks.append(nn.Linear(width, n))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"MLPDenoiser takes samples of shape (B, {self.shape[0]}, {self.shape[1]}), got {tuple(x.shape)}")
        h = torch.cat([x.flatten(1), self.time(t.float())], dim=-1)
        return self.net(h).reshape(x.shape)
