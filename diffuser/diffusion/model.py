"""TrajectoryDiffusion: a denoiser network, its noise schedule and its training objective.

This is the object that is trained and saved. Sampling goes through :func:`diffuser.diffusion.loop.sample`
with this model as one :class:`DenoiserExpert`; :meth:`TrajectoryDiffusion.sample` is the shortcut for
the common single-model case.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Mapping, Sequence

import torch
from torch import nn

from diffuser.data.layout import TrajectoryLayout
from diffuser.diffusion.constraints import Constraint, Inpaint, state_constraints
from diffuser.diffusion.correctors import Corrector
from diffuser.diffusion.experts import DenoiserExpert, Expert
from diffuser.diffusion.loop import SampleOutput, sample
from diffuser.diffusion.noise import Generators
from diffuser.diffusion.objective import LOSS_TYPES, loss_weights, weighted_loss
from diffuser.diffusion.predictions import check_prediction_type, training_target
from diffuser.diffusion.samplers import Sampler
from diffuser.diffusion.schedules import BETA_SCHEDULES, NoiseSchedule


CONDITIONS = ("none", "return")


@dataclass
class DiffusionConfig:
    num_steps: int = 20  # T, training diffusion steps (paper: 20 locomotion, 64-256 Maze2D)
    beta_schedule: str = "cosine"  # "cosine" | "linear"
    prediction_type: str = "x0"  # what the network outputs: "epsilon" | "x0" | "v" (paper: x0)
    clip_denoised: bool = False  # clip x̂_0 to [-1, 1] while sampling (use with the limits normalizer)
    action_weight: float = 1.0  # loss weight of the first action (paper: 10 locomotion, 1 Maze2D)
    loss_discount: float = 1.0  # per-timestep loss weight discount^t, normalised to mean 1
    loss_type: str = "l2"  # "l2" | "l1"
    dim_weights: list[float] | None = field(default=None)  # optional per-transition-dim loss weights
    mask_padding: bool = False  # leave steps past an episode's end out of the loss (default: learn them too)
    condition: str = "none"  # "none" | "return": condition on the window's standardised return (classifier-free guidance)
    cond_dropout: float = 0.25  # with a condition: share of training samples that see none (learns the unconditional model too)

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"unknown beta_schedule {self.beta_schedule!r}; valid: {', '.join(BETA_SCHEDULES)}")
        check_prediction_type(self.prediction_type)
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"unknown loss_type {self.loss_type!r}; valid: {', '.join(LOSS_TYPES)}")
        if self.condition not in CONDITIONS:
            raise ValueError(f"unknown condition {self.condition!r}; valid: {', '.join(CONDITIONS)}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1) (the share of unconditioned samples), got {self.cond_dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "DiffusionConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown DiffusionConfig fields {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**d)


class TrajectoryDiffusion(nn.Module):
    """A diffusion model over trajectories (B, H, D) laid out as ``layout`` says.

    Args:
        denoiser: ``denoiser(x_t (B, H, D), t (B,)) -> (B, H, D)``, predicting ``config.prediction_type``.
        layout: where actions and states sit in a transition.
        horizon: the training horizon H (the loss weights depend on it; sampling may use other horizons
            the denoiser accepts).
        return_stats: with ``config.condition == "return"``, the mean and std that standardise the raw
            returns into the network's condition (fitted on the training windows, saved in exports).
    """

    def __init__(self, denoiser: nn.Module, layout: TrajectoryLayout, horizon: int,
                 config: DiffusionConfig | None = None, return_stats: Mapping | None = None):
        super().__init__()
        self.denoiser = denoiser
        self.layout = layout
        self.horizon = int(horizon)
        self.config = config or DiffusionConfig()
        self.return_stats = dict(return_stats) if return_stats else None
        if self.conditional:
            cond_dim = getattr(getattr(denoiser, "config", None), "cond_dim", None)
            if cond_dim != 1:
                raise ValueError(f"condition='return' needs a denoiser with cond_dim=1 (one return), got {cond_dim}")
        self.schedule = NoiseSchedule(self.config.num_steps, self.config.beta_schedule)
        weights = loss_weights(layout, self.horizon, action_weight=self.config.action_weight,
                               loss_discount=self.config.loss_discount, dim_weights=self.config.dim_weights)
        # Derived from the config, so not saved: a checkpoint holds weights only.
        self.register_buffer("loss_weights", weights, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.loss_weights.device

    @property
    def conditional(self) -> bool:
        return self.config.condition == "return"

    def condition(self, returns: torch.Tensor | float) -> torch.Tensor:
        """The network's condition (B, 1) for raw returns (B,) or (B, 1) (or one float, giving (1, 1))."""
        if not self.conditional:
            raise ValueError("this model is unconditional (diffusion.condition='none'): train one with "
                             "diffusion.condition=return for classifier-free guidance")
        if not self.return_stats:
            raise ValueError("this return-conditioned model has no return_stats (mean, std) to standardise returns")
        r = torch.as_tensor(returns, dtype=torch.float32, device=self.device).reshape(-1, 1)
        return (r - self.return_stats["mean"]) / self.return_stats["std"]

    def _check_trajectories(self, x: torch.Tensor, what: str) -> None:
        D = self.layout.transition_dim
        if x.ndim != 3 or x.shape[-1] != D:
            raise ValueError(f"{what} must have shape (B, H, {D}) = (batch, horizon, actions+states), "
                             f"got {tuple(x.shape)}")

    def loss(self, batch: Mapping) -> tuple[torch.Tensor, dict[str, float]]:
        """Denoising loss on a batch of windows.

        batch["trajectories"]: (B, H, D) normalised clean trajectories; batch["conditions"] (optional):
        {t: (B, S)} states that sampling will clamp, so they are clamped in x_t here too and carry no
        loss; batch["mask"] (optional): (B, H) bool, False on padded steps, which carry no loss only
        when ``config.mask_padding`` (by default they are learned: edge padding teaches "stay at the goal").
        """
        x0 = batch["trajectories"]
        self._check_trajectories(x0, 'batch["trajectories"]')
        B, H, _ = x0.shape
        if H != self.horizon:
            raise ValueError(f"training windows have horizon {H}, but the model was built for {self.horizon}")
        t = torch.randint(0, self.schedule.num_steps, (B,), device=x0.device)
        noise = torch.randn_like(x0)
        xt = self.schedule.q_sample(x0, t, noise)
        weights = self.loss_weights
        inpaint = Inpaint.from_constraints(state_constraints(self.layout, batch.get("conditions", {})),
                                           x0.shape, device=x0.device, dtype=x0.dtype)
        if inpaint is not None:
            xt = inpaint.apply(xt)
            weights = weights * inpaint.loss_mask
        if self.config.mask_padding and "mask" in batch:
            weights = weights * batch["mask"][..., None].to(weights.dtype)
        alpha, sigma = self.schedule.alpha_sigma_batch(t, x0.ndim)
        target = training_target(self.config.prediction_type, x0, noise, alpha, sigma)
        if self.conditional:
            if "values" not in batch:
                raise ValueError('a return-conditioned model trains on windows with "values" (returns): '
                                 "use ValueDataset windows (data.window=value)")
            # Condition dropout: the same network learns ε(x, ∅) on the dropped samples.
            keep = torch.rand(B, device=x0.device) >= self.config.cond_dropout
            prediction = self.denoiser(xt, t, cond=self.condition(batch["values"]), cond_mask=keep)
        else:
            prediction = self.denoiser(xt, t)
        loss = weighted_loss(prediction, target, weights, self.config.loss_type)
        return loss, {}

    def expert(self, weight: float = 1.0, *, normalizer=None, name: str | None = None, **kwargs) -> DenoiserExpert:
        """This model as a score term for the sampling loop (declaring its layout, horizon and schedule,
        and ``normalizer`` when given, so that :func:`~diffuser.diffusion.compose.compose` can check them)."""
        return DenoiserExpert(self.denoiser, self.config.prediction_type, weight, layout=self.layout,
                              horizon=self.horizon, schedule=self.schedule, normalizer=normalizer, name=name,
                              **kwargs)

    def sample(self, batch_size: int, *, horizon: int | None = None,
               conditions: Mapping[int, torch.Tensor] | None = None,
               constraints: Sequence[Constraint] = (), experts: Sequence[Expert] = (),
               sampler: Sampler | None = None, generator: Generators = None,
               noise: torch.Tensor | None = None, return_chain: bool = False,
               show_progress: bool = False, warm_start: torch.Tensor | None = None,
               warm_level: float = 1.0, weight: float = 1.0, corrector: Corrector | None = None) -> SampleOutput:
        """Sample normalised trajectories (B, H, D).

        Args:
            conditions: {t: (B, S) or (S,)} full normalised states to clamp (e.g. {0: s0}).
            constraints: further constraints on any entries (e.g. a goal position only).
            experts: extra score terms composed with this model (guidance, costs, other models).
            warm_start / warm_level: start from these trajectories noised part-way (see ``loop.sample``).
            weight: the weight of this model's own score in the product (1: plain sampling; e.g. a
                sharper, lower-temperature model at > 1 when composed with other experts).
            corrector: MCMC corrector run at every noise level (see :mod:`diffuser.diffusion.correctors`).
        """
        horizon = horizon or self.horizon
        cons = state_constraints(self.layout, conditions or {}) + list(constraints)
        return sample([self.expert(weight), *experts], self.schedule, (batch_size, horizon, self.layout.transition_dim),
                      sampler=sampler, constraints=cons, clip_denoised=self.config.clip_denoised,
                      generator=generator, noise=noise, device=self.device, return_chain=return_chain,
                      show_progress=show_progress, warm_start=warm_start, warm_level=warm_level,
                      corrector=corrector)
