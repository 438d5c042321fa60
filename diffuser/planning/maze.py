"""Goal-conditioned planning in a maze: inpaint the start and the goal, pick a plan, densify it.

:class:`MazePlanner` turns (start state, goal position) pairs into executable plans:

1. the start state is clamped at t = 0 and the goal ``(x, y, 0, 0)`` (position, at rest) at t = H-1;
   a model trained on goal windows with rest padding (``data.rest_dims``) learns "arrive, then stay",
   so the plan chooses its own arrival time and is not forced to take exactly H-1 steps;
2. ``num_candidates`` plans are sampled per pair in one batched call, and the one kept is the first
   that stays in free cells, enters no region a hard cost expert avoids (an obstacle added at test
   time), and arrives earliest (:meth:`MazePlanner.select`);
3. plans sampled at a temporal stride are interpolated to one state per env step, for the controller.

Errors (a goal in a wall or outside the maze, a start of the wrong size, a checkpoint trained on another
maze, a horizon the network cannot take) are raised before any sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffuser.diffusion.samplers import Sampler, make_sampler
from diffuser.envs.maze import MazeMap
from diffuser.planning.controller import densify
from diffuser.planning.planner import Planner, shift_plans

__all__ = ["MazePlanConfig", "MazePlans", "MazePlanner", "maze_of_dataset"]

GOAL_RADIUS = 0.45  # PointMaze's success distance


def maze_of_dataset(dataset_id: str | None) -> str | None:
    """The preset maze a dataset id names (``diffuser/pointmaze/umaze-v2`` -> ``umaze``), else None."""
    from diffuser.data.minari_io import _POINTMAZE_RE

    m = _POINTMAZE_RE.search(dataset_id or "")
    return m.group(1).lower() if m else None


@dataclass
class MazePlanConfig:
    """How plans are sampled and chosen.

    Args:
        num_candidates: plans sampled per (start, goal); the best one is kept.
        horizon: planned states per plan (default: the training horizon; any horizon the U-Net takes).
        sampler / sampler_steps: "ddpm" (all training steps) or "ddim" with ``sampler_steps`` steps.
        replan_every: env steps between plans (0: plan once per episode).
        replan_drift: also replan when the agent is farther than this from its tracking target
            (None: never for drift).
        warm_level: replans start from the previous plan shifted by the elapsed steps, noised to this
            share of the sampler's steps (None or 1: from pure noise).
        model_weight: weight of the model's score (1: as trained; > 1 sharpens it, a guide scale).
        replan_at_goal: keep replanning after the goal is reached (default: hold it, plan no more).
    """

    num_candidates: int = 4
    horizon: int | None = None
    sampler: str = "ddpm"
    sampler_steps: int | None = None
    replan_every: int = 0
    replan_drift: float | None = None
    warm_level: float | None = None
    model_weight: float = 1.0
    replan_at_goal: bool = False

    def __post_init__(self) -> None:
        if self.warm_level is not None and not 0.0 <= self.warm_level <= 1.0:
            raise ValueError(f"warm_level must be in [0, 1] or None, got {self.warm_level}")
        if self.num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {self.num_candidates}")
        if self.replan_every < 0:
            raise ValueError(f"replan_every must be >= 0 (0: plan once), got {self.replan_every}")
        if self.replan_drift is not None and self.replan_drift <= 0:
            raise ValueError(f"replan_drift must be > 0 or None, got {self.replan_drift}")

    def make_sampler(self) -> Sampler:
        return make_sampler(self.sampler, self.sampler_steps)


@dataclass
class MazePlans:
    """The chosen plan per pair, raw units."""

    states: np.ndarray  # (N, H, S) as sampled (at the model's stride)
    dense: np.ndarray  # (N, (H-1)*stride+1, S) one state per env step
    arrival: np.ndarray  # (N,) first dense step within GOAL_RADIUS of the goal (len(dense) if never)
    feasible: np.ndarray  # (N,) bool: every dense state lies in a free cell
    clear: np.ndarray  # (N,) bool: no dense state enters a region a hard cost expert avoids
    candidates: np.ndarray  # (N, K, H, S) all candidates
    trajectories: torch.Tensor  # (N, H, A+S) the chosen plans as sampled (normalised): warm starts
    chain: np.ndarray | None = None  # (N, steps+1, H, S) denoising chain of the chosen plans


class MazePlanner:
    """Plans between states of a maze with a trained trajectory diffusion model.

    Args:
        planner: the model's :class:`Planner` (model + normalizer).
        maze: the maze it plans in (walls for the feasibility check and the goal check).
        stride: env steps between planned states (the training windows' stride).
        config: sampling and selection settings.
        experts: score terms composed with the model (costs, values, other models), added to the
            planner's own; hard costs (obstacles) also steer the choice among candidates.
        corrector: MCMC corrector run at every noise level (None: plain reverse diffusion).
    """

    def __init__(self, planner: Planner, maze: MazeMap | str, stride: int = 1,
                 config: MazePlanConfig | None = None, experts=(), corrector=None):
        if experts or corrector is not None:
            planner = Planner(planner.model, planner.normalizer, planner.sampler, [*planner.experts, *experts],
                              planner.model_weight, corrector or planner.corrector)
        self.planner = planner
        self.maze = MazeMap.load(maze)
        self.stride = int(stride)
        self.config = config or MazePlanConfig()
        S = planner.layout.observation_dim
        if S < 4:
            raise ValueError(f"maze planning needs states (x, y, vx, vy); the model's states have {S} dims")
        self.horizon = self.config.horizon or planner.model.horizon
        planner.model.denoiser.check_horizon(self.horizon)
        self.sampler = self.config.make_sampler()

    @classmethod
    def from_checkpoint(cls, path, maze: MazeMap | str | None = None, device: str | torch.device = "cpu",
                        config: MazePlanConfig | None = None, experts=(), corrector=None) -> "MazePlanner":
        """Load an export; ``maze`` defaults to the one its dataset names, and must match it when given."""
        from diffuser.pretrained import load_model

        loaded = load_model(path, device=device)
        trained_on = maze_of_dataset(loaded.config.get("dataset"))
        if maze is None:
            if trained_on is None:
                raise ValueError(f"{path} was trained on {loaded.config.get('dataset')!r}, which names no "
                                 "maze: pass the maze explicitly")
            maze = trained_on
        maze_obj = MazeMap.load(maze)
        if trained_on is not None and not maze_obj.same_layout(MazeMap.preset(trained_on)):
            raise ValueError(f"{path} was trained on the {trained_on} maze ({loaded.config.get('dataset')}), "
                             f"not on {maze_obj.name!r}: use a checkpoint trained on this maze")
        stride = int(loaded.config.get("data", {}).get("stride", 1))
        return cls(Planner(loaded.model, loaded.normalizer), maze_obj, stride, config, experts, corrector)

    @property
    def plan_steps(self) -> int:
        """Env steps one plan spans."""
        return (self.horizon - 1) * self.stride + 1

    def check_goals(self, goals: np.ndarray) -> np.ndarray:
        goals = np.atleast_2d(np.asarray(goals, dtype=np.float64))
        if goals.shape[-1] != 2:
            raise ValueError(f"goals must be (x, y) positions, shape (2,) or (N, 2); got {goals.shape}")
        free = np.atleast_1d(self.maze.is_free_xy(goals))
        if not free.all():
            bad = goals[~free][0]
            x0, x1, y0, y1 = self.maze.bounds()
            where = "outside the maze" if not (x0 <= bad[0] <= x1 and y0 <= bad[1] <= y1) else "inside a wall"
            raise ValueError(f"goal ({bad[0]:.2f}, {bad[1]:.2f}) is {where} of {self.maze.name!r}; "
                             f"free cells centre at e.g. {self.maze.cell_to_xy(self.maze.free_cells()[0]).round(2).tolist()}")
        return goals

    def check_starts(self, starts: np.ndarray) -> np.ndarray:
        S = self.planner.layout.observation_dim
        starts = np.atleast_2d(np.asarray(starts, dtype=np.float64))
        if starts.shape[-1] != S:
            raise ValueError(f"start states must have {S} dims (x, y, vx, vy), got shape {starts.shape}")
        return starts

    def plan(self, starts: np.ndarray, goals: np.ndarray, *, generator=None, seed=None,
             return_chain: bool = False, warm_start: torch.Tensor | None = None) -> MazePlans:
        """Plan from ``starts`` (N, S) to goal positions ``goals`` (N, 2), raw units.

        ``seed``: one seed, or one per pair (each pair then gets the plan it would get alone).
        ``warm_start``: (N, H, A+S) normalised plans to start from (:meth:`shift` of the previous
        ``trajectories``), used with ``config.warm_level``.
        """
        starts, goals = self.check_starts(starts), self.check_goals(goals)
        if len(goals) != len(starts):
            raise ValueError(f"{len(starts)} start states but {len(goals)} goals")
        N, K, S = len(starts), self.config.num_candidates, starts.shape[-1]
        goal_state = np.zeros((N, S))
        goal_state[:, :2] = goals  # position; velocities (and any further dims) 0: arrive at rest
        warm, level = None, 1.0
        if warm_start is not None and self.config.warm_level is not None:
            warm, level = warm_start.repeat_interleave(K, 0), self.config.warm_level
        out = self.planner.plan(starts, goal_state, horizon=self.horizon, num_samples=K, sampler=self.sampler,
                                seed=seed, generator=generator, return_chain=return_chain, warm_start=warm,
                                warm_level=level, model_weight=self.config.model_weight)
        candidates = out.states.cpu().numpy().astype(np.float64).reshape(N, K, self.horizon, S)
        best, arrival, feasible, clear = self.select(candidates, goals)
        rows = np.arange(N)
        states = candidates[rows, best]
        chain = None
        if out.chain is not None:
            c = out.chain.cpu().numpy()
            chain = c.reshape(N, K, *c.shape[1:])[rows, best]
        chosen = out.trajectories.reshape(N, K, *out.trajectories.shape[1:])[torch.arange(N), torch.as_tensor(best)]
        return MazePlans(states, densify(states, self.stride), arrival[rows, best], feasible[rows, best],
                         clear[rows, best], candidates, chosen, chain)

    def shift(self, trajectories: torch.Tensor, env_steps: np.ndarray) -> torch.Tensor:
        """Plans (N, H, D) advanced by ``env_steps`` (N,) env steps (see :func:`shift_plans`)."""
        return shift_plans(trajectories, env_steps, self.stride)

    def hard_costs(self) -> list:
        """The planner's experts that mark regions to avoid (positive weight, ``hard``)."""
        return [e for e in self.planner.experts if getattr(e, "hard", False) and e.weight > 0]

    def clear_of_hard_costs(self, dense: np.ndarray, costs=None) -> np.ndarray:
        """(…,) bool for raw dense states (…, L, S): no state enters a region the planner's hard costs
        (or the given ``costs``) avoid."""
        costs = self.hard_costs() if costs is None else list(costs)
        lead = dense.shape[:-2]
        if not costs:
            return np.ones(lead, dtype=bool)
        states = torch.as_tensor(dense.reshape(-1, *dense.shape[-2:]), dtype=torch.float32)
        norm = self.planner.normalizer.normalize_observations(states)
        layout = self.planner.layout
        x = layout.join(norm, torch.zeros(*norm.shape[:-1], layout.action_dim))
        hit = torch.zeros(x.shape[0], dtype=torch.bool)
        for cost in costs:
            hit |= cost.violated(x)
        return (~hit).numpy().reshape(lead)

    def select(self, candidates: np.ndarray, goals: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Pick one plan per pair: feasible (all dense states in free cells) first, then clear of the
        regions hard cost experts avoid, then earliest arrival within the goal radius, then the smallest
        final distance. Returns (best (N,), arrival (N, K), feasible (N, K), clear (N, K))."""
        dense = densify(candidates, self.stride)  # (N, K, L, S)
        L = dense.shape[2]
        feasible = np.asarray(self.maze.is_free_xy(dense[..., :2])).all(axis=-1)
        clear = self.clear_of_hard_costs(dense)
        dist = np.linalg.norm(dense[..., :2] - goals[:, None, None, :], axis=-1)  # (N, K, L)
        inside = dist <= GOAL_RADIUS
        arrival = np.where(inside.any(-1), inside.argmax(-1), L)
        final = dist[..., -1]
        # Lexicographic: infeasible last, then plans through avoided regions; then arrival step (< 1e3
        # steps); final distance (< 1e3) breaks ties.
        key = (~feasible) * 1e9 + (~clear) * 1e7 + arrival * 1e3 + np.minimum(final, 999.0)
        return key.argmin(axis=1), arrival, feasible, clear

    def describe(self) -> dict[str, Any]:
        return {"horizon": self.horizon, "stride": self.stride, "plan_steps": self.plan_steps,
                "sampler": self.config.sampler, "sampler_steps": self.config.sampler_steps,
                "num_candidates": self.config.num_candidates, "replan_every": self.config.replan_every,
                "replan_drift": self.config.replan_drift, "warm_level": self.config.warm_level,
                "model_weight": self.config.model_weight}
