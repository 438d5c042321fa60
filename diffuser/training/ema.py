"""Exponential moving average of a model's weights.

Diffusion models sample noticeably better from averaged weights than from the last optimizer iterate;
the original Diffuser keeps an EMA with decay 0.995, updated every 10 steps from step 2000 onwards.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """A frozen copy of ``model`` whose weights track an exponential moving average of ``model``'s.

    ``update(step)`` after every optimizer step:
      * while ``step < start_step`` the copy simply mirrors the model (early weights change too fast
        for an average to be useful, and it lets exports taken early be meaningful);
      * afterwards, every ``update_every`` steps, ``ema = decay * ema + (1 - decay) * model``.
    Buffers (normalizer statistics, batch-norm running stats, ...) are always copied, not averaged.

    The averaged model is ``ema.ema_model`` (in eval mode, ``requires_grad=False``); the tracked
    model is ``ema.online_model``.
    """

    def __init__(
        self, model: nn.Module, decay: float = 0.995, start_step: int = 2000, update_every: int = 10
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        if start_step < 0:
            raise ValueError(f"EMA start_step must be >= 0, got {start_step}")
        if update_every < 1:
            raise ValueError(f"EMA update_every must be >= 1, got {update_every}")
        self.decay = float(decay)
        self.start_step = int(start_step)
        self.update_every = int(update_every)
        self.online_model = model
        self.ema_model = copy.deepcopy(model).eval()
        self.ema_model.requires_grad_(False)
        self._collect_pairs()  # fail early if the copy does not line up with the model

    def _collect_pairs(self) -> tuple[list[torch.Tensor], ...]:
        # Collected on every call rather than cached: Module.to() replaces buffer tensors, so a cached
        # list would go stale if the online model is moved after the EMA was made. deepcopy preserves
        # registration order, so the two lists line up.
        ema_params = list(self.ema_model.parameters())
        online_params = list(self.online_model.parameters())
        if len(ema_params) != len(online_params):
            raise RuntimeError("EMA: the model's parameters changed since the EMA copy was made")
        float_pairs = [(e, o) for e, o in zip(ema_params, online_params) if e.is_floating_point()]
        ema_float = [e for e, _ in float_pairs]
        online_float = [o for _, o in float_pairs]
        # Non-float parameters (rare: quantised ints) cannot be interpolated; they are copied with buffers.
        copy_ema = [e for e in ema_params if not e.is_floating_point()]
        copy_online = [o for o in online_params if not o.is_floating_point()]
        copy_ema += list(self.ema_model.buffers())
        copy_online += list(self.online_model.buffers())
        if len(copy_ema) != len(copy_online):
            raise RuntimeError("EMA: the model's buffers changed since the EMA copy was made")
        return ema_float, online_float, copy_ema, copy_online

    @torch.no_grad()
    def copy_from_model(self) -> None:
        """Make the EMA weights equal to the model's."""
        ema_float, online_float, copy_ema, copy_online = self._collect_pairs()
        for dst, src in zip(ema_float + copy_ema, online_float + copy_online):
            dst.copy_(src)

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Update after optimizer step number ``step`` (the count of optimizer steps taken so far)."""
        if step < self.start_step:
            self.copy_from_model()
            return
        if step % self.update_every != 0:
            return
        ema_float, online_float, copy_ema, copy_online = self._collect_pairs()
        if ema_float:
            # lerp_(ema, model, w) = ema + w * (model - ema) = decay * ema + (1 - decay) * model,
            # fused over all tensors in a handful of kernels instead of one per parameter.
            torch._foreach_lerp_(ema_float, [o.detach() for o in online_float], 1.0 - self.decay)
        for dst, src in zip(copy_ema, copy_online):
            dst.copy_(src)

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights plus the hyper-parameters (informational)."""
        return {
            "model": self.ema_model.state_dict(),
            "decay": self.decay,
            "start_step": self.start_step,
            "update_every": self.update_every,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the averaged weights. Hyper-parameters stay those given to the constructor, so a
        resumed run can change them through its config."""
        if "model" not in state:
            raise KeyError("EMA state dict has no 'model' entry")
        self.ema_model.load_state_dict(state["model"])

    def to(self, device: torch.device | str) -> EMA:
        """Move the averaged copy (e.g. alongside the online model)."""
        self.ema_model.to(device)
        return self
