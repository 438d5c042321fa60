"""Preparing episodes for planning: goal-reaching segments, statistics, and continuous streams.

PointMaze datasets made with the D4RL/pointmaze-v2 recipe end an episode at every success, so each
episode already *is* a goal-reaching segment (mean length about 76 steps in U-Maze, 210 Medium, 298
Large). Planning horizons are longer (128-384), so goal windows must span several segments: the
original Diffuser cut the 1M-step stream only where the agent left the goal. Consecutive episodes are
contiguous in time (the next starts where the last ended) except at the reseeded resets every 200k
steps; :func:`stitch_contiguous` joins them back into continuous streams.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from diffuser.data.episodes import Episode, EpisodeStats, episode_stats

__all__ = ["SUCCESS_RADIUS", "reached_goal", "goal_segments", "DatasetStats", "dataset_stats",
           "stitch_contiguous", "check_dims"]

SUCCESS_RADIUS = 0.45  # PointMaze's success distance


def reached_goal(ep: Episode, radius: float = SUCCESS_RADIUS) -> bool:
    """Whether the episode ends at its goal.

    Uses the state after the last action (``final_observation``, else the last observation) against the
    last ``desired_goal``; without goals, a recorded ``info/success`` flag; else ``terminations[-1]``.
    """
    goals = ep.infos.get("desired_goal")
    if goals is not None:
        last = ep.final_observation if ep.final_observation is not None else ep.observations[-1]
        return bool(np.linalg.norm(last[:2] - goals[-1, :2]) <= radius)
    if "info/success" in ep.infos:
        return bool(ep.infos["info/success"][-1]) or ep.terminated
    return ep.terminated


def goal_segments(
    episodes: Sequence[Episode], min_length: int = 1, require_success: bool = True,
    radius: float = SUCCESS_RADIUS,
) -> list[Episode]:
    """The episodes that reach their goal (when ``require_success``) and have at least ``min_length``
    steps: the goal-reaching segments (episodes cut by resets or the end of the run are dropped)."""
    if min_length < 1:
        raise ValueError(f"min_length must be >= 1, got {min_length}")
    return [
        ep for ep in episodes
        if len(ep) >= min_length and (not require_success or reached_goal(ep, radius))
    ]


@dataclass(frozen=True)
class DatasetStats:
    """:class:`EpisodeStats` plus what planning needs: length percentiles and the success fraction."""

    episodes: EpisodeStats
    length_percentiles: dict[str, float]  # p5, p25, p50, p75, p95
    length_histogram: list[tuple[int, int, int]]  # (low, high, count) bins of episode length
    success_fraction: float
    observation_dim: int
    action_dim: int
    contiguous_streams: int  # streams after stitch_contiguous (1 per reset block for PointMaze)
    has_goals: bool = True  # False (locomotion): success_fraction is the share of episodes that terminated

    def __str__(self) -> str:
        p = self.length_percentiles
        hist = "\n".join(f"    {lo:>6}-{hi:<6} {n}" for lo, hi, n in self.length_histogram)
        ends = "reach the goal" if self.has_goals else "end in a termination"
        return (
            f"{self.episodes}\n"
            f"  length percentiles: p5 {p['p5']:.0f}, p25 {p['p25']:.0f}, p50 {p['p50']:.0f}, "
            f"p75 {p['p75']:.0f}, p95 {p['p95']:.0f}\n"
            f"  {ends}: {100 * self.success_fraction:.1f}% of episodes\n"
            f"  observation dim {self.observation_dim}, action dim {self.action_dim}, "
            f"{self.contiguous_streams} contiguous stream(s)\n"
            f"  length histogram:\n{hist}"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def dataset_stats(
    episodes: Sequence[Episode], printer: Callable[[str], None] | None = print, bins: int = 8,
) -> DatasetStats:
    """Statistics of a list of episodes, printed with ``printer`` (None: silent) and returned."""
    base = episode_stats(episodes)
    lengths = np.array([len(ep) for ep in episodes])
    pct = {f"p{q}": float(np.percentile(lengths, q)) for q in (5, 25, 50, 75, 95)}
    edges = np.unique(np.linspace(lengths.min(), lengths.max() + 1, bins + 1).astype(int))
    counts, _ = np.histogram(lengths, bins=edges)
    hist = [(int(lo), int(hi) - 1, int(c)) for lo, hi, c in zip(edges[:-1], edges[1:], counts)]
    stats = DatasetStats(
        episodes=base,
        length_percentiles=pct,
        length_histogram=hist,
        success_fraction=float(np.mean([reached_goal(ep) for ep in episodes])),
        observation_dim=episodes[0].observation_dim,
        action_dim=episodes[0].action_dim,
        contiguous_streams=len(_stream_starts(episodes)),
        has_goals=any("desired_goal" in ep.infos or "info/success" in ep.infos for ep in episodes),
    )
    if printer is not None:
        printer(str(stats))
    return stats


def _continues(prev: Episode, nxt: Episode, atol: float) -> bool:
    return (
        prev.final_observation is not None
        and not prev.terminated
        and prev.observation_dim == nxt.observation_dim
        and bool(np.allclose(prev.final_observation, nxt.observations[0], rtol=0.0, atol=atol))
    )


def _stream_starts(episodes: Sequence[Episode], atol: float = 1e-6) -> list[int]:
    """Indices where a new stream begins (episode 0 and every break in contiguity)."""
    return [0] + [k for k in range(1, len(episodes)) if not _continues(episodes[k - 1], episodes[k], atol)]


def stitch_contiguous(episodes: Sequence[Episode], atol: float = 1e-6) -> list[Episode]:
    """Join runs of consecutive episodes where one's ``final_observation`` equals the next one's first
    observation (within ``atol``) into single continuous episodes.

    Inside a stitched episode the old episode ends are no longer truncations; they are kept as
    ``infos["segment_end"]`` (T,) bool. Info keys present in every episode of a run are concatenated,
    the others dropped. The last episode of a run gives the ``final_observation`` and end flags.
    Episodes without a ``final_observation`` (e.g. D4RL files without next_observations) or that
    terminated are never joined to the next.
    """
    if not episodes:
        return []
    starts = _stream_starts(episodes, atol) + [len(episodes)]
    out = []
    for a, b in zip(starts[:-1], starts[1:]):
        run = list(episodes[a:b])
        segment_end = np.concatenate([np.eye(1, len(ep), len(ep) - 1, dtype=bool)[0] for ep in run])
        truncations = np.concatenate([ep.truncations for ep in run])
        truncations[:-1] = False
        truncations[-1] = run[-1].truncations[-1]
        keys = set(run[0].infos).intersection(*(ep.infos for ep in run[1:]))
        infos = {k: np.concatenate([ep.infos[k] for ep in run]) for k in sorted(keys)}
        infos["segment_end"] = segment_end
        out.append(Episode(
            observations=np.concatenate([ep.observations for ep in run]),
            actions=np.concatenate([ep.actions for ep in run]),
            rewards=np.concatenate([ep.rewards for ep in run]),
            terminations=np.concatenate([ep.terminations for ep in run]),
            truncations=truncations,
            final_observation=run[-1].final_observation,
            infos=infos,
        ))
    return out


def check_dims(episodes: Sequence[Episode], observation_dim: int, action_dim: int, source: str = "dataset",
               target: str = "checkpoint") -> None:
    """Raise ValueError when the episodes' dims differ from what a model/checkpoint expects."""
    if not episodes:
        raise ValueError(f"{source} holds no episodes")
    got = (episodes[0].observation_dim, episodes[0].action_dim)
    if got != (observation_dim, action_dim):
        raise ValueError(
            f"{source} has observation dim {got[0]} and action dim {got[1]}, but the {target} expects "
            f"observation dim {observation_dim} and action dim {action_dim}; use the dataset the {target} "
            f"was trained on (or train a new model)"
        )
    for k, ep in enumerate(episodes):
        if (ep.observation_dim, ep.action_dim) != got:
            raise ValueError(f"{source}: episode {k} has dims {(ep.observation_dim, ep.action_dim)}, episode 0 {got}")
