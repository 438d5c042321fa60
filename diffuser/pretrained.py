"""Build a TrajectoryDiffusion from plain configs, export it with its normalizer, load it back.

An export is ``config.json`` + ``model.safetensors`` (see :mod:`diffuser.training.checkpoint`); it is
enough to rebuild the model on any device without the training code's config files and without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from diffuser.data.layout import TrajectoryLayout
from diffuser.data.normalizers import TrajectoryNormalizer
from diffuser.diffusion.model import DiffusionConfig, TrajectoryDiffusion
from diffuser.models.temporal_unet import TemporalUnet, UNetConfig
from diffuser.training.checkpoint import CheckpointError, load_export

KIND = "trajectory_diffusion"


def build_diffusion(layout: TrajectoryLayout, horizon: int, model: UNetConfig | Mapping,
                    diffusion: DiffusionConfig | Mapping) -> TrajectoryDiffusion:
    """A fresh (untrained) model; raises ValueError when the horizon does not suit the U-Net."""
    model = model if isinstance(model, UNetConfig) else UNetConfig.from_dict(dict(model))
    diffusion = diffusion if isinstance(diffusion, DiffusionConfig) else DiffusionConfig.from_dict(dict(diffusion))
    denoiser = TemporalUnet(layout.transition_dim, model)
    denoiser.check_horizon(horizon)
    return TrajectoryDiffusion(denoiser, layout, horizon, diffusion)


def export_state(model: TrajectoryDiffusion, normalizer: TrajectoryNormalizer, model_config: UNetConfig,
                 **meta: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, config) for :func:`diffuser.training.checkpoint.save_export`.

    ``meta`` (dataset id, step, seed, git commit, data config…) is stored in the config as is.
    """
    tensors = {f"model.{k}": v for k, v in model.denoiser.state_dict().items()}
    tensors.update({f"normalizer.{k}": v for k, v in normalizer.state_dict().items()})
    config = {
        "kind": KIND,
        "layout": model.layout.to_dict(),
        "horizon": model.horizon,
        "model": {"name": "temporal_unet", **model_config.to_dict()},
        "diffusion": model.config.to_dict(),
        "normalizer": normalizer.to_config(),
        **meta,
    }
    return tensors, config


@dataclass
class LoadedModel:
    model: TrajectoryDiffusion
    normalizer: TrajectoryNormalizer
    config: dict


def load_model(path: str | Path, device: str | torch.device = "cpu", *, dataset: str | None = None,
               layout: TrajectoryLayout | None = None) -> LoadedModel:
    """Load an export directory (or a run directory containing ``checkpoint/``) onto ``device``.

    ``dataset`` / ``layout``: what the caller is about to use the model on; a checkpoint trained on
    another dataset or with other observation/action sizes is refused with both named.
    """
    path = Path(path)
    if (path / "checkpoint").is_dir() and not (path / "model.safetensors").exists():
        path = path / "checkpoint"
    tensors, config = load_export(path, device=device)
    if config.get("kind") != KIND:
        raise CheckpointError(f"{path} holds a {config.get('kind')!r} checkpoint, not a {KIND!r} one")
    try:
        saved_layout = TrajectoryLayout.from_dict(config["layout"])
        model_cfg = {k: v for k, v in config["model"].items() if k != "name"}
        model = build_diffusion(saved_layout, config["horizon"], model_cfg, config["diffusion"])
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        model.denoiser.load_state_dict(weights, strict=True)
        norm_tensors = {k[len("normalizer."):]: v for k, v in tensors.items() if k.startswith("normalizer.")}
        normalizer = TrajectoryNormalizer.from_state(config["normalizer"], norm_tensors)
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path} does not match the model its config describes: {e}") from e
    if dataset is not None and config.get("dataset") != dataset:
        raise CheckpointError(f"{path} was trained on dataset {config.get('dataset')!r}, not {dataset!r}; "
                              "use a checkpoint trained on this dataset or train one")
    if layout is not None and layout != model.layout:
        raise CheckpointError(f"{path} plans with {model.layout} but the environment has {layout}: "
                              "observation or action sizes differ")
    model.to(device).eval()
    return LoadedModel(model, normalizer, config)
