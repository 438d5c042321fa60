"""Reward-seeking planning for locomotion: a receding-horizon policy over the one sampling loop.

Every decision samples ``candidates`` plans of H steps from the current state (the start state
inpainted), steered toward high return by one of:

- ``"value"``: Diffuser's value guidance (:class:`~diffuser.diffusion.guides.ValueGuide`) with a learned
  :class:`~diffuser.diffusion.value.ValueFunction`; candidates are ranked by that value;
- ``"cfg"``: classifier-free guidance of a return-conditioned denoiser (Decision Diffuser),
  ε = ε(x, ∅) + w · (ε(x, c) − ε(x, ∅)) with c a high return of the dataset;
- ``"none"``: plain samples of the (unconditional) model.

and executes the first ``execute`` actions of the chosen plan, then replans. Those actions are the plan's own,
or (``inverse_weight``) read off an inverse-dynamics model g(s_t, s_{t+1}) along the plan's states, which a
plan's own actions need not reach. All environments and
candidates of a decision are one batched sampling call. With ``avoid_falls``, the env's own termination rule
(:class:`~diffuser.envs.health.HealthRule`) judges every candidate's planned states, and the choice (first,
best value, or consensus) is made among the candidates that stay healthy the longest. With ``average`` K > 1
the executed plan is the mean of the K best candidates: with few solver steps each sample's first action is
noisy, and their mean is not. ``warm_from="best"`` then warm-starts the next decision from the best candidate
rather than from that mean. With ``speed_limit``, either a :class:`~diffuser.diffusion.costs.Ceiling` cost
joins the experts and pushes planned forward speeds above the limit back under it (``speed_limit_by="cost"``),
or the choice is made among the candidates whose planned speeds stay under it (``"choice"``; where none
does, those that exceed it least): a whole sampled plan, whose first action belongs to states that do not
overspeed, rather than states moved after their actions were drawn. The env tells the planner which
observation coordinate is the forward speed (:func:`~diffuser.envs.body.forward_speed_index`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from diffuser.diffusion.costs import Ceiling
from diffuser.diffusion.experts import ConditionDelta
from diffuser.diffusion.guides import ValueGuide
from diffuser.diffusion.samplers import make_sampler
from diffuser.envs.health import HealthRule
from diffuser.planning import choice
from diffuser.planning.locomotion_config import GUIDES, SELECTS, LocomotionPlanConfig, target_return_value
from diffuser.planning.planner import Plan, Planner, shift_plans
from diffuser.pretrained import LoadedInverse, LoadedModel, LoadedValue, load_inverse, load_model, load_value

__all__ = ["GUIDES", "SELECTS", "LocomotionPlanConfig", "LocomotionPlanner", "check_value_matches", "sampler_steps_or_default",
           "target_return_value"]

@dataclass
class LocomotionPlans:
    actions: np.ndarray  # (N, execute, A) raw actions to execute
    states: np.ndarray  # (N, H, S) raw planned states of the chosen plans
    values: np.ndarray | None  # (N,) predicted return of the chosen plans (with a value model; the mean of averaged ones)
    trajectories: torch.Tensor  # (N, H, A+S) the next warm starts (normalised): the executed plans, or the best (warm_from)


def sampler_steps_or_default(sampler: str, steps: int | None) -> int | None:
    """A command line's sampler steps as the planner takes them: 5 for the few-step samplers unless given,
    none for ddpm (which visits every training step; given steps are passed on to raise its error)."""
    return 5 if steps is None and sampler != "ddpm" else steps


def check_value_matches(model: LoadedModel, value: LoadedValue) -> None:
    """Raise ValueError naming every disagreement between a diffusion model and a value function."""
    mc, vc = model.config, value.config
    problems = []
    if mc.get("dataset") != vc.get("dataset"):
        problems.append(f"datasets differ ({mc.get('dataset')!r} vs {vc.get('dataset')!r})")
    if model.model.horizon != value.value.horizon:
        problems.append(f"horizons differ ({model.model.horizon} vs {value.value.horizon})")
    if model.model.layout != value.value.layout:
        problems.append(f"layouts differ ({model.model.layout} vs {value.value.layout})")
    s1, s2 = model.model.schedule, value.value.schedule
    if (s1.num_steps, s1.beta_schedule) != (s2.num_steps, s2.beta_schedule):
        problems.append(f"noise schedules differ ({s1} vs {s2})")
    if not model.normalizer.matches(value.normalizer):
        problems.append("normalizers differ (the value model saw differently normalised trajectories)")
    if problems:
        raise ValueError("the value function does not fit the diffusion model: " + "; ".join(problems)
                         + ". Train one for this checkpoint: diffuser train-value checkpoint=<diffusion checkpoint>")


class LocomotionPlanner:
    """Plans for a batch of environments at once and returns the actions to execute.

    Args:
        model: a loaded diffusion checkpoint (return-conditioned for ``guide="cfg"``).
        value: a loaded value function (needed by ``guide="value"`` and ``select="value"``).
        config: see :class:`LocomotionPlanConfig`.
        device: where to plan (the models are moved there).
        inverse: a loaded inverse-dynamics model (needed by ``inverse_weight`` > 0).
    """

    def __init__(self, model: LoadedModel, value: LoadedValue | None = None,
                 config: LocomotionPlanConfig | None = None, device: str | torch.device = "cpu",
                 inverse: LoadedInverse | None = None):
        self.config = config = config or LocomotionPlanConfig()
        self.device = torch.device(device)
        if value is not None:
            check_value_matches(model, value)
        self.inverse = None
        if config.inverse_weight:
            if inverse is None:
                raise ValueError("inverse_weight > 0 reads actions off an inverse-dynamics model, and none was given: "
                                 "pass --inverse EXPORT, or let `diffuser plan locomotion` fit one")
            layout, inv = model.model.layout, inverse.model
            if (inv.observation_dim, inv.action_dim) != (layout.observation_dim, layout.action_dim):
                raise ValueError(f"the inverse-dynamics model maps states of size {inv.observation_dim} to actions of size "
                                 f"{inv.action_dim}, but the diffusion model plans with {layout.observation_dim} and "
                                 f"{layout.action_dim}: fit one on this model's dataset")
            self.inverse = inv.to(self.device).eval()
        if config.guide == "value" and value is None:
            raise ValueError("guide='value' needs a value function (--value CHECKPOINT)")
        if config.select == "value" and value is None:
            raise ValueError("select='value' ranks plans by a value function, and none was given")
        self.model, self.value = model.model.to(self.device).eval(), value.value.to(self.device).eval() if value else None
        self.normalizer = model.normalizer
        self.model_config, self.value_config = model.config, value.config if value else None
        self.layout = self.model.layout
        self.action_bounds: tuple[np.ndarray, np.ndarray] | None = None  # set from the env by the evaluator
        self.health_rule: HealthRule | None = None  # set from the env by the evaluator (avoid_falls)
        self.fall_checks = {"decisions": 0, "switched": 0}  # avoid_falls: how often it changed the choice
        self.speed_index: int | None = None  # the forward-speed coordinate, set from the env by the evaluator (speed_limit)
        self.speed_checks = {"decisions": 0, "switched": 0}  # speed_limit_by="choice": how often it changed the choice
        # Each guide's own protocol: Diffuser ranks its value-guided candidates by the value; classifier-free
        # guidance (Decision Diffuser) and plain sampling take a sample as it comes.
        self.select = ("value" if config.guide == "value" else "first") if config.select == "auto" else config.select
        if config.cold_candidates and self.select != "value":
            raise ValueError(f"cold_candidates only matter when the value function ranks the candidates, and "
                             f"select={self.select!r} does not: use select='value'")
        experts, self.guide = [], None
        if config.guide == "value":
            self.guide = ValueGuide(self.value, config.scale, config.n_guide_steps, config.t_stopgrad)
            experts.append(self.guide)
        elif config.guide == "cfg":
            if not self.model.conditional:
                raise ValueError("guide='cfg' needs a return-conditioned model, and this one is unconditional: train "
                                 "one with diffusion.condition=return data.window=value (the locomotion_fast config)")
            cond = self.model.condition(self.target_return())
            experts.append(ConditionDelta(self.model.denoiser, self.model.config.prediction_type,
                                          cond={"cond": cond}, uncond={}, weight=config.cfg_weight, name="return_cfg"))
        sampler = make_sampler(config.sampler, config.sampler_steps)
        # A return-conditioned network called without cond gives its unconditional prediction ε(x, ∅).
        self.planner = Planner(self.model, self.normalizer, sampler=sampler, experts=experts)
        self.horizon = config.horizon or self.model.horizon
        if self.value is not None and self.horizon != self.value.horizon:
            raise ValueError(f"the value function takes horizon {self.value.horizon}, not {self.horizon}")
        if config.execute > self.horizon:
            raise ValueError(f"execute={config.execute} exceeds the planning horizon {self.horizon}")
        if self.inverse is not None and config.execute >= self.horizon:
            raise ValueError(f"inverse dynamics reads action k off planned states k and k+1, so execute={config.execute} "
                             f"needs a horizon above it, not {self.horizon}")

    @classmethod
    def from_checkpoints(cls, diffusion: str, value: str | None = None, config: LocomotionPlanConfig | None = None,
                         device: str | torch.device = "cpu", inverse: str | None = None) -> LocomotionPlanner:
        return cls(load_model(diffusion, device), load_value(value, device) if value else None, config, device,
                   load_inverse(inverse, device) if inverse else None)

    def target_return(self) -> float:
        """The raw return classifier-free guidance conditions on."""
        return target_return_value(self.config.target_return, self.model.return_stats or {})

    def check_env(self, observation_dim: int, action_dim: int) -> None:
        if (observation_dim, action_dim) != (self.layout.observation_dim, self.layout.action_dim):
            raise ValueError(f"the environment has observations of size {observation_dim} and actions of size "
                             f"{action_dim}, but the model plans with {self.layout.observation_dim} and "
                             f"{self.layout.action_dim}: use a checkpoint trained on this environment's data")

    def plan(self, observations: np.ndarray, generator: torch.Generator | None = None,
             warm_start: torch.Tensor | None = None) -> LocomotionPlans:
        """Plans for observations (N, S), raw units.

        ``warm_start``: (N, H, A+S) normalised plans to start from (:meth:`shift` of the previous
        decision's ``trajectories``); used when ``config.warm_level`` is set, every candidate of a start
        noising the same warm plan with its own noise.
        """
        obs = np.asarray(observations, dtype=np.float32)
        if obs.ndim != 2 or obs.shape[1] != self.layout.observation_dim:
            raise ValueError(f"observations must be (N, {self.layout.observation_dim}), got {obs.shape}")
        n, c = obs.shape[0], self.config.candidates
        warm, level = None, 1.0
        if warm_start is not None and self.config.warm_level is not None:
            if tuple(warm_start.shape) != (n, self.horizon, self.layout.transition_dim):
                raise ValueError(f"warm_start must be (N, H, A+S) = {(n, self.horizon, self.layout.transition_dim)}, "
                                 f"got {tuple(warm_start.shape)}")
            warm, level = warm_start.to(self.device), self.config.warm_level
        if self.guide is not None:
            self.guide.reset()
        if warm is None or not self.config.cold_candidates:
            out = self.planner.plan(obs, horizon=self.horizon, num_samples=c, generator=generator,
                                    warm_start=None if warm is None else warm.repeat_interleave(c, 0), warm_level=level)
        else:
            # Candidates that all refine the last plan cannot leave it when it has gone wrong (a walker that
            # stalls keeps planning to stand): a few fresh ones give the value ranking a way out.
            k = self.config.cold_candidates
            out = _interleave(self.planner.plan(obs, horizon=self.horizon, num_samples=c - k, generator=generator,
                                                warm_start=warm.repeat_interleave(c - k, 0), warm_level=level),
                              self.planner.plan(obs, horizon=self.horizon, num_samples=k, generator=generator), n)
        values = None
        if self.select == "guide" and self.guide.last_values is not None:
            # V(x_t, t) at the last guided step, in raw return units: free, but judged on a still-noisy plan.
            values = (self.guide.last_values * self.value.return_std + self.value.return_mean).reshape(n, c)
        elif self.select in ("value", "guide"):  # "guide" with no guided step (scale 0, or every t < t_stopgrad)
            with torch.no_grad():
                values = self.value.returns(out.trajectories, 0).reshape(n, c)
        rows, weights = self._choose(out, values, n, c)
        # One candidate, or the weighted mean of several: the normaliser is affine, so raw and normalised
        # plans average alike.
        mean = lambda x: torch.einsum("nk,nk...->n...", weights.to(x.device), x[rows.to(x.device)])  # noqa: E731
        actions = mean(out.actions)[:, : self.config.execute]
        if self.inverse is not None:
            w, k = self.config.inverse_weight, self.config.execute
            states = mean(out.states).to(torch.float32)  # raw; state 0 is the observation (inpainted)
            with torch.no_grad():
                inferred = self.inverse(states[:, :k], states[:, 1: k + 1]).to(actions.dtype)
            actions = (1 - w) * actions + w * inferred
        actions = actions.cpu().numpy()
        if self.action_bounds is not None:
            actions = np.clip(actions, *self.action_bounds)
        # A mean of plans is smoother than any sample; refining it again and again may damp a gait, so the
        # next warm start can be the best candidate alone.
        warm_next = out.trajectories[rows[:, 0].to(out.trajectories.device)] if self.config.warm_from == "best" \
            else mean(out.trajectories)
        return LocomotionPlans(actions, mean(out.states).cpu().numpy(),
                               None if values is None else mean(values.cpu().reshape(-1)).numpy(), warm_next)

    def _choose(self, out: Plan, values: torch.Tensor | None, n: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, k) rows of the start-major batch to execute, and their (n, k) weights in the executed mean."""
        allowed = self._safest(out.states, n, c).cpu() if self.config.avoid_falls else None
        healthy = allowed
        if self.config.speed_limit is not None and self.config.speed_limit_by == "choice":
            allowed = self._slowest(out.states, allowed, n, c)
        # Higher is better: the predicted return, closeness to the candidates' mean plan (consensus), or
        # the sampling order (first).
        if self.select == "consensus":
            scores = -choice.spread(out.trajectories, allowed, n, c).cpu()
        else:
            scores = values.cpu() if values is not None else -torch.arange(c, dtype=torch.float32).expand(n, c)
        chosen, weights = choice.best(scores, allowed, self.config.average)
        # How often each check changed the choice: would what ran without it have passed it?
        if healthy is not None:
            choice.count_switches(self.fall_checks, healthy, choice.best(scores, None, self.config.average)[0])
        if allowed is not healthy:
            choice.count_switches(self.speed_checks, allowed, choice.best(scores, healthy, self.config.average)[0])
        return torch.arange(n)[:, None] * c + chosen, weights

    def _slowest(self, states: torch.Tensor, allowed: torch.Tensor | None, n: int, c: int) -> torch.Tensor:
        """(n, c) bool: of the allowed candidates of each start, those whose planned forward speed (after the
        observed start state, which all share) stays under the limit; where none does, those that exceed it least."""
        if self.speed_index is None:
            raise ValueError("speed_limit judges plans by their forward speed, and no coordinate is set: call "
                             "set_forward_speed_index(forward_speed_index(env)) (the evaluator does)")
        peak = states[:, 1:, self.speed_index].to(torch.float32).amax(dim=1).reshape(n, c).cpu()
        return choice.lowest_under(peak, allowed, self.config.speed_limit)

    def _safest(self, states: torch.Tensor, n: int, c: int) -> torch.Tensor:
        """(n, c) bool: the candidates of each start whose planned states stay healthy the longest."""
        if self.health_rule is None:
            raise ValueError("avoid_falls judges plans by the env's termination rule, and none is set: call "
                             "set_health_rule(HealthRule.from_env(env)) (the evaluator does)")
        return choice.longest(self.health_rule.healthy_steps(states.to(torch.float32)).reshape(n, c))

    def shift(self, trajectories: torch.Tensor, steps: int | np.ndarray | None = None) -> torch.Tensor:
        """Plans (N, H, A+S) advanced by ``steps`` env steps (default: ``execute``) for the next warm start."""
        return shift_plans(trajectories, self.config.execute if steps is None else steps)

    def set_action_bounds(self, low: np.ndarray, high: np.ndarray) -> None:
        """Clip executed actions to the env's action space."""
        self.action_bounds = (np.asarray(low, dtype=np.float32), np.asarray(high, dtype=np.float32))

    def set_health_rule(self, rule: HealthRule | None) -> None:
        """The env's termination rule, for ``avoid_falls``; None (an env that never falls) is an error there."""
        if rule is None and self.config.avoid_falls:
            raise ValueError("avoid_falls needs an env that ends episodes when the body falls (Hopper, Walker2d); "
                             "this one never terminates (HalfCheetah): drop --avoid-falls")
        self.health_rule = rule

    def set_forward_speed_index(self, index: int | None) -> None:
        """The observation coordinate holding the body's forward speed, for ``speed_limit``: by ``"cost"`` adds
        the :class:`Ceiling` cost on it to the experts (replacing one set before); by ``"choice"`` the choice reads it."""
        limit = self.config.speed_limit
        if limit is None:
            return
        if index is None:
            raise ValueError("speed_limit needs to know which observation coordinate is the forward speed, and this "
                             "env does not say (only Gymnasium's MuJoCo locomotion envs do): drop --speed-limit")
        if not 0 <= index < self.layout.observation_dim:
            raise ValueError(f"forward-speed index {index} is outside the model's {self.layout.observation_dim} "
                             f"observation coordinates")
        self.speed_index = index
        if self.config.speed_limit_by == "choice":
            return
        cost = Ceiling.from_world([limit], self.normalizer, self.layout, (index,), weight=self.config.speed_weight,
                                  name="speed_limit")
        self.planner.experts = [e for e in self.planner.experts if getattr(e, "name", None) != "speed_limit"] + [cost]

    def describe(self) -> dict[str, Any]:
        d = asdict(self.config)
        d["select"] = self.select
        if self.config.guide == "cfg":
            d["target_return_value"] = self.target_return()
        return d


def _interleave(first: Plan, second: Plan, n: int) -> Plan:
    """Two start-major batches of plans for the same n starts as one: each start's plans of ``first``, then
    its plans of ``second``."""
    join = lambda a, b: torch.cat([a.reshape(n, -1, *a.shape[1:]), b.reshape(n, -1, *b.shape[1:])], 1).flatten(0, 1)  # noqa: E731
    return Plan(join(first.states, second.states), join(first.actions, second.actions),
                join(first.trajectories, second.trajectories))
