"""Paired tests of two runs on the items both answered: every metric's difference B - A with a paired percentile
bootstrap interval and p-value, and McNemar's exact test for accuracy.

The same resampled items score both runs, so what the items have in common cancels out. The draws are those of
every interval of the eval stage (`vlx.metrics.bootstrap`). The p-value is two-sided, from the bootstrap
distribution of the difference centred on the observed one: (1 + #{|d* - d| >= |d|}) / (R + 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vlx.metrics import calibration as cal
from vlx.metrics import classification as cls
from vlx.metrics.bootstrap import percentile_interval, resample_counts, resample_indices, weighted_mean
from vlx.metrics.registry import ALL, row_metrics

if TYPE_CHECKING:
    from vlx.run.records import Prediction

# what comparison.json says of how its intervals and p-values were drawn
METHOD = (
    "paired percentile bootstrap over the shared items (the same resamples score both runs); p: two-sided, "
    "bootstrap distribution of B - A centred on the observed difference"
)


@dataclass(frozen=True)
class Difference:
    """One metric of runs A and B on their shared items, and its difference B - A.

    Attributes:
        a, b: each run's value.
        difference: b - a.
        ci: the paired bootstrap interval of the difference, None without resamples.
        p_value: two-sided bootstrap p-value, None without resamples.
        n: the items it covers.
    """

    a: float
    b: float
    difference: float
    ci: tuple[float, float] | None
    p_value: float | None
    n: int

    def to_json(self) -> dict[str, Any]:
        """comparison.json's form: {"a", "b", "difference", "ci": [low, high] or null, "p_value", "n"}."""
        return {
            "a": self.a,
            "b": self.b,
            "difference": self.difference,
            "ci": list(self.ci) if self.ci is not None else None,
            "p_value": self.p_value,
            "n": self.n,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Difference:
        """Reads `to_json`'s form back (a comparison.json's metric)."""
        ci = data.get("ci")
        return cls(
            data["a"], data["b"], data["difference"], (ci[0], ci[1]) if ci else None, data.get("p_value"), data["n"]
        )


def index_draws(n: int, resamples: int, seed: int) -> np.ndarray:
    """Index resamples (R, n): the draws of every interval of the eval stage."""
    return np.stack(list(resample_indices(n, resamples, seed))) if resamples else np.zeros((0, n), dtype=np.int64)


def paired_difference(
    point_a: float | None, point_b: float | None, resampled_a: np.ndarray, resampled_b: np.ndarray, level: float, n: int
) -> Difference | None:
    """One metric's difference B - A with its paired bootstrap interval and two-sided p-value.

    Args:
        point_a: the metric of run A on the shared items (None or NaN: undefined).
        point_b: the same for run B.
        resampled_a: the metric of run A on each resample (R,), the same resamples for both; NaN where a resample
            leaves it undefined (left out).
        resampled_b: the same for run B.
        level: the interval's coverage.
        n: the items the metric covers.

    Returns:
        The difference, or None where either point value is undefined.
    """
    if point_a is None or point_b is None or math.isnan(point_a) or math.isnan(point_b):
        return None
    diff = point_b - point_a
    d = np.asarray(resampled_b, dtype=float) - np.asarray(resampled_a, dtype=float)
    d = d[~np.isnan(d)]
    p = float((1 + np.count_nonzero(np.abs(d - diff) >= abs(diff) - 1e-12)) / (len(d) + 1)) if len(d) else None
    found = percentile_interval(d, level) if len(d) else None
    return Difference(point_a, point_b, diff, (found[0], found[1]) if found else None, p, n)


def mcnemar(right_a: np.ndarray, right_b: np.ndarray) -> dict[str, Any]:
    """McNemar's exact test: the two-sided binomial test (p = 1/2) on the items exactly one run gets right."""
    from scipy.stats import binomtest

    only_a = int(np.count_nonzero(right_a & ~right_b))
    only_b = int(np.count_nonzero(right_b & ~right_a))
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {
        "only_a_right": only_a,
        "only_b_right": only_b,
        "both_right": int(np.count_nonzero(right_a & right_b)),
        "both_wrong": int(np.count_nonzero(~right_a & ~right_b)),
        "p_value": p,
    }


@dataclass(frozen=True)
class LabelledItems:
    """One run's answers on the shared labelled items, in the same item order for both runs.

    Attributes:
        score: each item's score as the eval stage counts it (1/0, or VQA's soft score).
        gold: each item's gold label.
        counted: the label each answer counts as (`vlx.tasks.answers.counted_label`), None if unparsed.
        label_scores: each item's label probabilities (decode=score), None where it has none.
    """

    score: np.ndarray
    gold: Sequence[str]
    counted: Sequence[str | None]
    label_scores: Sequence[Mapping[str, float] | None]


def classification_differences(
    a: LabelledItems,
    b: LabelledItems,
    labels: Sequence[str],
    positive: str | None,
    *,
    resamples: int,
    seed: int,
    level: float,
    bins: int = 15,
) -> dict[str, Difference]:
    """Accuracy (and, for label tasks, macro-F1, binary F1, AUROC, ECE, Brier, NLL) of both runs, each resample
    scoring both.

    Args:
        a: run A's shared labelled items.
        b: run B's, in the same order.
        labels: the task's labels (empty for open answers: accuracy only).
        positive: the positive class (binary F1, AUROC, the Brier score of two labels), or None.
        resamples: bootstrap resamples.
        seed: the bootstrap's seed.
        level: the intervals' coverage.
        bins: ECE's bins (the baseline's `ece_bins`).
    """
    n = len(a.score)
    draws = index_draws(n, resamples, seed)
    every = np.arange(n)
    out: dict[str, Difference] = {}

    def add(key: str, fa: cls.Statistic | None, fb: cls.Statistic | None) -> None:
        if fa is None or fb is None:
            return
        result = paired_difference(
            fa(every),
            fb(every),
            np.asarray([_nan(fa(d)) for d in draws]),
            np.asarray([_nan(fb(d)) for d in draws]),
            level,
            n,
        )
        if result is not None:
            out[key] = result

    add("accuracy", cls.accuracy_statistic(a.score), cls.accuracy_statistic(b.score))
    if not labels:
        return out
    labels, k = list(labels), len(labels)
    cells = {}
    for name, run in (("a", a), ("b", b)):
        g, p = cls.encode_labels(run.gold, run.counted, labels)
        cells[name] = g * (k + 1) + p
    add("macro_f1", cls.macro_f1_statistic(cells["a"], k), cls.macro_f1_statistic(cells["b"], k))
    if positive in labels:
        pos = labels.index(positive)
        add("binary_f1", *(cls.binary_f1_statistic(c // (k + 1) == pos, c % (k + 1) == pos) for c in cells.values()))

        def auroc(run: LabelledItems, c: np.ndarray) -> cls.Statistic | None:
            values = [cls.positive_score(s, positive) for s in run.label_scores]
            return (
                None
                if any(math.isnan(v) for v in values)
                else cls.auroc_statistic(c // (k + 1) == pos, np.asarray(values))
            )

        add("auroc", auroc(a, cells["a"]), auroc(b, cells["b"]))
    out.update(calibration_differences(a, b, labels, positive, resample_counts(n, resamples, seed), level, bins))
    return out


def calibration_differences(
    a: LabelledItems,
    b: LabelledItems,
    labels: Sequence[str],
    positive: str | None,
    counts: np.ndarray,
    level: float,
    bins: int,
) -> dict[str, Difference]:
    """ECE, Brier and NLL differences where both runs have label scores on every shared item ({} otherwise)."""
    if any(s is None for run in (a, b) for s in run.label_scores):
        return {}
    inputs = {
        k: cal.calibration_inputs(r.gold, r.label_scores, labels, missing_as_zero=True)  # type: ignore[arg-type]
        for k, r in (("a", a), ("b", b))
    }
    pos = list(labels).index(positive) if len(labels) == 2 and positive is not None and positive in labels else None
    ones = np.ones((1, len(a.score)), dtype=np.int32)
    statistics: dict[str, Callable[[cal.CalibrationInputs, np.ndarray], np.ndarray]] = {
        "ece": lambda x, c: cal.ece(x, c, bins),
        "brier": lambda x, c: cal.brier(x, c, pos),
        "nll": cal.nll,
    }
    out = {}
    for key, fn in statistics.items():
        result = paired_difference(
            float(fn(inputs["a"], ones)[0]),
            float(fn(inputs["b"], ones)[0]),
            fn(inputs["a"], counts),
            fn(inputs["b"], counts),
            level,
            len(a.score),
        )
        if result is not None:
            out[key] = result
    return out


def explanation_differences(
    items_a: Any,
    items_b: Any,
    right_a: np.ndarray,
    right_b: np.ndarray,
    weights: np.ndarray,
    *,
    labelled: bool,
    level: float,
) -> dict[str, Difference]:
    """Every explanation metric of both runs on their shared scored items, resampled together: e-ViL's scores on
    each run's own correctly labelled items among those drawn, and the `all_` ones on every item drawn.

    Args:
        items_a: run A's `vlx.metrics.text.ExplanationItems` on the shared scored items.
        items_b: run B's, in the same order.
        right_a: whether run A labelled each item correctly.
        right_b: the same for run B.
        weights: (R, n) resample counts of the shared scored items.
        labelled: the task has gold labels (else only the `all_` scores).
        level: the intervals' coverage.
    """
    from vlx.metrics.text import close_meteor, corpus, open_meteor

    n = len(right_a)
    right = {"a": right_a, "b": right_b}
    runs = {"a": items_a, "b": items_b}
    out: dict[str, Difference] = {}
    meteor = open_meteor(n, items_a.java)  # runs scored with eval.java=false have no METEOR
    try:
        rows = np.vstack([np.ones((1, n), dtype=np.int32), weights])
        for prefix in ("", ALL) if labelled else (ALL,):
            values = {}
            for k in ("a", "b"):
                mask = right[k] if prefix == "" else np.ones(n, dtype=bool)
                values[k] = corpus(runs[k], rows * mask, meteor)
                if labelled:  # e-ViL's global score: the draw's accuracy times its avg_all
                    avg_all = next(key for key in values[k] if key.startswith("evil_avg_all"))
                    values[k][avg_all.replace("avg_all", "global")] = (
                        values[k][avg_all] * (rows @ right[k]) / rows.sum(1)
                    )
            for key in values["a"]:
                result = paired_difference(
                    _point(values["a"][key]),
                    _point(values["b"][key]),
                    values["a"][key][1:],
                    values["b"][key][1:],
                    level,
                    n,
                )
                if result is not None:
                    out[prefix + key] = result
    finally:
        close_meteor(meteor)
    return out


def mean_differences(
    scores_a: Sequence[float | None], scores_b: Sequence[float | None], counts: np.ndarray, level: float
) -> Difference | None:
    """The difference of two runs' means of an item score over the items both score (neither None)."""
    keep, sa, sb = _both_scored(scores_a, scores_b)
    if not keep.any():
        return None
    ones = np.ones((1, len(keep)))
    return paired_difference(
        _point(weighted_mean(ones * keep, sa)),
        _point(weighted_mean(ones * keep, sb)),
        weighted_mean(counts * keep, sa),
        weighted_mean(counts * keep, sb),
        level,
        int(keep.sum()),
    )


def ratio_differences(counts_a: np.ndarray, counts_b: np.ndarray, draws: np.ndarray, level: float) -> Difference | None:
    """The difference of two runs' ratios of sums over the same items (each item's numerator and denominator, e.g.
    its flipping edits and its edits), every resample drawing the same items for both runs.

    Args:
        counts_a: run A's (numerator, denominator) per item, (n, 2).
        counts_b: run B's, the same items in the same order.
        draws: (R, n) resample counts of the items (`resample_counts`).
        level: the interval's coverage.

    Returns:
        The difference (n: the items where either run has a denominator), or None where either ratio is undefined
        (no denominator at all).
    """
    a, b = (np.asarray(c, dtype=float).reshape(-1, 2) for c in (counts_a, counts_b))
    rows = np.vstack([np.ones((1, len(a))), np.asarray(draws, dtype=float).reshape(-1, len(a))])

    def ratios(c: np.ndarray) -> np.ndarray:  # [R + 1]: the point value, then each resample's
        top, bottom = rows @ c[:, 0], rows @ c[:, 1]
        return np.divide(top, bottom, out=np.full(len(top), np.nan), where=bottom > 0)

    ra, rb = ratios(a), ratios(b)
    n = int(np.count_nonzero((a[:, 1] > 0) | (b[:, 1] > 0)))
    return paired_difference(_point(ra), _point(rb), ra[1:], rb[1:], level, n)


def judge_differences(
    scores_a: Sequence[float | None],
    scores_b: Sequence[float | None],
    right_a: np.ndarray,
    right_b: np.ndarray,
    counts: np.ndarray,
    level: float,
) -> dict[str, Difference]:
    """The judge score (mean e-ViL verdict score) of both runs on the items both have verdicts for: `judge_score`
    on each run's own correctly labelled ones, `all_judge_score` on all of them."""
    keep, sa, sb = _both_scored(scores_a, scores_b)
    out: dict[str, Difference] = {}
    if not keep.any():
        return out
    ones = np.ones((1, len(keep)))
    for prefix, ma, mb in (("", keep & right_a, keep & right_b), (ALL, keep, keep)):
        result = paired_difference(
            _point(weighted_mean(ones * ma, sa)),
            _point(weighted_mean(ones * mb, sb)),
            weighted_mean(counts * ma, sa),
            weighted_mean(counts * mb, sb),
            level,
            int(keep.sum()),
        )
        if result is not None:
            out[prefix + "judge_score"] = result
    return out


def row_metric_differences(
    rows_a: Sequence[Prediction], rows_b: Sequence[Prediction], counts: np.ndarray, level: float
) -> dict[str, Difference]:
    """The registry's row metrics (`Metric.item_score`) of both runs on the shared rows (same order) both score."""
    out = {}
    for metric in row_metrics():
        assert metric.item_score is not None
        result = mean_differences(
            [metric.item_score(r) for r in rows_a], [metric.item_score(r) for r in rows_b], counts, level
        )
        if result is not None:
            out[metric.name] = result
    return out


def _both_scored(
    scores_a: Sequence[float | None], scores_b: Sequence[float | None]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which items both runs score, and each run's scores with 0 where either is None."""
    keep = np.asarray([x is not None and y is not None for x, y in zip(scores_a, scores_b, strict=True)], dtype=bool)
    sa = np.asarray([x if k else 0.0 for x, k in zip(scores_a, keep, strict=True)], dtype=float)
    sb = np.asarray([y if k else 0.0 for y, k in zip(scores_b, keep, strict=True)], dtype=float)
    return keep, sa, sb


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _point(values: np.ndarray) -> float | None:
    return None if math.isnan(values[0]) else float(values[0])
