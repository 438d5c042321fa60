"""Networks: the temporal U-Net denoiser, the value network and their shared layers."""

from .layers import (
    AttentionBlock,
    ChannelLayerNorm,
    Conv1dBlock,
    Downsample1d,
    LinearAttention,
    Mish,
    ResidualTemporalBlock,
    SinusoidalPosEmb,
    Upsample1d,
    mish,
)
from .mlp import MLPDenoiser
from .temporal_unet import TemporalUnet, UNetConfig
from .value_net import ValueConfig, ValueNet

__all__ = [
    "MLPDenoiser",
    "TemporalUnet",
    "UNetConfig",
    "ValueNet",
    "ValueConfig",
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
