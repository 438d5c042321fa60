"""Composition: a product of experts, checked for agreement, sampled by the one loop.

    composition = compose(model_a.expert(), model_b.expert(weight=0.5),
                          DiscAvoid.from_world((1.0, 2.0), 0.5, normalizer, layout, weight=30))
    out = composition.sample(16, constraints=..., corrector=ULA(steps=2))

:func:`compose` refuses experts that cannot share a sample: diffusion models must agree on the
trajectory layout (which dims are actions and states), the horizon they were trained for, the noise
schedule (they are queried at the same step t) and the normalisation (they must read x in the same
units). The error names the experts that disagree and what differs. Experts that do not declare a
property (analytic costs, values) agree with anything.

:func:`build_experts` instantiates experts from plain config (a Hydra node or dicts), so a composition
can be declared in ``configs/compose/*.yaml`` as well as in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from diffuser.diffusion.constraints import Constraint
from diffuser.diffusion.correctors import Corrector
from diffuser.diffusion.experts import Expert, expert_name
from diffuser.diffusion.loop import SampleOutput, sample
from diffuser.diffusion.noise import Generators
from diffuser.diffusion.samplers import Sampler
from diffuser.diffusion.schedules import NoiseSchedule


class IncompatibleExperts(ValueError):
    """Experts that cannot be multiplied: they disagree on layout, horizon, schedule or normalisation."""


def _layout_key(layout) -> Any:
    return None if layout is None else (layout.observation_dim, layout.action_dim)


def _schedule_key(schedule) -> Any:
    return None if schedule is None else (schedule.num_steps, schedule.beta_schedule)


def _normalizer_key(normalizer) -> Any:
    if normalizer is None:
        return None
    state = normalizer.state_dict()
    return (normalizer.kind, tuple(sorted(state)), tuple(np.round(v.double().numpy().ravel(), 6).tobytes()
                                                           for _, v in sorted(state.items())))


def _describe(prop: str, value) -> str:
    if prop == "layout":
        return f"obs {value[0]} + act {value[1]}"
    if prop == "schedule":
        return f"T={value[0]} {value[1]}"
    if prop == "normalizer":
        return f"{value[0]} normaliser #{abs(hash(value)) % 10_000:04d}"
    return str(value)


@dataclass
class Composition:
    """Experts that agree, and what they agree on (None where no expert says)."""

    experts: list
    layout: Any = None
    horizon: int | None = None
    schedule: NoiseSchedule | None = None
    normalizer: Any = None

    def sample(self, batch_size: int, *, horizon: int | None = None, constraints: Sequence[Constraint] = (),
               sampler: Sampler | None = None, corrector: Corrector | None = None, generator: Generators = None,
               schedule: NoiseSchedule | None = None, transition_dim: int | None = None,
               clip_denoised: bool = False, device=None, **kwargs) -> SampleOutput:
        """Draw (B, H, D) samples of the product; H, D and the schedule default to the experts' own."""
        schedule = schedule or self.schedule
        if schedule is None:
            raise ValueError("no expert declares a noise schedule: pass schedule=")
        horizon = horizon or self.horizon
        dim = transition_dim or (self.layout.transition_dim if self.layout is not None else None)
        if horizon is None or dim is None:
            raise ValueError("the experts declare no horizon / layout: pass horizon= and transition_dim=")
        return sample(self.experts, schedule, (batch_size, horizon, dim), sampler=sampler, corrector=corrector,
                      constraints=constraints, generator=generator, clip_denoised=clip_denoised, device=device,
                      **kwargs)

    @property
    def weights(self) -> dict[str, float]:
        return {expert_name(e): e.weight for e in self.experts}


def compose(*experts: Expert | Sequence[Expert]) -> Composition:
    """Check that ``experts`` can be multiplied and return them as a :class:`Composition`.

    Raises :class:`IncompatibleExperts` (a ValueError) naming the experts that disagree and on what.
    """
    flat: list = []
    for e in experts:
        flat.extend(e if isinstance(e, (list, tuple)) else [e])
    if not flat:
        raise ValueError("compose() needs at least one expert")
    for e in flat:
        if not callable(getattr(e, "epsilon", None)) or not hasattr(e, "weight"):
            raise TypeError(f"{e!r} is not an expert: it needs a weight and epsilon(x, level)")
    agreed: dict[str, Any] = {}
    checks = {"layout": _layout_key, "horizon": lambda h: None if h is None else int(h),
              "schedule": _schedule_key, "normalizer": _normalizer_key}
    for prop, key in checks.items():
        seen: dict[Any, list[str]] = {}
        first = None
        for e in flat:
            value = getattr(e, prop, None)
            k = key(value)
            if k is None:
                continue
            seen.setdefault(k, []).append(expert_name(e))
            first = value if first is None else first
        if len(seen) > 1:
            parts = "; ".join(f"{', '.join(names)}: {_describe(prop, k)}" for k, names in seen.items())
            why = {"layout": "their transitions split into states and actions differently",
                   "horizon": "they were trained on windows of different lengths",
                   "schedule": "the loop queries every expert at the same step t of one schedule",
                   "normalizer": "they read trajectories in different normalised units"}[prop]
            raise IncompatibleExperts(f"experts disagree on {prop} ({why}): {parts}")
        agreed[prop] = first
    return Composition(flat, **agreed)


# ----------------------------------------------------------------------------- from config

def build_experts(specs: Sequence[Mapping], *, base=None, device: str | torch.device = "cpu") -> list:
    """Experts from config entries, e.g. (YAML)::

        experts:
          - {kind: denoiser, checkpoint: assets/checkpoints/maze_umaze, weight: 1.0}
          - {kind: disc_avoid, center: [2.0, 1.0], radius: 0.5, weight: 30.0, margin: 0.1}
          - {kind: region_prefer, lo: [0.5, 0.5], hi: [1.5, 3.5], weight: 2.0}
          - {kind: smoothness, weight: 0.1}

    Positions and sizes are in world (raw) units; costs are converted with ``base``'s normalizer and
    layout (``base``: a loaded checkpoint, see :func:`diffuser.pretrained.load_model`; the first
    ``denoiser`` entry is used when None). Kinds: denoiser, disc_avoid, box_avoid, region_prefer,
    smoothness.
    """
    from diffuser.diffusion.costs import BoxAvoid, DiscAvoid, RegionPrefer, Smoothness

    specs = [dict(s) for s in specs]
    experts = []
    loaded = {}
    for s in specs:
        if s.get("kind") == "denoiser":
            from diffuser.pretrained import load_model

            path = s["checkpoint"]
            loaded[path] = loaded.get(path) or load_model(path, device=device)
            base = base or loaded[path]
    costs = {"disc_avoid": DiscAvoid, "box_avoid": BoxAvoid, "region_prefer": RegionPrefer, "smoothness": Smoothness}
    for s in specs:
        kind = s.pop("kind", None)
        weight = float(s.pop("weight", 1.0))
        if kind == "denoiser":
            experts.append(denoiser_expert(loaded[s.pop("checkpoint")], weight, **s))
        elif kind in costs:
            if base is None:
                raise ValueError(f"a {kind} expert in world units needs a model's normalizer: add a denoiser entry")
            dims = s.pop("position_dims", (0, 1))
            cls = costs[kind]
            if kind == "disc_avoid":
                e = cls.from_world(s.pop("center"), float(s.pop("radius")), base.normalizer, base.model.layout, dims,
                                   weight=weight, **s)
            elif kind == "smoothness":
                e = cls.from_world(base.normalizer, base.model.layout, dims, weight=weight, **s)
            else:
                e = cls.from_world(s.pop("lo"), s.pop("hi"), base.normalizer, base.model.layout, dims,
                                   weight=weight, **s)
            experts.append(e)
        else:
            raise ValueError(f"unknown expert kind {kind!r}; valid: denoiser, {', '.join(costs)}")
    return experts


def denoiser_expert(loaded, weight: float = 1.0, name: str | None = None, **kwargs):
    """A loaded checkpoint (model + normalizer) as a DenoiserExpert that declares what it was trained with."""
    model = loaded.model
    return model.expert(weight, normalizer=loaded.normalizer, name=name, **kwargs)


def composition_from_config(cfg, *, device: str | torch.device = "cpu"):
    """(Composition, corrector or None) from a config with ``experts:`` (see :func:`build_experts`) and an
    optional ``corrector: {name, steps, step_size, leapfrog_steps, scale}``: the form of
    ``configs/compose/*.yaml``. ``cfg`` may be a path to such a YAML file, an OmegaConf node or a dict.
    """
    from diffuser.diffusion.correctors import make_corrector

    if isinstance(cfg, (str, bytes)) or hasattr(cfg, "read_text"):
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(str(cfg))
    if hasattr(cfg, "_metadata"):  # an OmegaConf node: resolve interpolations into plain containers
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
    if "experts" not in cfg:
        raise ValueError("a composition config needs an 'experts:' list")
    corrector_cfg = dict(cfg.get("corrector") or {})
    corrector = make_corrector(corrector_cfg.pop("name", None), **corrector_cfg)
    return compose(build_experts(cfg["experts"], device=device)), corrector
