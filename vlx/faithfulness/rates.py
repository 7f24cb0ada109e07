"""Rates over a test's rows with percentile bootstrap intervals drawn over items, not rows.

An item's edits share its image, text and original answer, so they are not independent draws: the intervals
resample items (each with all its rows), as a cluster bootstrap does, with `vlx.metrics.bootstrap`'s draws.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from vlx.metrics.bootstrap import bootstrap_ci

Row = Mapping[str, Any]


def grouped(rows: Sequence[Row], key: str = "item") -> list[list[Row]]:
    """The rows grouped by item (`key`), in order of first appearance."""
    groups: dict[Any, list[Row]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row)
    return list(groups.values())


def rate(
    groups: Sequence[Sequence[Row]],
    counts: Callable[[Sequence[Row]], tuple[float, float]],
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """A rate over items with its interval: {"value", "ci" ([low, high] or None), "n" (its denominator)}.

    Args:
        groups: each item's rows (`grouped`).
        counts: an item's (numerator, denominator): e.g. (flipping edits, edits) for an edit-level rate, or
            (1 if any edit flips, 1) for an item-level one.
        resamples: bootstrap resamples (0: no interval).
        seed: the resamples' seed.
    """
    per_item = np.array([counts(rows) for rows in groups], dtype=float).reshape(-1, 2)
    total = per_item.sum(axis=0)

    def statistic(idx: np.ndarray) -> float | None:
        top, bottom = per_item[idx].sum(axis=0)
        return float(top / bottom) if bottom else None

    return {
        "value": float(total[0] / total[1]) if total[1] else None,
        "ci": bootstrap_ci(len(groups), statistic, resamples=resamples, seed=seed),
        "n": int(total[1]),
    }
