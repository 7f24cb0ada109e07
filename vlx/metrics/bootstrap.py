"""Percentile bootstrap confidence intervals over items, shared by every metric that reports one."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np


def resample_indices(n: int, resamples: int = 1000, seed: int = 0) -> Iterator[np.ndarray]:
    """The bootstrap resamples of n items, one index array (n draws with repeats) at a time, from numpy's default
    generator with this seed: the one source of every interval's and every paired comparison's draws."""
    rng = np.random.default_rng(seed)
    for _ in range(max(resamples, 0)):
        yield rng.integers(0, n, size=n)


def bootstrap_ci(
    n: int,
    statistic: Callable[[np.ndarray], float | None],
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> list[float] | None:
    """A percentile bootstrap interval for a statistic of n items.

    Args:
        n: number of items.
        statistic: maps an index array (a resample of range(n), with repeats) to the metric's value on those items;
            may return None for a resample where the metric is undefined (e.g. AUROC with one class), which is left
            out.
        resamples: number of resamples (1000 by default).
        level: coverage, 0.95 for a 95% interval.
        seed: the resamples are drawn from numpy's default generator with this seed, so intervals reproduce.

    Returns:
        [low, high], or None when n is 0 or no resample gave a value.
    """
    if n == 0 or resamples <= 0:
        return None
    return percentile_interval([statistic(idx) for idx in resample_indices(n, resamples, seed)], level)


def resample_counts(n: int, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """The bootstrap resamples of n items as counts: row r says how often each item is drawn in resample r.

    The draws are `resample_indices`', as `bootstrap_ci`'s are, so a metric computed from these counts has the same
    interval as through `bootstrap_ci`. Any statistic that is a sum over
    items (a mean, a confusion matrix, BLEU's n-gram counts) becomes one matrix product over all resamples.

    Returns:
        int32 array (resamples, n); (0, n) when resamples is 0.
    """
    counts = np.zeros((max(resamples, 0), n), dtype=np.int32)
    for row, idx in zip(counts, resample_indices(n, resamples, seed), strict=True):  # no (resamples, n) index matrix
        row[:] = np.bincount(idx, minlength=n)
    return counts


def percentile_interval(values: np.ndarray | list[float | None], level: float = 0.95) -> list[float] | None:
    """[low, high] percentiles of resampled values (None and NaN, resamples where the metric is undefined, are
    left out); None when none is left."""
    kept = np.asarray([v for v in values if v is not None], dtype=float)
    kept = kept[~np.isnan(kept)]
    if not len(kept):
        return None
    alpha = (1 - level) / 2
    low, high = np.quantile(kept, [alpha, 1 - alpha])
    return [float(low), float(high)]


def weighted_mean(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per resample (rows of `counts`), the mean of per-item values over the drawn items; NaN for an empty row."""
    total = counts.sum(axis=-1)
    sums = counts @ np.asarray(values, dtype=float)
    return np.divide(sums, total, out=np.full(np.shape(total), np.nan), where=total > 0)
