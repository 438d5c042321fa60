"""Data: episodes, normalizers and training windows, independent of any environment package."""

from diffuser.data.episodes import Episode, EpisodeStats, episode_stats, split_episodes
from diffuser.data.layout import TrajectoryLayout
from diffuser.data.normalizers import (
    NORMALIZER_KINDS,
    GaussianNormalizer,
    LimitsNormalizer,
    Normalizer,
    NotFittedError,
    TrajectoryNormalizer,
    make_normalizer,
)
from diffuser.data.windows import PADDINGS, GoalDataset, SequenceDataset, ValueDataset, discounted_returns

__all__ = [
    "Episode",
    "EpisodeStats",
    "episode_stats",
    "split_episodes",
    "TrajectoryLayout",
    "Normalizer",
    "NotFittedError",
    "GaussianNormalizer",
    "LimitsNormalizer",
    "NORMALIZER_KINDS",
    "make_normalizer",
    "TrajectoryNormalizer",
    "PADDINGS",
    "SequenceDataset",
    "GoalDataset",
    "ValueDataset",
    "discounted_returns",
]
