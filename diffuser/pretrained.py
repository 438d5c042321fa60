"""Build a TrajectoryDiffusion from plain configs, export it with its normalizer, load it back.

An export is ``config.json`` + ``model.safetensors`` (see :mod:`diffuser.training.checkpoint`); it is
enough to rebuild the model on any device without the training code's config files and without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from diffuser.data.layout import TrajectoryLayout
from diffuser.data.normalizers import TrajectoryNormalizer
from diffuser.diffusion.model import DiffusionConfig, TrajectoryDiffusion
from diffuser.diffusion.value import ValueEnsemble, ValueFunction
from diffuser.models.inverse_dynamics import InverseDynamics, InverseDynamicsConfig
from diffuser.models.temporal_unet import TemporalUnet, UNetConfig
from diffuser.models.value_net import ValueConfig, ValueNet
from diffuser.training.checkpoint import CheckpointError, load_export

KIND = "trajectory_diffusion"


def build_diffusion(layout: TrajectoryLayout, horizon: int, model: UNetConfig | Mapping,
                    diffusion: DiffusionConfig | Mapping, return_stats: Mapping | None = None) -> TrajectoryDiffusion:
    """A fresh (untrained) model; raises ValueError when the horizon does not suit the U-Net.

    A return-conditioned diffusion config (``condition="return"``) gets a U-Net with ``cond_dim=1``.
    """
    model = model if isinstance(model, UNetConfig) else UNetConfig.from_dict(dict(model))
    diffusion = diffusion if isinstance(diffusion, DiffusionConfig) else DiffusionConfig.from_dict(dict(diffusion))
    if diffusion.condition == "return" and model.cond_dim != 1:
        if model.cond_dim:
            raise ValueError(f"diffusion.condition=return conditions on one number, but model.cond_dim={model.cond_dim}")
        model = UNetConfig.from_dict({**model.to_dict(), "cond_dim": 1})
    denoiser = TemporalUnet(layout.transition_dim, model)
    denoiser.check_horizon(horizon)
    return TrajectoryDiffusion(denoiser, layout, horizon, diffusion, return_stats)


def export_state(model: TrajectoryDiffusion, normalizer: TrajectoryNormalizer, model_config: UNetConfig,
                 **meta: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, config) for :func:`diffuser.training.checkpoint.save_export`.

    ``meta`` (dataset id, step, seed, git commit, data config…) is stored in the config as is.
    """
    tensors = _export_tensors(model.denoiser, normalizer)
    config = {
        "kind": KIND,
        "layout": model.layout.to_dict(),
        "horizon": model.horizon,
        "model": {"name": "temporal_unet", **model_config.to_dict()},
        "diffusion": model.config.to_dict(),
        "normalizer": normalizer.to_config(),
        **meta,
    }
    if model.return_stats:
        config["returns"] = dict(model.return_stats)
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
    path, tensors, config = _read_export(path, device, KIND, f"not a {KIND!r} one")
    try:
        saved_layout = TrajectoryLayout.from_dict(config["layout"])
        model_cfg = {k: v for k, v in config["model"].items() if k != "name"}
        model = build_diffusion(saved_layout, config["horizon"], model_cfg, config["diffusion"], config.get("returns"))
        normalizer = _load_weights(model.denoiser, tensors, config)
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


VALUE_KIND = "value_function"
# What a value function's (and a return condition's) targets are made of: stored in its config, kept with its scores.
RETURN_TARGET_KEYS = ("discount", "termination_penalty", "bootstrap_truncated")


def build_value(layout: TrajectoryLayout, horizon: int, value: ValueConfig | Mapping, num_steps: int,
                beta_schedule: str = "cosine", return_mean: float = 0.0, return_std: float = 1.0) -> ValueFunction:
    """A fresh (untrained) value function for trajectories of ``layout`` and ``horizon``."""
    value = value if isinstance(value, ValueConfig) else ValueConfig.from_dict(dict(value))
    return ValueFunction(ValueNet(horizon, layout.transition_dim, value), layout, horizon, num_steps, beta_schedule,
                         return_mean, return_std)


def export_value_state(value: ValueFunction, normalizer: TrajectoryNormalizer, value_config: ValueConfig,
                       **meta: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, config) of a value function: weights, the normalizer it was trained with, and ``meta``
    (the targets' discount and termination penalty, the diffusion checkpoint it was made for, …)."""
    tensors = _export_tensors(value.network, normalizer)
    config = {
        "kind": VALUE_KIND,
        "layout": value.layout.to_dict(),
        "horizon": value.horizon,
        "model": {"name": "value_net", **value_config.to_dict()},
        "schedule": {"num_steps": value.schedule.num_steps, "beta_schedule": value.schedule.beta_schedule},
        "returns": {"mean": value.return_mean, "std": value.return_std},
        "normalizer": normalizer.to_config(),
        **meta,
    }
    return tensors, config


@dataclass
class LoadedValue:
    value: ValueFunction | ValueEnsemble
    normalizer: TrajectoryNormalizer
    config: dict


def load_value(path: str | Path, device: str | torch.device = "cpu") -> LoadedValue:
    """Load a value-function export (or a run directory containing ``checkpoint/``) onto ``device``."""
    path, tensors, config = _read_export(path, device, VALUE_KIND, f"not a value function ({VALUE_KIND!r}): train "
                                         "one with `diffuser train-value checkpoint=<diffusion checkpoint>`")
    try:
        layout = TrajectoryLayout.from_dict(config["layout"])
        model_cfg = {k: v for k, v in config["model"].items() if k != "name"}
        value = build_value(layout, config["horizon"], model_cfg, config["schedule"]["num_steps"],
                            config["schedule"]["beta_schedule"], config["returns"]["mean"], config["returns"]["std"])
        normalizer = _load_weights(value.network, tensors, config)
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path} does not match the value function its config describes: {e}") from e
    value.to(device).eval()
    return LoadedValue(value, normalizer, config)


def load_values(paths: str | Path | Sequence[str | Path], device: str | torch.device = "cpu",
                pessimism: float = 0.0) -> LoadedValue:
    """One value function, or several trained for the same diffusion checkpoint read as a
    :class:`~diffuser.diffusion.value.ValueEnsemble` (mean minus ``pessimism`` x spread)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if len(paths) == 1:
        if pessimism:
            raise ValueError("pessimism needs an ensemble: pass two or more value functions")
        return load_value(paths[0], device)
    loaded = [load_value(p, device) for p in paths]
    first = loaded[0]
    same = ("dataset", *RETURN_TARGET_KEYS, "diffusion_checkpoint")
    for path, member in zip(paths[1:], loaded[1:]):
        differ = [k for k in same if member.config.get(k) != first.config.get(k)]
        if not member.normalizer.matches(first.normalizer):
            differ.append("normalizer")
        if differ:
            raise ValueError(f"{path} differs from {paths[0]} in {', '.join(differ)}: an ensemble's value functions "
                             "must be trained for the same diffusion checkpoint, only the seed differing "
                             "(diffuser train-value checkpoint=<diffusion checkpoint> trainer.seed=N run_dir=...)")
    ensemble = ValueEnsemble([m.value for m in loaded], pessimism).to(device).eval()
    config = {**first.config, "members": [str(p) for p in paths], "pessimism": float(pessimism)}
    return LoadedValue(ensemble, first.normalizer, config)


INVERSE_KIND = "inverse_dynamics"


def export_inverse_state(model: InverseDynamics, **meta: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, config) of an inverse-dynamics model: its weights and input statistics, its sizes, and ``meta``
    (the dataset it was fit on, the fit's settings and error)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    config = {"kind": INVERSE_KIND, "observation_dim": model.observation_dim, "action_dim": model.action_dim,
              "model": {"name": "inverse_dynamics", **model.config.to_dict()}, **meta}
    return tensors, config


@dataclass
class LoadedInverse:
    model: InverseDynamics
    config: dict


def load_inverse(path: str | Path, device: str | torch.device = "cpu") -> LoadedInverse:
    """Load an inverse-dynamics export (``diffuser.training.inverse_dynamics.train_inverse_dynamics``) onto ``device``."""
    path, tensors, config = _read_export(path, device, INVERSE_KIND, f"not an inverse-dynamics model ({INVERSE_KIND!r})")
    try:
        net = InverseDynamicsConfig.from_dict({k: v for k, v in config["model"].items() if k != "name"})
        model = InverseDynamics(config["observation_dim"], config["action_dim"], net)
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path} does not match the inverse-dynamics model its config describes: {e}") from e
    return LoadedInverse(model.to(device).eval(), config)


def compile_for_planning(*loaded: LoadedModel | LoadedValue | None, backend: str = "inductor") -> None:
    """``torch.compile`` the networks of loaded models in place, for planning.

    The math is unchanged (the same weights and ops; float results equal up to summation order), while the
    compiler fuses GroupNorm, Mish and the additions that dominate a small network's time on a CPU. The first
    batch shape compiles a graph for itself, a second one a graph for every batch size (evaluations drop the
    environments that are done), each for the value network with and without gradients: two to three minutes
    for a planner on a 2-core CPU, so it can pay off over long evaluations, never for single plans (on the CPU
    measured in the README it gained nothing).
    Compiling twice is a no-op; ``None`` entries are skipped (a planner without a value function).
    """
    for item in loaded:
        if item is None:
            continue
        if isinstance(item, LoadedModel):
            owners = [(item.model, "denoiser")]
        else:
            members = item.value.members if isinstance(item.value, ValueEnsemble) else [item.value]
            owners = [(member, "network") for member in members]
        for owner, name in owners:
            network = getattr(owner, name)
            if not hasattr(network, "_orig_mod"):  # already an OptimizedModule
                setattr(owner, name, torch.compile(network, backend=backend))


def _export_tensors(network: torch.nn.Module, normalizer: TrajectoryNormalizer) -> dict[str, torch.Tensor]:
    """An export's tensors: the network's weights under ``model.*``, the normalizer's statistics under ``normalizer.*``."""
    tensors = {f"model.{k}": v for k, v in network.state_dict().items()}
    tensors.update({f"normalizer.{k}": v for k, v in normalizer.state_dict().items()})
    return tensors


def export_dir(path: str | Path) -> Path:
    """The export directory of ``path``: itself, or the ``checkpoint/`` of a run directory."""
    path = Path(path)
    if (path / "checkpoint").is_dir() and not (path / "model.safetensors").exists():
        return path / "checkpoint"
    return path


def _read_export(path, device, kind: str, what_else: str) -> tuple[Path, dict[str, torch.Tensor], dict]:
    """(export dir, tensors, config) of an export dir or a run dir holding ``checkpoint/``, refusing other kinds."""
    path = export_dir(path)
    tensors, config = load_export(path, device=device)
    if config.get("kind") != kind:
        raise CheckpointError(f"{path} holds a {config.get('kind')!r} checkpoint, {what_else}")
    return path, tensors, config


def _load_weights(network: torch.nn.Module, tensors: dict[str, torch.Tensor], config: dict) -> TrajectoryNormalizer:
    """Load ``model.*`` into ``network`` (strictly) and rebuild the normalizer from ``normalizer.*``."""
    network.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    norm = {k[len("normalizer."):]: v for k, v in tensors.items() if k.startswith("normalizer.")}
    return TrajectoryNormalizer.from_state(config["normalizer"], norm)
