"""Exported behaviour policies: a deterministic MLP actor in safetensors + a JSON card, no pickle, no SB3.

A behaviour policy trained with stable-baselines3 SAC (:mod:`diffuser.collect.behaviour`) is exported as
two small files under ``assets/policies/<env>/<level>``:

* ``<level>.safetensors``: the actor's weights, keys ``layers.<i>.weight`` / ``layers.<i>.bias``
  (hidden layers, ReLU after each) and ``mu.weight`` / ``mu.bias`` (the mean head);
* ``<level>.json``: the card: architecture (hidden sizes, activation, squash), obs/action dims, the
  action bounds, env id, training steps, seed, the command that trained it and its evaluated return.

The deterministic action is SAC's: ``tanh(mu(h))`` rescaled from [-1, 1] onto ``[low, high]``. Loading
needs only torch and safetensors, so anyone can regenerate the datasets without SB3.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from diffuser.utils import atomic_path, atomic_write_bytes

__all__ = ["PolicyCard", "MLPActor", "save_policy", "load_policy", "policy_paths", "PolicyError",
           "POLICY_FORMAT"]

POLICY_FORMAT = "diffuser-mlp-actor-v1"


class PolicyError(FileNotFoundError):
    """An exported policy is missing or does not match its card."""


@dataclass
class PolicyCard:
    """What an exported actor is and where it came from (the JSON file beside the weights)."""

    env_id: str                      # Gymnasium id, e.g. Hopper-v5
    obs_dim: int
    act_dim: int
    hidden: list[int]                # hidden layer widths, ReLU after each
    action_low: list[float]          # the env's action bounds: tanh output is rescaled onto them
    action_high: list[float]
    activation: str = "relu"
    squash: str = "tanh"
    format: str = POLICY_FORMAT
    level: str | None = None         # medium | expert | ...
    train_steps: int | None = None   # environment steps of training when this actor was saved
    seed: int | None = None
    command: str | None = None
    eval_return: float | None = None  # mean deterministic return of this actor
    eval_return_std: float | None = None
    eval_episodes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyCard:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fields in policy card: {unknown}")
        card = cls(**data)
        if card.format != POLICY_FORMAT:
            raise ValueError(f"unsupported policy format {card.format!r} (expected {POLICY_FORMAT!r})")
        if card.activation != "relu" or card.squash != "tanh":
            raise ValueError(f"unsupported actor: activation {card.activation!r}, squash {card.squash!r}")
        if len(card.action_low) != card.act_dim or len(card.action_high) != card.act_dim:
            raise ValueError(f"action bounds do not have act_dim={card.act_dim} entries")
        return card


class MLPActor(nn.Module):
    """Deterministic actor: obs ``(B, obs_dim)`` -> action ``(B, act_dim)`` inside the action bounds."""

    def __init__(self, card: PolicyCard) -> None:
        super().__init__()
        self.card = card
        sizes = [card.obs_dim, *card.hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.mu = nn.Linear(sizes[-1], card.act_dim)
        low = torch.tensor(card.action_low, dtype=torch.float32)
        high = torch.tensor(card.action_high, dtype=torch.float32)
        self.register_buffer("scale", (high - low) / 2, persistent=False)
        self.register_buffer("offset", (high + low) / 2, persistent=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, obs_dim)`` -> ``(B, act_dim)``."""
        h = obs
        for layer in self.layers:
            h = torch.relu(layer(h))
        return torch.tanh(self.mu(h)) * self.scale + self.offset

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """numpy ``(obs_dim,)`` or ``(B, obs_dim)`` -> float32 action(s) of the same leading shape."""
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        single = x.ndim == 1
        out = self(x[None] if single else x).numpy()
        return out[0] if single else out


def policy_paths(base: str | os.PathLike) -> tuple[Path, Path]:
    """``assets/policies/hopper/medium`` (or ``.../medium.json``) -> (weights path, card path)."""
    base = Path(base)
    if base.suffix in (".json", ".safetensors"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def save_policy(actor: MLPActor, base: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<base>.safetensors`` and ``<base>.json`` atomically; returns both paths."""
    from safetensors.torch import save_file

    weights, card_path = policy_paths(base)
    tensors = {k: v.detach().cpu().contiguous() for k, v in actor.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata={"format": POLICY_FORMAT})
    atomic_write_bytes(card_path, (json.dumps(actor.card.to_dict(), indent=2) + "\n").encode())
    return weights, card_path


def load_policy(base: str | os.PathLike) -> MLPActor:
    """Load an exported actor (eval mode, CPU). Raises :class:`PolicyError` naming what is missing."""
    from safetensors.torch import load_file

    weights, card_path = policy_paths(base)
    missing = [str(p) for p in (weights, card_path) if not p.is_file()]
    if missing:
        raise PolicyError(
            f"behaviour policy not found: {', '.join(missing)}; train and export one with "
            "`diffuser collect train-policy --env ENV` (see README, Locomotion datasets)")
    card = PolicyCard.from_dict(json.loads(card_path.read_text()))
    actor = MLPActor(card)
    state = load_file(str(weights))
    try:
        actor.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise PolicyError(f"{weights} does not match its card {card_path}: {err}") from None
    return actor.eval()
