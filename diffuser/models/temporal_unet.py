"""Temporal U-Net denoiser over whole trajectories (Janner et al., 2022).

The network maps a noisy trajectory ``x (B, H, D)`` and its diffusion step ``t (B,)`` to a
prediction of the same shape (the clean trajectory or the noise, as the diffusion model decides).
It is fully convolutional in time, so one set of weights serves every horizon divisible by
``2 ** (len(dim_mults) - 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from .layers import (
    Mish,
    AttentionBlock,
    Conv1dBlock,
    Downsample1d,
    ResidualTemporalBlock,
    SinusoidalPosEmb,
    Upsample1d,
)
from .net_config import NetConfig

__all__ = ["UNetConfig", "TemporalUnet"]

_GROUPS = 8  # GroupNorm groups in every block, as in the paper


@dataclass
class UNetConfig(NetConfig):
    """Size and options of a :class:`TemporalUnet`. JSON-friendly through ``to_dict``/``from_dict``."""

    dim: int = 32  # base channel width; also the size of the step embedding (multiple of 8)
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)  # width multiplier per level: (1,2,4,8) locomotion, (1,4,8) Maze2D
    kernel_size: int = 5  # temporal convolution kernel (odd, so the horizon is preserved)
    attention: bool = False  # add pre-norm residual linear attention after each level (HalfCheetah)
    cond_dim: int = 0  # size of an optional conditioning vector (classifier-free guidance); 0 = unconditional

    def __post_init__(self) -> None:
        self.dim_mults = tuple(self.dim_mults)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending field and how to fix it."""
        if not isinstance(self.dim, int) or self.dim <= 0:
            raise ValueError(f"UNetConfig.dim must be a positive int, got {self.dim!r}")
        if self.dim % _GROUPS:
            raise ValueError(
                f"UNetConfig.dim={self.dim} must be divisible by {_GROUPS} (GroupNorm({_GROUPS}) "
                f"after the output block); try dim={max(_GROUPS, round(self.dim / _GROUPS) * _GROUPS)}"
            )
        if len(self.dim_mults) == 0:
            raise ValueError("UNetConfig.dim_mults must be non-empty, e.g. (1, 2, 4, 8)")
        for m in self.dim_mults:
            if not isinstance(m, int) or m <= 0:
                raise ValueError(f"UNetConfig.dim_mults must hold positive ints, got {self.dim_mults!r}")
            if (self.dim * m) % _GROUPS:
                raise ValueError(
                    f"UNetConfig: dim * mult = {self.dim} * {m} is not divisible by {_GROUPS} "
                    f"(GroupNorm({_GROUPS})); change dim or dim_mults={self.dim_mults}"
                )
        if not isinstance(self.kernel_size, int) or self.kernel_size <= 0 or self.kernel_size % 2 == 0:
            raise ValueError(
                f"UNetConfig.kernel_size must be a positive odd int (same padding keeps the "
                f"horizon), got {self.kernel_size!r}; the paper uses 5"
            )
        if not isinstance(self.cond_dim, int) or self.cond_dim < 0:
            raise ValueError(f"UNetConfig.cond_dim must be an int >= 0 (0 = unconditional), got {self.cond_dim!r}")


class TemporalUnet(nn.Module):
    """U-Net over the horizon of a trajectory, conditioned on the diffusion step.

    Down path: per level two residual temporal blocks (optional attention), then a stride-2
    downsample except at the last level. Middle: two blocks at the widest level. Up path: concat
    the skip, two blocks, transposed-conv upsample. Output: Conv1dBlock then 1x1 conv to
    ``transition_dim``. Step embedding: sinusoidal(dim) -> Linear(dim, 4dim) -> Mish ->
    Linear(4dim, dim); with ``cond_dim > 0`` a condition MLP's output is added to it.

    Args:
        transition_dim: D, the size of one trajectory step (actions and states).
        config: widths and options; see :class:`UNetConfig`.
    """

    def __init__(self, transition_dim: int, config: UNetConfig | dict | None = None) -> None:
        super().__init__()
        if config is None:
            config = UNetConfig()
        elif isinstance(config, dict):
            config = UNetConfig.from_dict(config)
        config.validate()
        if not isinstance(transition_dim, int) or transition_dim <= 0:
            raise ValueError(f"transition_dim must be a positive int, got {transition_dim!r}")
        self.config = config
        self.transition_dim = transition_dim
        self.num_downsamples = len(config.dim_mults) - 1

        dim, k = config.dim, config.kernel_size
        widths = [transition_dim, *(dim * m for m in config.dim_mults)]
        in_out = list(zip(widths[:-1], widths[1:]))

        self.time_mlp = nn.Sequential(
            SinusoidalPosEmb(dim), nn.Linear(dim, dim * 4), Mish(), nn.Linear(dim * 4, dim)
        )
        self.cond_mlp: nn.Module | None = None
        if config.cond_dim > 0:
            self.cond_mlp = nn.Sequential(
                nn.Linear(config.cond_dim, dim * 4), Mish(), nn.Linear(dim * 4, dim)
            )

        def attn(ch: int) -> nn.Module:
            return AttentionBlock(ch) if config.attention else nn.Identity()

        self.downs = nn.ModuleList()
        for level, (c_in, c_out) in enumerate(in_out):
            last = level == len(in_out) - 1
            self.downs.append(
                nn.ModuleList([
                    ResidualTemporalBlock(c_in, c_out, dim, k, _GROUPS),
                    ResidualTemporalBlock(c_out, c_out, dim, k, _GROUPS),
                    attn(c_out),
                    nn.Identity() if last else Downsample1d(c_out),
                ])
            )

        mid = widths[-1]
        self.mid_block1 = ResidualTemporalBlock(mid, mid, dim, k, _GROUPS)
        self.mid_attn = attn(mid)
        self.mid_block2 = ResidualTemporalBlock(mid, mid, dim, k, _GROUPS)

        self.ups = nn.ModuleList()
        for c_in, c_out in reversed(in_out[1:]):
            self.ups.append(
                nn.ModuleList([
                    ResidualTemporalBlock(c_out * 2, c_in, dim, k, _GROUPS),
                    ResidualTemporalBlock(c_in, c_in, dim, k, _GROUPS),
                    attn(c_in),
                    Upsample1d(c_in),
                ])
            )

        # widths[1] == dim for the usual mults starting at 1; the general form keeps other
        # first multipliers working instead of failing on a channel mismatch.
        self.final_block = Conv1dBlock(widths[1], dim, k, _GROUPS)
        self.final_conv = nn.Conv1d(dim, transition_dim, 1)

    # ------------------------------------------------------------------ horizons
    @property
    def horizon_multiple(self) -> int:
        """Every valid horizon is a multiple of this: ``2 ** (len(dim_mults) - 1)``."""
        return 2**self.num_downsamples

    def valid_horizons(self, upto: int = 512) -> list[int]:
        """All valid horizons in ``[1, upto]``: the multiples of :attr:`horizon_multiple`."""
        m = self.horizon_multiple
        return list(range(m, upto + 1, m))

    def check_horizon(self, horizon: int) -> None:
        """Raise ``ValueError`` listing the nearest valid horizons if ``horizon`` is not valid."""
        m = self.horizon_multiple
        if horizon >= 1 and horizon % m == 0:
            return
        below = (horizon // m) * m
        near = [h for h in (below, below + m) if h >= m] or [m]
        problem = f"is not divisible by {m}" if horizon >= 1 else f"must be a positive multiple of {m}"
        raise ValueError(
            f"horizon {horizon} {problem} (2^(levels-1) for "
            f"dim_mults={self.config.dim_mults}); valid horizons near it: "
            + ", ".join(str(h) for h in near)
        )

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: Tensor,
        t: Tensor | int,
        cond: Tensor | None = None,
        cond_mask: Tensor | None = None,
    ) -> Tensor:
        """Denoise a batch of trajectories.

        Args:
            x: ``(B, H, D)`` noisy trajectories, ``D == transition_dim``, ``H`` a valid horizon.
            t: ``(B,)`` diffusion steps (int or float); a scalar is broadcast to the batch.
            cond: ``(B, cond_dim)`` conditioning vectors, or ``None`` for "no condition"
                (zero condition embedding). Only with ``cond_dim > 0``.
            cond_mask: ``(B,)`` 1 keeps, 0 drops each sample's condition (classifier-free
                guidance training); ignored when ``cond`` is ``None``.

        Returns:
            ``(B, H, D)`` prediction.
        """
        if x.ndim != 3 or x.shape[-1] != self.transition_dim:
            raise ValueError(
                f"expected x of shape (B, H, {self.transition_dim}) (batch, horizon, transition_dim), "
                f"got {tuple(x.shape)}"
            )
        batch = x.shape[0]
        self.check_horizon(x.shape[1])
        if not isinstance(t, Tensor):
            t = torch.full((batch,), t, device=x.device)
        elif t.ndim == 0:
            t = t.expand(batch)
        elif t.shape != (batch,):
            raise ValueError(f"expected t of shape ({batch},) or a scalar, got {tuple(t.shape)}")

        emb = self.time_mlp(t)
        if cond is not None:
            emb = emb + self._cond_embedding(cond, cond_mask, batch)

        h = rearrange(x, "b h d -> b d h")
        skips = []
        for block1, block2, attn, down in self.downs:
            h = block1(h, emb)
            h = block2(h, emb)
            h = attn(h)
            skips.append(h)
            h = down(h)

        h = self.mid_block1(h, emb)
        h = self.mid_attn(h)
        h = self.mid_block2(h, emb)

        for block1, block2, attn, up in self.ups:
            h = torch.cat((h, skips.pop()), dim=1)
            h = block1(h, emb)
            h = block2(h, emb)
            h = attn(h)
            h = up(h)

        h = self.final_conv(self.final_block(h))
        return rearrange(h, "b d h -> b h d")

    def _cond_embedding(self, cond: Tensor, cond_mask: Tensor | None, batch: int) -> Tensor:
        """``cond (B, cond_dim)``, ``cond_mask (B,) | None`` -> ``(B, dim)``."""
        if self.cond_mlp is None:
            raise ValueError("this TemporalUnet is unconditional (cond_dim=0) but a cond was given")
        if cond.shape != (batch, self.config.cond_dim):
            raise ValueError(
                f"expected cond of shape ({batch}, {self.config.cond_dim}), got {tuple(cond.shape)}"
            )
        c = self.cond_mlp(cond)
        if cond_mask is not None:
            if cond_mask.shape != (batch,):
                raise ValueError(f"expected cond_mask of shape ({batch},), got {tuple(cond_mask.shape)}")
            c = c * cond_mask.to(c.dtype).unsqueeze(-1)
        return c

    def extra_repr(self) -> str:
        return f"transition_dim={self.transition_dim}, config={self.config}"
