"""Building blocks shared by the temporal U-Net and the value network.

Every block works on channels-first sequences ``(B, C, H)``: batch, channels, horizon. The
conversion from the library's public ``(B, H, D)`` layout happens once, at the network boundary.

The layers follow Janner et al. (2022): Conv1d -> GroupNorm(8) -> Mish blocks, a diffusion-step
embedding (Mish -> Linear) added over the horizon inside residual blocks, stride-2 convolutions
to go down in time and transposed convolutions to come back up. The forward passes are written
flat (no ``nn.Sequential`` walks, no no-op reshapes) because at planning batch sizes a large
share of the time goes to per-op overhead rather than arithmetic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "mish",
    "Mish",
    "SinusoidalPosEmb",
    "Conv1dBlock",
    "ResidualTemporalBlock",
    "Downsample1d",
    "Upsample1d",
    "ChannelLayerNorm",
    "LinearAttention",
    "AttentionBlock",
]


def mish(x: Tensor) -> Tensor:
    """Mish activation ``x * tanh(softplus(x))``, any shape.

    On the CPU it is computed from one exponential: with n = eˣ, tanh(softplus(x)) = n(n+2) / (n(n+2) + 2).
    PyTorch's CPU kernel evaluates a softplus and a tanh per element and was about 3x slower on planning
    activations, a third of a small U-Net's plan time. x is clamped at 20 inside the exponential (where
    tanh(softplus(x)) = 1 in float32) so n(n+2) stays finite; float16 would overflow, so it and every other
    device keep PyTorch's kernel.
    """
    if x.device.type != "cpu" or x.dtype == torch.float16:
        return F.mish(x)
    n = torch.exp(torch.clamp(x, max=20.0))
    m = n * (n + 2)  # (1 + eˣ)² − 1
    return x * m / (m + 2)


class Mish(nn.Module):
    """Module form of :func:`mish`; ``(*) -> (*)``."""

    def forward(self, x: Tensor) -> Tensor:
        return mish(x)


class SinusoidalPosEmb(nn.Module):
    """Sinusoidal embedding of a (diffusion step) scalar per sample.

    ``t (B,)`` int or float -> ``(B, dim)``: ``[sin(t * f_0..f_{dim/2-1}), cos(...)]`` with
    geometrically spaced frequencies ``f_i = 10000^(-i / (dim/2 - 1))``.

    The frequency table is a non-persistent buffer: computed once, moved with ``.to()``,
    never written to checkpoints.
    """

    freqs: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"SinusoidalPosEmb needs an even dim >= 4, got dim={dim}")
        self.dim = dim
        half = dim // 2
        step = math.log(10000) / (half - 1)
        self.register_buffer("freqs", torch.exp(torch.arange(half) * -step), persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        """``t (B,)`` -> ``(B, dim)`` in the buffer's dtype."""
        args = t.to(self.freqs.dtype)[:, None] * self.freqs
        return torch.cat((args.sin(), args.cos()), dim=-1)


class Conv1dBlock(nn.Module):
    """Conv1d (same padding) -> GroupNorm -> Mish.

    ``(B, in_ch, H)`` -> ``(B, out_ch, H)``. GroupNorm normalises each sample on its own, so the
    output for one sample never depends on the rest of the batch.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, n_groups: int = 8) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep the horizon, got {kernel_size}")
        if out_ch % n_groups:
            raise ValueError(f"out_ch={out_ch} is not divisible by n_groups={n_groups} (GroupNorm)")
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
        self.norm = nn.GroupNorm(n_groups, out_ch)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_ch, H)`` -> ``(B, out_ch, H)``."""
        return mish(self.norm(self.conv(x)))


class ResidualTemporalBlock(nn.Module):
    """Two Conv1dBlocks with the step embedding added in between, plus a residual path.

    ``out = block2(block1(x) + Linear(mish(emb))[..., None]) + skip(x)`` where ``skip`` is a 1x1
    convolution when the channel count changes and the identity otherwise.

    Shapes: ``x (B, in_ch, H)``, ``emb (B, embed_dim)`` -> ``(B, out_ch, H)``.
    """

    def __init__(
        self, in_ch: int, out_ch: int, embed_dim: int, kernel_size: int = 5, n_groups: int = 8
    ) -> None:
        super().__init__()
        self.block1 = Conv1dBlock(in_ch, out_ch, kernel_size, n_groups)
        self.block2 = Conv1dBlock(out_ch, out_ch, kernel_size, n_groups)
        self.emb_proj = nn.Linear(embed_dim, out_ch)
        self.skip: nn.Module = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """``x (B, in_ch, H)``, ``emb (B, embed_dim)`` -> ``(B, out_ch, H)``."""
        h = self.block1(x)
        # In-place adds are safe for autograd: mish saves its input, not its output, and the
        # convolution that follows only sees h after the add. They save two allocations.
        h += self.emb_proj(mish(emb)).unsqueeze(-1)
        h = self.block2(h)
        h += self.skip(x)
        return h


class Downsample1d(nn.Conv1d):
    """Halve the horizon with a stride-2 convolution (kernel 3, padding 1).

    ``(B, C, H)`` -> ``(B, C, ceil(H / 2))``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim, dim, kernel_size=3, stride=2, padding=1)


class Upsample1d(nn.ConvTranspose1d):
    """Double the horizon with a transposed convolution (kernel 4, stride 2, padding 1).

    ``(B, C, H)`` -> ``(B, C, 2H)``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim, dim, kernel_size=4, stride=2, padding=1)


class ChannelLayerNorm(nn.Module):
    """Layer norm over the channel axis of a channels-first sequence, at each time step.

    ``(B, C, H)`` -> ``(B, C, H)``; biased variance, learned per-channel gain and bias.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H)`` -> ``(B, C, H)``."""
        y = F.layer_norm(rearrange(x, "b c h -> b h c"), self.weight.shape, self.weight, self.bias, self.eps)
        return rearrange(y, "b h c -> b c h")


class LinearAttention(nn.Module):
    """Multi-head linear attention over the horizon (softmax over keys along time).

    Each head builds a ``(dim_head, dim_head)`` context from softmax-normalised keys and values,
    then reads it with the scaled queries, so the cost is linear in the horizon.

    ``(B, dim, H)`` -> ``(B, dim, H)``.
    """

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim_head**-0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv1d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv1d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, dim, H)`` -> ``(B, dim, H)``."""
        q, k, v = rearrange(self.to_qkv(x), "b (qkv h c) n -> qkv b h c n", qkv=3, h=self.heads)
        k = k.softmax(dim=-1)
        context = k @ v.transpose(-1, -2)  # (b, h, c_k, c_v): sum over time of k_d * v_e
        out = context.transpose(-1, -2) @ (q * self.scale)  # (b, h, c_v, n)
        return self.to_out(rearrange(out, "b h c n -> b (h c) n"))


class AttentionBlock(nn.Module):
    """Pre-norm residual linear attention: ``x + LinearAttention(ChannelLayerNorm(x))``.

    ``(B, dim, H)`` -> ``(B, dim, H)``.
    """

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        self.norm = ChannelLayerNorm(dim)
        self.attn = LinearAttention(dim, heads, dim_head)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, dim, H)`` -> ``(B, dim, H)``."""
        return x + self.attn(self.norm(x))
