"""A synthetic point-mass dataset that needs no simulator: for tests, smoke runs and the quick demo.

A point mass in the open square [-1, 1]² is driven by a noisy PD controller toward random goals;
an episode ends (terminates) when it comes within ``goal_radius`` of its goal, or is truncated after
``max_steps``. State (x, y, vx, vy), action a ∈ [-1, 1]² (a force), dynamics

    v ← damping · v + dt · gain · a,    p ← clip(p + dt · v, -1, 1)

The numbers are chosen so that episodes last tens of steps, like PointMaze's open maze.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffuser.data.episodes import Episode


@dataclass(frozen=True)
class PointMassDynamics:
    dt: float = 0.05
    gain: float = 1.0  # force scale
    damping: float = 0.95  # velocity kept per step

    def step(self, state: np.ndarray, action: np.ndarray) -> np.ndarray:
        """(..., 4), (..., 2) -> (..., 4)"""
        pos, vel = state[..., :2], state[..., 2:]
        vel = self.damping * vel + self.dt * self.gain * np.clip(action, -1.0, 1.0)
        pos = np.clip(pos + self.dt * vel, -1.0, 1.0)
        return np.concatenate([pos, vel], axis=-1)


def pointmass_episodes(num_episodes: int = 200, *, seed: int = 0, max_steps: int = 100,
                       goal_radius: float = 0.05, action_noise: float = 0.3,
                       dynamics: PointMassDynamics = PointMassDynamics()) -> list[Episode]:
    """Episodes of a point mass reaching random goals; ``infos["goal"]`` holds each step's goal (T, 2)."""
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(num_episodes):
        state = np.concatenate([rng.uniform(-0.9, 0.9, 2), np.zeros(2)])
        goal = rng.uniform(-0.9, 0.9, 2)
        obs, acts, rews, terms = [], [], [], []
        for _ in range(max_steps):
            action = 3.0 * (goal - state[:2]) - 1.0 * state[2:] + action_noise * rng.standard_normal(2)
            action = np.clip(action, -1.0, 1.0)
            obs.append(state)
            acts.append(action)
            state = dynamics.step(state, action)
            reached = np.linalg.norm(state[:2] - goal) <= goal_radius
            rews.append(float(reached))
            terms.append(bool(reached))
            if reached:
                break
        T = len(obs)
        truncations = np.zeros(T, bool)
        truncations[-1] = not terms[-1]
        episodes.append(Episode(
            observations=np.asarray(obs), actions=np.asarray(acts), rewards=np.asarray(rews),
            terminations=np.asarray(terms), truncations=truncations, final_observation=state,
            infos={"goal": np.repeat(goal[None], T, axis=0)},
        ))
    return episodes
