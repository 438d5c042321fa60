"""Value network for guided planning (Janner et al., 2022).

Predicts the (discounted) return of a noisy trajectory at a diffusion step: the temporal U-Net's
encoder half, downsampling at every level, two more residual blocks that halve the channels and
the horizon, then an MLP over the flattened features and the step embedding.

Unlike the U-Net it is not fully convolutional: the flattened feature size depends on the
horizon, which is therefore fixed at construction. That size is computed from the exact
convolution arithmetic, so every horizon >= 1 works (the original implementation estimated it
and failed for some horizons, e.g. H=32 with dim_mults=(1, 4, 8)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from .layers import Downsample1d, Mish, ResidualTemporalBlock, SinusoidalPosEmb
from .net_config import NetConfig

__all__ = ["ValueConfig", "ValueNet"]

_GROUPS = 8  # GroupNorm groups in every block, as in the paper


@dataclass
class ValueConfig(NetConfig):
    """Size of a :class:`ValueNet`. JSON-friendly through ``to_dict``/``from_dict``."""

    dim: int = 32  # base channel width; also the size of the step embedding (multiple of 8)
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)  # width multiplier per encoder level
    kernel_size: int = 5  # temporal convolution kernel (odd)
    out_dim: int = 1  # number of predicted values (1: a scalar return)

    def __post_init__(self) -> None:
        self.dim_mults = tuple(self.dim_mults)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending field and how to fix it."""
        if not isinstance(self.dim, int) or self.dim <= 0 or self.dim % _GROUPS:
            raise ValueError(f"ValueConfig.dim must be a positive multiple of {_GROUPS} (GroupNorm), got {self.dim!r}")
        if len(self.dim_mults) == 0:
            raise ValueError("ValueConfig.dim_mults must be non-empty, e.g. (1, 2, 4, 8)")
        if any(not isinstance(m, int) or m <= 0 for m in self.dim_mults):
            raise ValueError(f"ValueConfig.dim_mults must hold positive ints, got {self.dim_mults!r}")
        widest = self.dim * self.dim_mults[-1]
        if widest % (4 * _GROUPS):
            raise ValueError(
                f"ValueConfig: dim * dim_mults[-1] = {widest} must be divisible by {4 * _GROUPS}: the "
                f"head blocks use {widest}//2 and {widest}//4 channels with GroupNorm({_GROUPS}); "
                f"raise dim or the last multiplier"
            )
        if not isinstance(self.kernel_size, int) or self.kernel_size <= 0 or self.kernel_size % 2 == 0:
            raise ValueError(f"ValueConfig.kernel_size must be a positive odd int, got {self.kernel_size!r}")
        if not isinstance(self.out_dim, int) or self.out_dim <= 0:
            raise ValueError(f"ValueConfig.out_dim must be a positive int, got {self.out_dim!r}")


def _downsampled_length(length: int, down: nn.Conv1d) -> int:
    """Output length of a 1-d convolution ``down`` on an input of ``length`` steps."""
    (k,), (s,), (p,), (d,) = down.kernel_size, down.stride, down.padding, down.dilation
    return (length + 2 * p - d * (k - 1) - 1) // s + 1


class ValueNet(nn.Module):
    """Return predictor ``V(x, t)`` for value-guided sampling.

    Args:
        horizon: H, the trajectory length this network accepts (fixed: see the module doc).
        transition_dim: D, the size of one trajectory step.
        config: widths; see :class:`ValueConfig`.
    """

    def __init__(self, horizon: int, transition_dim: int, config: ValueConfig | dict | None = None) -> None:
        super().__init__()
        if config is None:
            config = ValueConfig()
        elif isinstance(config, dict):
            config = ValueConfig.from_dict(config)
        config.validate()
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be an int >= 1, got {horizon!r}")
        if not isinstance(transition_dim, int) or transition_dim <= 0:
            raise ValueError(f"transition_dim must be a positive int, got {transition_dim!r}")
        self.config = config
        self.horizon = horizon
        self.transition_dim = transition_dim

        dim, k = config.dim, config.kernel_size
        widths = [transition_dim, *(dim * m for m in config.dim_mults)]
        self.time_mlp = nn.Sequential(
            SinusoidalPosEmb(dim), nn.Linear(dim, dim * 4), Mish(), nn.Linear(dim * 4, dim)
        )

        length = horizon
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            down = Downsample1d(c_out)
            self.blocks.append(
                nn.ModuleList([
                    ResidualTemporalBlock(c_in, c_out, dim, k, _GROUPS),
                    ResidualTemporalBlock(c_out, c_out, dim, k, _GROUPS),
                    down,
                ])
            )
            length = _downsampled_length(length, down)

        mid, mid2, mid3 = widths[-1], widths[-1] // 2, widths[-1] // 4
        self.mid_block1 = ResidualTemporalBlock(mid, mid2, dim, k, _GROUPS)
        self.mid_down1 = Downsample1d(mid2)
        length = _downsampled_length(length, self.mid_down1)
        self.mid_block2 = ResidualTemporalBlock(mid2, mid3, dim, k, _GROUPS)
        self.mid_down2 = Downsample1d(mid3)
        length = _downsampled_length(length, self.mid_down2)

        self.flat_dim = mid3 * length  # features after the last downsample, from exact arithmetic
        self.head = nn.Sequential(
            nn.Linear(self.flat_dim + dim, self.flat_dim // 2),
            Mish(),
            nn.Linear(self.flat_dim // 2, config.out_dim),
        )

    def forward(self, x: Tensor, t: Tensor | int) -> Tensor:
        """Predict values.

        Args:
            x: ``(B, H, D)`` noisy trajectories with ``H == self.horizon``, ``D == transition_dim``.
            t: ``(B,)`` diffusion steps (int or float); a scalar is broadcast to the batch.

        Returns:
            ``(B, out_dim)`` predicted values.
        """
        if x.ndim != 3 or x.shape[-1] != self.transition_dim:
            raise ValueError(
                f"expected x of shape (B, {self.horizon}, {self.transition_dim}) "
                f"(batch, horizon, transition_dim), got {tuple(x.shape)}"
            )
        if x.shape[1] != self.horizon:
            raise ValueError(
                f"this ValueNet was built for horizon {self.horizon} and cannot take horizon "
                f"{x.shape[1]} (its flattened feature size depends on the horizon); build one "
                f"with ValueNet(horizon={x.shape[1]}, ...)"
            )
        batch = x.shape[0]
        if not isinstance(t, Tensor):
            t = torch.full((batch,), t, device=x.device)
        elif t.ndim == 0:
            t = t.expand(batch)
        elif t.shape != (batch,):
            raise ValueError(f"expected t of shape ({batch},) or a scalar, got {tuple(t.shape)}")

        emb = self.time_mlp(t)
        h = rearrange(x, "b h d -> b d h")
        for block1, block2, down in self.blocks:
            h = block1(h, emb)
            h = block2(h, emb)
            h = down(h)
        h = self.mid_down1(self.mid_block1(h, emb))
        h = self.mid_down2(self.mid_block2(h, emb))
        return self.head(torch.cat((h.flatten(1), emb), dim=-1))

    def extra_repr(self) -> str:
        return f"horizon={self.horizon}, transition_dim={self.transition_dim}, flat_dim={self.flat_dim}"
