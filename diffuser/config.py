"""Structured configs for Hydra: one dataclass per concern, registered so that a typo fails loudly.

``configs/*.yaml`` fill these schemas; ``diffuser train model.dim=16 trainer.steps=500`` overrides them,
and ``diffuser train model.dimm=16`` is an error naming the unknown key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from diffuser.diffusion.model import DiffusionConfig
from diffuser.models.temporal_unet import UNetConfig
from diffuser.models.value_net import ValueConfig
from diffuser.training.trainer import TrainerConfig

WINDOW_KINDS = ("goal", "sequence", "value")


@dataclass
class DataConfig:
    dataset: str = "synthetic/pointmass"  # a local Minari id "namespace/name-vN", a D4RL .hdf5 path, or "synthetic/pointmass"
    horizon: int = 32  # H, steps per training window (must suit the U-Net: divisible by 2^(levels-1))
    window: str = "goal"  # "goal": first and last state clamped (maze planning); "sequence": first state only; "value": sequence + return-to-go (return-conditioned models)
    padding: str = "edge"  # past an episode's end: "none" (no such windows) | "edge" (hold last state) | "zeros"
    rest_dims: List[int] = field(default_factory=list)  # state dims zeroed on padded steps (velocities: stay at rest)
    stride: int = 1  # keep every stride-th step: H states span (H-1)*stride+1 env steps
    normalizer: str = "limits"  # "limits" (to [-1, 1], pairs with clip_denoised) | "gaussian"
    val_fraction: float = 0.05  # share of episodes held out for the validation loss
    max_episodes: Optional[int] = None  # read at most this many episodes (quick runs)
    stitch: bool = False  # join consecutive episodes that continue one another into one stream (PointMaze)
    synthetic_episodes: int = 400  # size of the synthetic dataset, when that is the source
    discount: float = 0.99  # return-to-go discount of "value" windows (value models inherit it from the checkpoint)
    termination_penalty: float = -100.0  # added to the last reward of a terminated episode, in return targets
    bootstrap_truncated: bool = False  # continue a time-limited episode's return past the cut at its last reward rate


@dataclass
class TrainRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run_dir: str = "runs/${now:%Y%m%d-%H%M%S}"  # where logs, the export and the resume state go
    resume: bool = False  # continue the run found in run_dir
    name: str = "train"  # a label stored with the checkpoint


@dataclass
class ValueRunConfig:
    checkpoint: str = "???"  # the diffusion checkpoint to guide: its dataset, normalizer, horizon and schedule are used
    value: ValueConfig = field(default_factory=ValueConfig)
    discount: Optional[float] = None  # return-to-go discount (None: the diffusion model's data.discount)
    termination_penalty: Optional[float] = None  # None: the diffusion model's data.termination_penalty
    bootstrap_truncated: Optional[bool] = None  # None: the diffusion model's data.bootstrap_truncated
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run_dir: str = "runs/value-${now:%Y%m%d-%H%M%S}"
    resume: bool = False
    name: str = "value"


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainRunConfig)
    cs.store(name="train_value_schema", node=ValueRunConfig)


def to_container(cfg: Any) -> dict:
    """An OmegaConf config (or dataclass) as a plain JSON-able dict, interpolations resolved."""
    from omegaconf import OmegaConf

    if not OmegaConf.is_config(cfg):
        cfg = OmegaConf.structured(cfg)
    return OmegaConf.to_container(cfg, resolve=True)
