"""Normalizers: per-dimension affine maps fitted once on training data and stored with the model.

Two kinds, as in the original Diffuser:

- ``"gaussian"`` (:class:`GaussianNormalizer`): ``(x - mean) / std``; used for locomotion.
- ``"limits"`` (:class:`LimitsNormalizer`): ``[min, max] -> [-1, 1]``; used for Maze2D, where
  sampling clips to [-1, 1].

Both keep constant dimensions harmless: a constant dimension maps to 0 and maps back to the constant
exactly (no division by zero, no amplified rounding noise).

Every map accepts numpy arrays or torch tensors of shape ``(..., D)`` and returns the same type. Torch
inputs are processed on their own device and dtype; the statistics are moved there once and cached, so
repeated calls in a sampling loop cause no host-device traffic. Statistics are kept in float64 and
exported as tensors (:meth:`Normalizer.state_dict`), so they fit into a safetensors checkpoint.

:class:`TrajectoryNormalizer` pairs one normalizer for observations with one for actions and works on
whole trajectories laid out by :class:`~diffuser.data.layout.TrajectoryLayout`.
"""

from __future__ import annotations

from typing import ClassVar, Sequence, TypeVar

import numpy as np
import torch

from diffuser.data.episodes import Episode
from diffuser.data.layout import TrajectoryLayout

__all__ = [
    "NotFittedError",
    "Normalizer",
    "GaussianNormalizer",
    "LimitsNormalizer",
    "NORMALIZER_KINDS",
    "make_normalizer",
    "TrajectoryNormalizer",
]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


class NotFittedError(RuntimeError):
    """Raised when a normalizer is used before ``fit`` or ``load_state_dict``."""


class Normalizer:
    """Base class: per-dimension statistics, fitted on (N, D) data, applied to (..., D) inputs.

    Subclasses define ``kind``, ``stat_names``, ``_compute_stats`` (float64 numpy), ``_derive`` (the
    parameters actually used, in the working dtype) and ``_forward`` / ``_inverse`` (arithmetic that
    works on numpy arrays and torch tensors alike).
    """

    kind: ClassVar[str] = ""
    stat_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self._stats: dict[str, np.ndarray] | None = None
        # (device, dtype) or ("numpy", dtype) -> derived parameters; cleared whenever stats change.
        self._cache: dict[tuple, dict] = {}

    # ------------------------------------------------------------------ state
    @property
    def fitted(self) -> bool:
        return self._stats is not None

    @property
    def dim(self) -> int:
        """D, the number of dimensions the normalizer was fitted on."""
        return int(next(iter(self._require_stats().values())).shape[0])

    def _require_stats(self) -> dict[str, np.ndarray]:
        if self._stats is None:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call fit(data) on training data, or "
                f"load_state_dict(...) from a checkpoint, before normalizing"
            )
        return self._stats

    def fit(self, data: np.ndarray | torch.Tensor) -> "Normalizer":
        """Fit the statistics on ``data`` of shape (N, D), N >= 1, all finite. Returns self."""
        if isinstance(data, torch.Tensor):
            data = data.detach().cpu().numpy()
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2:
            raise ValueError(f"{type(self).__name__}.fit expects (N, D) data, got shape {data.shape}")
        if data.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}.fit got empty data (shape {data.shape})")
        if not np.isfinite(data).all():
            row = int(np.argmax(~np.isfinite(data).all(axis=1)))
            raise ValueError(
                f"{type(self).__name__}.fit got NaN or inf (first in row {row} of {data.shape[0]}); "
                f"clean the data first"
            )
        self._set_stats(self._compute_stats(data))
        return self

    def _set_stats(self, stats: dict[str, np.ndarray]) -> None:
        self._stats = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in stats.items()}
        self._cache.clear()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Statistics as float64 CPU tensors, keyed by ``stat_names``."""
        return {k: torch.from_numpy(v.copy()) for k, v in self._require_stats().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor | np.ndarray]) -> None:
        """Restore statistics saved by :meth:`state_dict`."""
        missing = set(self.stat_names) - set(state)
        unexpected = set(state) - set(self.stat_names)
        if missing or unexpected:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: missing keys {sorted(missing)}, "
                f"unexpected keys {sorted(unexpected)} (expected {list(self.stat_names)})"
            )
        stats = {}
        for name in self.stat_names:
            value = state[name]
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().numpy()
            stats[name] = np.asarray(value, dtype=np.float64)
        shapes = {k: v.shape for k, v in stats.items()}
        if any(len(s) != 1 for s in shapes.values()) or len(set(shapes.values())) != 1:
            raise ValueError(f"{type(self).__name__}: statistics must be 1-D of equal size, got {shapes}")
        if not all(np.isfinite(v).all() for v in stats.values()):
            raise ValueError(f"{type(self).__name__}: loaded statistics hold NaN or inf")
        self._set_stats(stats)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})" if self.fitted else f"{type(self).__name__}(unfitted)"

    # ------------------------------------------------------------------ maps
    def normalize(self, x: ArrayT) -> ArrayT:
        """(..., D) -> (..., D), same type (and for torch, same device and dtype) as ``x``."""
        x, params = self._prepare(x)
        return self._forward(x, params)

    def unnormalize(self, x: ArrayT) -> ArrayT:
        """(..., D) -> (..., D), the inverse of :meth:`normalize`."""
        x, params = self._prepare(x)
        return self._inverse(x, params)

    def _prepare(self, x):
        stats = self._require_stats()
        if isinstance(x, torch.Tensor):
            if not x.is_floating_point():
                x = x.to(torch.get_default_dtype())
            key = (x.device, x.dtype)
        else:
            x = np.asarray(x)
            if not np.issubdtype(x.dtype, np.floating):
                x = x.astype(np.float64)
            key = ("numpy", x.dtype)
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} was fitted on {self.dim} dims, got input of shape {tuple(x.shape)}"
            )
        params = self._cache.get(key)
        if params is None:
            stats64 = {k: torch.from_numpy(v) for k, v in stats.items()}
            if key[0] == "numpy":
                dtype = torch.from_numpy(np.empty(0, dtype=x.dtype)).dtype
                params = {k: v.numpy() for k, v in self._derive(stats64, dtype).items()}
            else:
                params = {k: v.to(x.device) for k, v in self._derive(stats64, x.dtype).items()}
            self._cache[key] = params
        return x, params

    # ------------------------------------------------------------------ subclass hooks
    def _compute_stats(self, data: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _derive(self, stats: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _forward(self, x, p):
        raise NotImplementedError

    def _inverse(self, x, p):
        raise NotImplementedError


class GaussianNormalizer(Normalizer):
    """``(x - mean) / std`` per dimension (population std).

    Dimensions with ``std < min_std`` are left unscaled (std taken as 1): a constant dimension maps to
    exactly 0 and back to its constant, and near-constant ones are not blown up to unit variance.
    """

    kind = "gaussian"
    stat_names = ("mean", "std")

    def __init__(self, min_std: float = 1e-6) -> None:
        super().__init__()
        self.min_std = float(min_std)

    def _compute_stats(self, data):
        mean = data.mean(axis=0)
        # For a constant column the float64 mean of float32 values is already exact; pin it anyway so
        # the round trip of a constant is exact whatever the summation order.
        constant = (data == data[0]).all(axis=0)
        mean = np.where(constant, data[0], mean)
        return {"mean": mean, "std": data.std(axis=0)}

    def _derive(self, stats, dtype):
        std = torch.where(stats["std"] < self.min_std, torch.ones_like(stats["std"]), stats["std"])
        return {"mean": stats["mean"].to(dtype), "std": std.to(dtype)}

    def _forward(self, x, p):
        return (x - p["mean"]) / p["std"]

    def _inverse(self, x, p):
        return x * p["std"] + p["mean"]


class LimitsNormalizer(Normalizer):
    """Maps ``[min, max]`` to ``[-1, 1]`` per dimension; the fitted extremes land exactly on -1 and 1.

    Written as ``(x - lo) / half - shift`` with ``half = (max - min) / 2`` computed in the working dtype,
    so ``max`` gives ``2 - 1 = 1`` with no rounding. A constant dimension uses ``half = 1, shift = 0``:
    it maps to ``x - c`` (0 at the constant) and back exactly.
    """

    kind = "limits"
    stat_names = ("min", "max")

    def _compute_stats(self, data):
        return {"min": data.min(axis=0), "max": data.max(axis=0)}

    def _derive(self, stats, dtype):
        lo, hi = stats["min"].to(dtype), stats["max"].to(dtype)
        # Decide constancy in the working dtype: values distinct in float64 may collide in float16.
        constant = hi == lo
        half = torch.where(constant, torch.ones_like(lo), (hi - lo) / 2)
        shift = torch.where(constant, torch.zeros_like(lo), torch.ones_like(lo))
        return {"lo": lo, "half": half, "shift": shift}

    def _forward(self, x, p):
        return (x - p["lo"]) / p["half"] - p["shift"]

    def _inverse(self, x, p):
        return (x + p["shift"]) * p["half"] + p["lo"]


NORMALIZER_KINDS: dict[str, type[Normalizer]] = {
    GaussianNormalizer.kind: GaussianNormalizer,
    LimitsNormalizer.kind: LimitsNormalizer,
}


def make_normalizer(kind: str) -> Normalizer:
    """A fresh, unfitted normalizer of ``kind`` ("gaussian" | "limits")."""
    try:
        return NORMALIZER_KINDS[kind]()
    except KeyError:
        raise ValueError(
            f"unknown normalizer kind {kind!r}; valid kinds: {sorted(NORMALIZER_KINDS)}"
        ) from None


def _concat(parts: list, like) -> np.ndarray | torch.Tensor:
    if isinstance(like, torch.Tensor):
        return torch.cat(parts, dim=-1)
    return np.concatenate(parts, axis=-1)


class TrajectoryNormalizer:
    """One normalizer for observations and one for actions, of the same kind.

    Fit once on the training episodes (:meth:`fit`), then save with the model: :meth:`to_config` (JSON)
    and :meth:`state_dict` (flat dict of tensors, keys like ``"observations.mean"``) restore it through
    :meth:`from_state` without pickle.
    """

    def __init__(self, kind: str = "gaussian") -> None:
        self.kind = kind
        self.observations = make_normalizer(kind)
        self.actions = make_normalizer(kind)

    def _parts(self) -> dict[str, Normalizer]:
        return {"observations": self.observations, "actions": self.actions}

    @property
    def fitted(self) -> bool:
        return self.observations.fitted and self.actions.fitted

    @property
    def observation_dim(self) -> int:
        return self.observations.dim

    @property
    def action_dim(self) -> int:
        return self.actions.dim

    @property
    def layout(self) -> TrajectoryLayout:
        return TrajectoryLayout(observation_dim=self.observation_dim, action_dim=self.action_dim)

    def fit(self, episodes: Sequence[Episode]) -> "TrajectoryNormalizer":
        """Fit on every step of every episode (the training split only). Returns self."""
        if len(episodes) == 0:
            raise ValueError("TrajectoryNormalizer.fit needs at least one episode, got none")
        obs_dims = {ep.observation_dim for ep in episodes}
        act_dims = {ep.action_dim for ep in episodes}
        if len(obs_dims) != 1 or len(act_dims) != 1:
            raise ValueError(
                f"episodes disagree on dimensions: observation dims {sorted(obs_dims)}, "
                f"action dims {sorted(act_dims)}"
            )
        self.observations.fit(np.concatenate([ep.observations for ep in episodes], axis=0))
        self.actions.fit(np.concatenate([ep.actions for ep in episodes], axis=0))
        return self

    # ------------------------------------------------------------------ maps
    def normalize_observations(self, x: ArrayT) -> ArrayT:
        """(..., S) -> (..., S)"""
        return self.observations.normalize(x)

    def unnormalize_observations(self, x: ArrayT) -> ArrayT:
        """(..., S) -> (..., S)"""
        return self.observations.unnormalize(x)

    def normalize_actions(self, x: ArrayT) -> ArrayT:
        """(..., A) -> (..., A)"""
        return self.actions.normalize(x)

    def unnormalize_actions(self, x: ArrayT) -> ArrayT:
        """(..., A) -> (..., A)"""
        return self.actions.unnormalize(x)

    def _map_trajectory(self, x, forward: bool):
        layout = self.layout
        if x.shape[-1] != layout.transition_dim:
            raise ValueError(
                f"trajectory last dim must be action_dim + observation_dim = {layout.action_dim} + "
                f"{layout.observation_dim} = {layout.transition_dim}, got shape {tuple(x.shape)}"
            )
        acts, states = x[..., layout.action_slice], x[..., layout.state_slice]
        if forward:
            acts, states = self.actions.normalize(acts), self.observations.normalize(states)
        else:
            acts, states = self.actions.unnormalize(acts), self.observations.unnormalize(states)
        return _concat([acts, states], like=x)

    def normalize_trajectory(self, x: ArrayT) -> ArrayT:
        """(..., H, A + S) raw -> normalized, layout ``[actions | states]``."""
        return self._map_trajectory(x, forward=True)

    def unnormalize_trajectory(self, x: ArrayT) -> ArrayT:
        """(..., H, A + S) normalized -> raw, layout ``[actions | states]``."""
        return self._map_trajectory(x, forward=False)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat dict of float64 CPU tensors: ``"observations.<stat>"`` and ``"actions.<stat>"``."""
        return {
            f"{prefix}.{k}": v
            for prefix, norm in self._parts().items()
            for k, v in norm.state_dict().items()
        }

    def matches(self, other: "TrajectoryNormalizer") -> bool:
        """Whether ``other`` normalises the same way: same kind and (to float precision) same statistics;
        models that must read each other's trajectories need this."""
        a, b = self.state_dict(), other.state_dict()
        return self.kind == other.kind and a.keys() == b.keys() and all(torch.allclose(a[k], b[k]) for k in a)

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict`; extra keys without our prefixes are an error."""
        grouped: dict[str, dict[str, torch.Tensor]] = {p: {} for p in self._parts()}
        for key, value in tensors.items():
            prefix, _, name = key.partition(".")
            if prefix not in grouped:
                raise ValueError(
                    f"unexpected normalizer key {key!r}; keys start with 'observations.' or 'actions.'"
                )
            grouped[prefix][name] = value
        for prefix, norm in self._parts().items():
            norm.load_state_dict(grouped[prefix])

    def to_config(self) -> dict:
        """JSON-serializable description: ``{"kind", "observation_dim", "action_dim"}``."""
        return {"kind": self.kind, "observation_dim": self.observation_dim, "action_dim": self.action_dim}

    @classmethod
    def from_state(cls, config: dict, tensors: dict[str, torch.Tensor]) -> "TrajectoryNormalizer":
        """Rebuild from :meth:`to_config` and :meth:`state_dict`; checks the dims agree."""
        out = cls(kind=config["kind"])
        out.load_state_dict(tensors)
        expected = (int(config["observation_dim"]), int(config["action_dim"]))
        found = (out.observation_dim, out.action_dim)
        if found != expected:
            raise ValueError(
                f"normalizer statistics have (observation_dim, action_dim) = {found}, but the config "
                f"says {expected}; the checkpoint's normalizer does not belong to this config"
            )
        return out

    def __repr__(self) -> str:
        if not self.fitted:
            return f"TrajectoryNormalizer(kind={self.kind!r}, unfitted)"
        return (
            f"TrajectoryNormalizer(kind={self.kind!r}, observation_dim={self.observation_dim}, "
            f"action_dim={self.action_dim})"
        )
