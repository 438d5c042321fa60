"""Statistics for result tables: mean ± standard error, the interquartile mean, percentile-bootstrap CIs.

Two summaries of the same runs, because they answer different questions:

* **mean ± s.e. across seeds**: each training seed's mean episode score is one sample; the standard
  error says how much the mean would move with other training seeds (the variation that matters when
  comparing methods, and what papers report);
* **IQM over all episodes** (the mean of the middle 50 %): robust to the few episodes that fail
  completely or score far above the rest, with a 95 % percentile-bootstrap confidence interval
  (Agarwal et al., 2021, recommend IQM with bootstrap CIs for few-run RL evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_ci", "iqm", "mean_se"]


def _as_1d(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError(f"{what} of no values")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: the values hold NaN or inf")
    return x


def mean_se(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation, ddof 1, over sqrt(n)); the
    standard error of a single value is 0 (unknown, not zero: report the count with it)."""
    x = _as_1d(values, "mean")
    se = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else 0.0
    return float(x.mean()), se


def _iqm_sorted(sorted_rows: np.ndarray) -> np.ndarray:
    """IQM of each row of an array sorted along its last axis."""
    n = sorted_rows.shape[-1]
    cut = int(0.25 * n)  # dropped from each end, as scipy.stats.trim_mean(x, 0.25) does
    return sorted_rows[..., cut : n - cut].mean(axis=-1)


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean after dropping the lowest and highest 25 % (``floor(n / 4)`` values
    from each end); with fewer than 4 values nothing is dropped and it is the plain mean."""
    x = _as_1d(values, "IQM")
    return float(_iqm_sorted(np.sort(x)))


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: str = "iqm",
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``statistic`` (``"iqm"`` or ``"mean"``).

    Draws ``resamples`` samples of the values with replacement (a seeded numpy generator, so the same
    seed gives the same interval), computes the statistic on each and returns its
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles.
    """
    x = _as_1d(values, "bootstrap")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if statistic not in ("iqm", "mean"):
        raise ValueError(f"unknown statistic {statistic!r}; choose 'iqm' or 'mean'")
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    chunk = max(1, 2_000_000 // x.size)  # resamples per chunk: bounded memory for many episodes
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        sample = x[rng.integers(0, x.size, size=(rows, x.size))]
        stats[start : start + rows] = (_iqm_sorted(np.sort(sample, axis=-1)) if statistic == "iqm"
                                       else sample.mean(axis=-1))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return float(low), float(high)
