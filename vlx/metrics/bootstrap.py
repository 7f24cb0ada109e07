"""Percentile bootstrap confidence intervals over items, shared by every metric that reports one."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


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
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        value = statistic(rng.integers(0, n, size=n))
        if value is not None and not np.isnan(value):
            values.append(value)
    if not values:
        return None
    alpha = (1 - level) / 2
    low, high = np.quantile(np.asarray(values, dtype=float), [alpha, 1 - alpha])
    return [float(low), float(high)]
