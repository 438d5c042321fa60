"""Episodes: the environment-independent unit every reader produces and every dataset consumes.

An :class:`Episode` holds ``T`` steps. ``observations[t]`` is the state in which ``actions[t]`` was
taken, ``rewards[t]`` / ``terminations[t]`` / ``truncations[t]`` describe what followed it, and
``final_observation`` (when the source provides it, as Minari's ``N + 1`` observations do) is the state
after the last action. Readers (Minari, D4RL HDF5, locally collected data) convert to this and nothing
downstream needs to know where the data came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["Episode", "EpisodeStats", "episode_stats", "split_episodes"]


def _first_non_finite(x: np.ndarray) -> int | None:
    """Index along axis 0 of the first row holding NaN or inf, or None when all are finite."""
    bad = ~np.isfinite(x)
    if bad.ndim > 1:
        bad = bad.reshape(bad.shape[0], -1).any(axis=1)
    if not bad.any():
        return None
    return int(np.argmax(bad))


@dataclass
class Episode:
    """One episode of ``T >= 1`` steps.

    Attributes:
        observations: (T, S) float32; ``observations[t]`` is the state in which ``actions[t]`` was taken.
        actions: (T, A) float32.
        rewards: (T,) float32.
        terminations: (T,) bool; True where the MDP reached a terminal state after step t.
        truncations: (T,) bool; True where the episode was cut for a reason outside the MDP (time limit,
            success cut of a continuing task).
        final_observation: (S,) float32 or None; the state after the last action, when known.
        infos: per-step extras, each with leading dim T, e.g. ``"desired_goal"``: (T, 2).

    Inputs are converted to the dtypes above and validated on construction; a ``ValueError`` names the
    field at fault.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    final_observation: np.ndarray | None = None
    infos: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.observations = np.asarray(self.observations, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        self.rewards = np.asarray(self.rewards, dtype=np.float32)
        self.terminations = np.asarray(self.terminations, dtype=bool)
        self.truncations = np.asarray(self.truncations, dtype=bool)

        for name in ("observations", "actions"):
            arr = getattr(self, name)
            if arr.ndim != 2:
                raise ValueError(f"Episode.{name} must be 2-D (T, dim), got shape {arr.shape}")
        for name in ("rewards", "terminations", "truncations"):
            arr = getattr(self, name)
            if arr.ndim != 1:
                raise ValueError(f"Episode.{name} must be 1-D (T,), got shape {arr.shape}")

        T = self.observations.shape[0]
        if T < 1:
            raise ValueError("Episode needs at least one step, got T=0")
        lengths = {
            "observations": T,
            "actions": self.actions.shape[0],
            "rewards": self.rewards.shape[0],
            "terminations": self.terminations.shape[0],
            "truncations": self.truncations.shape[0],
        }
        if len(set(lengths.values())) != 1:
            # Minari stores N + 1 observations for N actions; say so, since it is the usual cause.
            raise ValueError(
                f"Episode arrays disagree on the number of steps: {lengths}. Pass T observations for T "
                f"actions (the state after the last action goes in final_observation)."
            )

        for name in ("observations", "actions", "rewards"):
            bad = _first_non_finite(getattr(self, name))
            if bad is not None:
                raise ValueError(
                    f"Episode.{name} holds NaN or inf at step {bad} of an episode of length {T}; "
                    f"clean the data (drop or repair the episode) before building datasets"
                )

        if self.final_observation is not None:
            self.final_observation = np.asarray(self.final_observation, dtype=np.float32)
            if self.final_observation.shape != (self.observation_dim,):
                raise ValueError(
                    f"Episode.final_observation must have shape ({self.observation_dim},), "
                    f"got {self.final_observation.shape}"
                )
            if not np.isfinite(self.final_observation).all():
                raise ValueError(
                    f"Episode.final_observation holds NaN or inf (episode length {T}); clean the data "
                    f"or pass final_observation=None"
                )

        infos = {}
        for key, value in dict(self.infos).items():
            arr = np.asarray(value)
            if arr.ndim < 1 or arr.shape[0] != T:
                raise ValueError(
                    f"Episode.infos[{key!r}] must have leading dim T={T}, got shape {arr.shape}"
                )
            infos[key] = arr
        self.infos = infos

    def __len__(self) -> int:
        return int(self.observations.shape[0])

    @property
    def observation_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def terminated(self) -> bool:
        """Whether the episode ended in a terminal state (``terminations[-1]``)."""
        return bool(self.terminations[-1])

    @property
    def truncated(self) -> bool:
        """Whether the episode was cut (``truncations[-1]``)."""
        return bool(self.truncations[-1])

    @property
    def total_return(self) -> float:
        """Undiscounted sum of rewards, accumulated in float64."""
        return float(self.rewards.sum(dtype=np.float64))


@dataclass(frozen=True)
class EpisodeStats:
    """Summary of a list of episodes (see :func:`episode_stats`)."""

    count: int
    total_steps: int
    min_length: int
    mean_length: float
    median_length: float
    max_length: int
    fraction_terminated: float
    fraction_truncated: float
    mean_return: float

    def __str__(self) -> str:
        return (
            f"{self.count} episodes, {self.total_steps} steps\n"
            f"  length: min {self.min_length}, mean {self.mean_length:.1f}, "
            f"median {self.median_length:.1f}, max {self.max_length}\n"
            f"  ended: {100 * self.fraction_terminated:.1f}% terminated, "
            f"{100 * self.fraction_truncated:.1f}% truncated\n"
            f"  mean return: {self.mean_return:.3f}"
        )


def episode_stats(episodes: Sequence[Episode]) -> EpisodeStats:
    """Counts, lengths, how episodes ended, and the mean return. Raises ValueError on an empty list."""
    if len(episodes) == 0:
        raise ValueError("episode_stats needs at least one episode, got none")
    lengths = np.array([len(ep) for ep in episodes], dtype=np.int64)
    return EpisodeStats(
        count=len(episodes),
        total_steps=int(lengths.sum()),
        min_length=int(lengths.min()),
        mean_length=float(lengths.mean()),
        median_length=float(np.median(lengths)),
        max_length=int(lengths.max()),
        fraction_terminated=float(np.mean([ep.terminated for ep in episodes])),
        fraction_truncated=float(np.mean([ep.truncated for ep in episodes])),
        mean_return=float(np.mean([ep.total_return for ep in episodes])),
    )


def split_episodes(
    episodes: Sequence[Episode], val_fraction: float, seed: int
) -> tuple[list[Episode], list[Episode]]:
    """Split whole episodes into (train, val), deterministically for a seed.

    Splitting by episode (not by window) keeps overlapping windows of one episode out of both sides.
    ``round(val_fraction * n)`` episodes go to validation, at least one when ``val_fraction > 0`` and
    at most ``n - 1`` so training always has one; with a single episode validation is empty. Both
    lists keep the input order, so episodes that follow each other in time stay adjacent.

    Args:
        episodes: the episodes to split (n >= 1).
        val_fraction: in [0, 1); 0 gives an empty validation list.
        seed: seed of the permutation.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(episodes)
    if n == 0:
        raise ValueError("split_episodes needs at least one episode, got none")
    n_val = 0
    if val_fraction > 0 and n > 1:
        n_val = min(max(1, int(round(val_fraction * n))), n - 1)
    rng = np.random.default_rng(seed)
    is_val = np.zeros(n, dtype=bool)
    is_val[rng.permutation(n)[:n_val]] = True
    train = [ep for ep, v in zip(episodes, is_val) if not v]
    val = [ep for ep, v in zip(episodes, is_val) if v]
    return train, val
