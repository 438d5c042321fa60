"""A same-machine baseline for ``diffuser bench``: the original Diffuser's code path, re-created.

The original implementation cannot be installed here, and timings taken on another machine do not
compare with ours, so the benchmark also times this re-creation, written from the paper's description:
the same temporal U-Net (layer for layer, parameter for parameter) built the way the original builds it
(``nn.Sequential`` blocks, einops ``Rearrange`` modules, ``nn.Mish``, a step embedding recomputed
each call), trained with the for-loop Adam, and sampled with the original's loop structure (``no_grad``,
coefficient gathers every step, a Python loop over the conditions after every step).
It is for timing only: nothing else in the library uses it.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import nn


class _PosEmb(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        args = t[:, None] * freqs[None]
        return torch.cat((args.sin(), args.cos()), dim=-1)


def _conv_block(i, o, k):
    return nn.Sequential(nn.Conv1d(i, o, k, padding=k // 2), Rearrange("b c h -> b c 1 h"), nn.GroupNorm(8, o),
                         Rearrange("b c 1 h -> b c h"), nn.Mish())


class _ResBlock(nn.Module):
    def __init__(self, i, o, emb, k=5):
        super().__init__()
        self.blocks = nn.ModuleList([_conv_block(i, o, k), _conv_block(o, o, k)])
        self.time_mlp = nn.Sequential(nn.Mish(), nn.Linear(emb, o), Rearrange("b c -> b c 1"))
        self.residual = nn.Conv1d(i, o, 1) if i != o else nn.Identity()

    def forward(self, x, t):
        out = self.blocks[0](x) + self.time_mlp(t)
        return self.blocks[1](out) + self.residual(x)


class BaselineUnet(nn.Module):
    """The paper's temporal U-Net, built as the original builds it. ``(B, H, D), (B,) -> (B, H, D)``."""

    def __init__(self, transition_dim, dim=32, dim_mults=(1, 2, 4, 8)):
        super().__init__()
        dims = [transition_dim, *[dim * m for m in dim_mults]]
        pairs = list(zip(dims[:-1], dims[1:]))
        self.time_mlp = nn.Sequential(_PosEmb(dim), nn.Linear(dim, dim * 4), nn.Mish(), nn.Linear(dim * 4, dim))
        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()
        for i, (a, b) in enumerate(pairs):
            last = i == len(pairs) - 1
            self.downs.append(nn.ModuleList([_ResBlock(a, b, dim), _ResBlock(b, b, dim),
                                             nn.Conv1d(b, b, 3, 2, 1) if not last else nn.Identity()]))
        mid = dims[-1]
        self.mid1, self.mid2 = _ResBlock(mid, mid, dim), _ResBlock(mid, mid, dim)
        for a, b in reversed(pairs[1:]):
            self.ups.append(nn.ModuleList([_ResBlock(b * 2, a, dim), _ResBlock(a, a, dim),
                                           nn.ConvTranspose1d(a, a, 4, 2, 1)]))
        self.final = nn.Sequential(_conv_block(dim, dim, 5), nn.Conv1d(dim, transition_dim, 1))

    def forward(self, x, t):
        x = rearrange(x, "b h d -> b d h")
        t = self.time_mlp(t)
        skips = []
        for r1, r2, down in self.downs:
            x = r2(r1(x, t), t)
            skips.append(x)
            x = down(x)
        x = self.mid2(self.mid1(x, t), t)
        for r1, r2, up in self.ups:
            x = up(r2(r1(torch.cat((x, skips.pop()), dim=1), t), t))
        return rearrange(self.final(x), "b d h -> b h d")


def _extract(a, t, shape):
    return a.gather(-1, t).reshape(t.shape[0], *((1,) * (len(shape) - 1)))


class BaselineDiffusion(nn.Module):
    """x0-predicting DDPM with the original's per-step bookkeeping."""

    def __init__(self, net, schedule, observation_dim, action_dim):
        super().__init__()
        self.net, self.obs_dim, self.act_dim = net, observation_dim, action_dim
        self.T = schedule.num_steps
        f = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        ab = schedule.alpha_bar
        self.register_buffer("sqrt_ab", f(ab**0.5))
        self.register_buffer("sqrt_1mab", f((1 - ab) ** 0.5))
        self.register_buffer("coef_x0", f(schedule.posterior_coef_x0))
        self.register_buffer("coef_xt", f(schedule.posterior_coef_xt))
        self.register_buffer("log_var", f(torch.log(torch.as_tensor(schedule.posterior_variance).clamp(min=1e-20))))

    def _condition(self, x, cond):
        for t, v in cond.items():
            x[:, t, self.act_dim:] = v.clone()
        return x

    def loss(self, x0, cond):
        t = torch.randint(0, self.T, (x0.shape[0],))
        noise = torch.randn_like(x0)
        xt = _extract(self.sqrt_ab, t, x0.shape) * x0 + _extract(self.sqrt_1mab, t, x0.shape) * noise
        xt = self._condition(xt, cond)
        recon = self._condition(self.net(xt, t), cond)
        return ((recon - x0) ** 2).mean()

    @torch.no_grad()
    def sample(self, batch, horizon, cond):
        x = torch.randn(batch, horizon, self.obs_dim + self.act_dim)
        x = self._condition(x, cond)
        for i in reversed(range(self.T)):
            t = torch.full((batch,), i, dtype=torch.long)
            x0 = self.net(x, t).clamp(-1, 1)
            mean = _extract(self.coef_x0, t, x.shape) * x0 + _extract(self.coef_xt, t, x.shape) * x
            nonzero = (1 - (t == 0).float()).reshape(batch, 1, 1)
            x = mean + nonzero * (0.5 * _extract(self.log_var, t, x.shape)).exp() * torch.randn_like(x)
            x = self._condition(x, cond)
        return x
