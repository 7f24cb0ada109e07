"""The judge's explanation score, e-ViL's S_E (Kayser et al. 2021, ICCV), from a run's verdicts.

Each verdict scores 1, 2/3, 1/3 or 0 (yes / weak yes / weak no / no: `vlx.judging.verdicts`), and S_E is the mean over
the items whose answer the model got right. vlx reports that mean as `judge_score` and the same mean over every
judged item as `all_judge_score` (the `all_` of `vlx.metrics.text`), each with a bootstrap interval over items.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vlx.metrics.bootstrap import percentile_interval, resample_counts, weighted_mean
from vlx.run.records import Verdict


def mean_with_interval(
    values: Sequence[float], resamples: int, level: float, seed: int
) -> tuple[float | None, list[float] | None]:
    """The mean of item scores and its percentile bootstrap interval over items (None, None for no items)."""
    if not values:
        return None, None
    array = np.asarray(values, dtype=float)
    resampled = weighted_mean(resample_counts(len(array), resamples, seed), array)
    return float(array.mean()), percentile_interval(resampled, level)


def judge_scores(
    verdicts: Sequence[Verdict], resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """e-ViL's explanation score from verdicts (`score`: the item's score or None, `correct`: whether its label
    was right, None without a gold label).

    Items without a verdict (an unparsed answer, no predicted label) are left out of both means, and counted.

    Returns:
        judge_score (S_E: the mean over correctly labelled items), judge_score_ci, judge_n; all_judge_score (the
        mean over every item with a verdict), all_judge_score_ci, all_judge_n.
    """
    scored = [v for v in verdicts if v.score is not None]
    correct = [float(v.score) for v in scored if v.correct and v.score is not None]
    everyone = [float(v.score) for v in scored if v.score is not None]
    out: dict[str, Any] = {}
    for prefix, values in (("", correct), ("all_", everyone)):
        mean, interval = mean_with_interval(values, resamples, level, seed)
        out[f"{prefix}judge_score"], out[f"{prefix}judge_score_ci"] = mean, interval
        out[f"{prefix}judge_n"] = len(values)
    return out
