"""Fit an inverse-dynamics model a_t = g(s_t, s_{t+1}) on a dataset's transitions and export it.

30–50 CPU seconds per member on a 400k-transition locomotion dataset at the defaults. The fit's error is
measured on held-out episodes (split by episode, so no held-out step has its neighbours in training) and
stored in the export with the dataset it was fit on.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from diffuser.data.episodes import Episode, split_episodes
from diffuser.models.inverse_dynamics import InverseDynamics, InverseDynamicsConfig
from diffuser.utils import git_commit, seed_everything

__all__ = ["InverseFitConfig", "transitions", "fit_inverse_dynamics", "train_inverse_dynamics"]


@dataclass
class InverseFitConfig:
    net: InverseDynamicsConfig = field(default_factory=InverseDynamicsConfig)
    steps: int = 4000  # optimiser steps (each member sees its own batch at every step)
    batch_size: int = 1024
    lr: float = 1e-3
    seed: int = 0
    held_out: float = 0.05  # share of the episodes kept out of the fit to measure its error

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"steps and batch_size must be >= 1 and lr > 0, got {self.steps}, {self.batch_size}, {self.lr}")
        if not 0 <= self.held_out < 1:
            raise ValueError(f"held_out must be in [0, 1), got {self.held_out}")

    @classmethod
    def from_overrides(cls, overrides: Sequence[str]) -> InverseFitConfig:
        """``["members=5", "steps=8000"]``: KEY=V for the fit's fields and the network's (hidden, layers, members)."""
        fit_keys = [f.name for f in fields(cls) if f.name != "net"]
        net_keys = {f.name for f in fields(InverseDynamicsConfig)}
        fit, net = {}, {}
        for item in overrides:
            key, sep, text = item.partition("=")
            if not sep or key not in (*fit_keys, *net_keys):
                raise ValueError(f"inverse-dynamics override {item!r} is not KEY=VALUE with KEY one of "
                                 f"{', '.join([*fit_keys, *sorted(net_keys)])}")
            kind = float if key in ("lr", "held_out") else int
            try:
                (net if key in net_keys else fit)[key] = kind(text)
            except ValueError:
                raise ValueError(f"inverse-dynamics override {item!r}: {key} takes a{'n integer' if kind is int else ' number'}, "
                                 f"not {text!r}") from None
        return cls(net=InverseDynamicsConfig(**net), **fit)

    def to_dict(self) -> dict:
        return {**asdict(self), "net": self.net.to_dict()}


def transitions(episodes: Sequence[Episode]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(s_t, s_{t+1}, a_t), float32, of every step whose next state is known (an episode's last step has
    one when the source stored the final observation)."""
    states, nexts, actions = [], [], []
    for ep in episodes:
        obs = ep.observations
        nxt = obs[1:] if ep.final_observation is None else np.concatenate([obs[1:], ep.final_observation[None]])
        states.append(obs[: len(nxt)])
        nexts.append(nxt)
        actions.append(ep.actions[: len(nxt)])
    if not sum(len(n) for n in nexts):
        raise ValueError("the episodes hold no transition (every one is a single step without a final observation)")
    return tuple(torch.as_tensor(np.concatenate(x), dtype=torch.float32) for x in (states, nexts, actions))


def fit_inverse_dynamics(episodes: Sequence[Episode], config: InverseFitConfig | None = None,
                         device: str | torch.device = "cpu", progress: bool = True) -> tuple[InverseDynamics, dict]:
    """A model fit on ``episodes`` (less the held-out ones), and a report of the fit: its held-out mean
    squared error beside the actions' variance (what always predicting the mean would score)."""
    from tqdm import tqdm

    config = config or InverseFitConfig()
    seed_everything(config.seed)
    train_eps, held_eps = split_episodes(list(episodes), config.held_out, seed=config.seed)
    s, s1, a = (x.to(device) for x in transitions(train_eps))
    model = InverseDynamics(s.shape[1], a.shape[1], config.net).to(device)
    model.set_statistics(s, s1)
    optimiser = torch.optim.Adam(model.parameters(), config.lr)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    started = time.perf_counter()
    for _ in tqdm(range(config.steps), desc="inverse dynamics", unit="step", disable=None if progress else True,
                  mininterval=1.0):
        loss = 0.0
        for member in model.members:  # each member its own batch: members differ by data as well as init
            i = torch.randint(len(s), (config.batch_size,), generator=generator).to(device)
            loss = loss + (member(model.inputs(s[i], s1[i])) - a[i]).square().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    model.eval()
    report = {"transitions": len(s), "seconds": round(time.perf_counter() - started, 1)}
    if held_eps:
        hs, hs1, ha = (x.to(device) for x in transitions(held_eps))
        with torch.no_grad():
            report["held_out_mse"] = float((model(hs, hs1) - ha).square().mean())
        report.update(held_out_transitions=len(hs), action_variance=float(ha.var(0).mean()))
    return model, report


def train_inverse_dynamics(dataset_id: str, out_dir: str | Path, config: InverseFitConfig | None = None,
                           device: str | torch.device = "cpu") -> dict:
    """Fit on a local dataset and export to ``out_dir`` (loaded by :func:`diffuser.pretrained.load_inverse`);
    returns ``{"checkpoint", "minutes", "config", **fit report}``."""
    from diffuser.data.minari_io import load_episodes
    from diffuser.pretrained import export_inverse_state
    from diffuser.training.checkpoint import save_export

    config = config or InverseFitConfig()
    model, report = fit_inverse_dynamics(load_episodes(dataset_id), config, device)
    tensors, export_config = export_inverse_state(model, dataset=dataset_id, fit=config.to_dict(), report=report,
                                                  git_commit=git_commit())
    path = save_export(out_dir, tensors, export_config)
    mse = report.get("held_out_mse")
    print(f"inverse dynamics: held-out MSE {mse:.4f} (action variance {report['action_variance']:.4f}), "
          f"{report['seconds']} s -> {path}" if mse is not None else f"inverse dynamics -> {path}", flush=True)
    return {"checkpoint": str(path), "minutes": round(report["seconds"] / 60, 2), "config": config.to_dict(), **report}
