"""Settings of the locomotion planner (:class:`~diffuser.planning.locomotion.LocomotionPlanner`), checked on
construction, and the return targets classifier-free guidance can ask for."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GUIDES", "SELECTS", "SPEED_LIMIT_BY", "WARM_FROM", "LocomotionPlanConfig", "target_return_value"]

GUIDES = ("value", "cfg", "none")
SELECTS = ("auto", "value", "guide", "first", "consensus")
WARM_FROM = ("executed", "best")
SPEED_LIMIT_BY = ("cost", "choice")


@dataclass
class LocomotionPlanConfig:
    guide: str = "value"  # "value" (value-gradient guidance) | "cfg" (classifier-free return guidance) | "none"
    scale: float = 1.0  # value guide scale, on standardised values (Diffuser's 0.1 on raw returns ≈ 0.1·std of the returns here)
    n_guide_steps: int = 2  # value-gradient steps per denoising step
    t_stopgrad: int = 2  # no value guidance below this diffusion step
    cfg_weight: float = 1.5  # w of classifier-free guidance (1: the conditional model alone)
    target_return: str = "z0"  # the return CFG asks for: "zK" (mean + K std of the training windows' returns), "max", "q90", or a number
    candidates: int = 16  # plans sampled per decision
    select: str = "auto"  # "value": best predicted return of the final plans (needs a value model) | "guide": best value at the
    # guide's last guided step (guide="value"; no extra network call, but noisier plans) | "first" | "consensus": the plan nearest
    # the candidates' mean (their medoid: no outlier) | "auto": value for guide="value", else first
    average: int = 1  # execute the mean of this many of the best candidates by `select` (1: the best alone; `candidates`: all)
    sampler: str = "ddpm"  # "ddpm" | "ddim" | "dpmpp"
    sampler_steps: int | None = None  # network evaluations for ddim / dpmpp (None: all)
    execute: int = 1  # actions executed from each plan before replanning
    horizon: int | None = None  # planning horizon (None: the model's)
    warm_level: float | None = None  # replans start from the last plan shifted by `execute`, noised to this share of the steps (None: cold)
    cold_candidates: int = 0  # of a warm-started replan's candidates, this many start from pure noise: a way out of a bad plan
    warm_from: str = "executed"  # the plan the next decision refines: "executed" (the mean, with average > 1) | "best" (the best one alone)
    avoid_falls: bool = False  # choose only among the candidates whose planned states stay healthy the longest (the env's termination rule)
    inverse_weight: float = 0.0  # share of each executed action read off inverse dynamics g(s_t, planned s_t+1) rather than
    # taken from the plan (0: the plan's own actions; 1: g's alone; needs an inverse-dynamics model)
    speed_limit: float | None = None  # planned forward speeds above this (m/s) are kept out of the plans; None: no limit
    speed_limit_by: str = "cost"  # "cost": a Ceiling expert pulls them down | "choice": choose among candidates under it
    speed_weight: float = 1.0  # the weight of that cost among the experts

    def __post_init__(self) -> None:
        if self.guide not in GUIDES:
            raise ValueError(f"unknown guide {self.guide!r}; valid: {', '.join(GUIDES)}")
        if self.select not in SELECTS:
            raise ValueError(f"select must be one of {', '.join(SELECTS)}, got {self.select!r}")
        if self.select == "guide" and self.guide != "value":
            raise ValueError(f"select='guide' ranks by the value guide's own evaluations and needs guide='value', "
                             f"not {self.guide!r}; use select='value' to rank with a separate value pass")
        if self.candidates < 1 or self.execute < 1:
            raise ValueError(f"candidates and execute must be >= 1, got {self.candidates} and {self.execute}")
        if not 1 <= self.average <= self.candidates:
            raise ValueError(f"average must be in [1, candidates] = [1, {self.candidates}], got {self.average}")
        if self.warm_level is not None and not 0.0 <= self.warm_level <= 1.0:
            raise ValueError(f"warm_level must be in [0, 1] or None (cold starts), got {self.warm_level}")
        if not 0 <= self.cold_candidates < self.candidates:
            raise ValueError(f"cold_candidates must be in [0, candidates) = [0, {self.candidates}), got "
                             f"{self.cold_candidates}: at least one candidate continues the last plan")
        if self.warm_from not in WARM_FROM:
            raise ValueError(f"warm_from must be one of {', '.join(WARM_FROM)}, got {self.warm_from!r}")
        if self.warm_from != "executed" and self.warm_level is None:
            raise ValueError("warm_from needs warm_level: without warm starts no plan is refined")
        if not 0.0 <= self.inverse_weight <= 1.0:
            raise ValueError(f"inverse_weight must be in [0, 1] (0: the plan's actions, 1: inverse dynamics'), "
                             f"got {self.inverse_weight}")
        if self.speed_limit_by not in SPEED_LIMIT_BY:
            raise ValueError(f"speed_limit_by must be one of {', '.join(SPEED_LIMIT_BY)}, got {self.speed_limit_by!r}")
        if self.speed_weight <= 0:
            raise ValueError(f"speed_weight must be > 0 (the cost's strength), got {self.speed_weight}; "
                             f"leave speed_limit unset for no limit")
        if self.cold_candidates and self.warm_level is None:
            raise ValueError("cold_candidates needs warm_level: without warm starts every candidate is cold")
        target = str(self.target_return)
        if target not in ("max", "q90"):
            try:
                float(target[1:] if target.startswith("z") else target)
            except ValueError:
                raise ValueError(f"target_return must be 'zK' (K stds above the mean return), 'max', 'q90' or a "
                                 f"number, got {self.target_return!r}") from None


def target_return_value(target: str, stats: dict) -> float:
    """A target return as ``target_return`` spells it ("zK", "max", "q90" or a number) in raw units, from a
    checkpoint's return statistics."""
    target = str(target)
    if target in ("max", "q90"):
        if target not in stats:
            raise ValueError(f"the checkpoint's return stats have no {target!r}")
        return float(stats[target])
    if target.startswith("z"):
        return float(stats["mean"] + float(target[1:]) * stats["std"])
    return float(target)
