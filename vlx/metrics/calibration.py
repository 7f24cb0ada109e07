"""Calibration of label probabilities: expected calibration error, Brier score and negative log-likelihood.

Runs with label scoring (decode=score) store, per item, a probability for each label. Accuracy asks whether the most
probable label is right; these metrics ask whether the probabilities mean what they say: of the items given 0.8,
are about 80% right (ECE and its reliability diagram), and how far the probabilities are from the gold labels
(Brier score, negative log-likelihood).

Every statistic takes item weights as counts (R, n), row r = how often each item is drawn in bootstrap resample r
(`vlx.metrics.bootstrap.resample_counts`), and returns R values from a few matrix products, so 1000 resamples of
15,000 items cost about as much as a handful of passes over the data. The point value is the same function on
all-ones weights. The Brier score and NLL equal scikit-learn's `brier_score_loss` and `log_loss`; the tests check
them, and check ECE against a plain per-item loop and scikit-learn's `calibration_curve`.

ECE's bins are right-closed, (lo, hi] (`ECE_BIN_RULE`), as in Guo et al. (2017), who define bin m as
((m-1)/M, m/M] and bin so in their code (gpleiss/temperature_scaling), and as scikit-learn's `calibration_curve`
bins. torchmetrics (`binary_/multiclass_calibration_error`, since 0.11.4) and netcal bin [lo, hi) instead: the two
agree unless a confidence sits exactly on an edge (0.6 or 0.8 with 15 bins, as rounded or few-token scores often
do), where the item moves to the next bin up; metrics.json names the rule (`ece_bin_rule`) and a note says so.
torchmetrics' `binary_calibration_error` is also another quantity: the calibration of the positive class's
probability, not of the top label's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

from vlx.errors import ConfigError, DataError
from vlx.metrics.bootstrap import percentile_interval, resample_counts, weighted_mean

logger = logging.getLogger(__name__)

SUM_TOLERANCE = 1e-3  # an item's probabilities may miss 1 by this much (rounded scores in a file)
# ECE's bins: right-closed, as Guo et al. 2017 (paper and code) and scikit-learn's calibration_curve
ECE_BIN_RULE = "(lo, hi]"
# scikit-learn's log_loss clips probabilities to [eps, 1 - eps] with eps the dtype's machine epsilon (float64 here)
NLL_EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no single truth value to compare by
class CalibrationInputs:
    """Label probabilities and gold labels of n items as arrays, checked (`calibration_inputs` builds one).

    Attributes:
        labels: the k label names, in the order of the columns of `probs`.
        probs: float64 (n, k), item i's probability of each label, as stored (not renormalised).
        gold: int64 (n,), index of each item's gold label in `labels`.
        confidence: float64 (n,), the top label's probability (row maximum of `probs`).
        pred: int64 (n,), index of the most probable label; a tie goes to the first of the tied labels in `labels`.
        hit: bool (n,), whether `pred` is the gold label.
    """

    labels: tuple[str, ...]
    probs: np.ndarray
    gold: np.ndarray
    confidence: np.ndarray
    pred: np.ndarray
    hit: np.ndarray

    @property
    def n(self) -> int:
        """Number of items."""
        return len(self.gold)


def calibration_inputs(
    gold: Sequence[str],
    scores: Sequence[Mapping[str, float]],
    labels: Sequence[str],
    *,
    missing_as_zero: bool = False,
) -> CalibrationInputs:
    """Checks the items' label probabilities and turns them into arrays.

    Args:
        gold: gold label of each item.
        scores: per item, label name -> probability (a predictions.jsonl row's `scores`).
        labels: the task's label names; they give the column order.
        missing_as_zero: a label missing from an item's scores counts as probability 0 instead of an error. For
            multiple-choice tasks, whose items are scored over their own options only (fewer letters than
            `labels`); the probabilities present must still sum to 1.

    Returns:
        The arrays; the probabilities are kept as stored, so the confidence is the value in the file.

    Raises:
        ConfigError: fewer than two labels, or duplicate labels.
        DataError: no items, lengths that differ, or an item (named by its index) whose gold label is not a label,
            whose scores are missing, lack a label, name an unknown label, hold a probability that is not a finite
            number >= 0, or do not sum to 1 within 1e-3.
    """
    labels = tuple(labels)
    _check_labels(labels)
    if len(scores) != len(gold):
        raise DataError(f"scores has {len(scores)} items but gold has {len(gold)}")
    if not len(gold):
        raise DataError("no items: calibration needs at least one item with label scores")
    index = {label: j for j, label in enumerate(labels)}
    probs = np.zeros((len(gold), len(labels)), dtype=np.float64)
    gold_index = np.empty(len(gold), dtype=np.int64)
    for i, (label, item) in enumerate(zip(gold, scores, strict=True)):
        if label not in index:
            raise DataError(f"item {i}: gold label {label!r} is not one of the labels {list(labels)}")
        gold_index[i] = index[label]
        for name, value in _item_probabilities(i, item, labels, missing_as_zero).items():
            probs[i, index[name]] = value
    confidence = probs.max(axis=1)
    pred = probs.argmax(axis=1)  # numpy's argmax takes the first maximum: ties go to the earlier label
    arrays = {"probs": probs, "gold": gold_index, "confidence": confidence, "pred": pred, "hit": pred == gold_index}
    for array in arrays.values():
        array.setflags(write=False)  # the dataclass is frozen; so are its arrays
    return CalibrationInputs(labels=labels, **arrays)


def _check_labels(labels: tuple[str, ...]) -> None:
    """Raises ConfigError for a label set that cannot be scored (calibration needs two labels or more)."""
    if len(labels) < 2:
        raise ConfigError(f"calibration needs at least two labels, got {list(labels)}")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"the labels have duplicates: {list(labels)}")


def _item_probabilities(
    i: int, item: Mapping[str, float] | None, labels: tuple[str, ...], missing_as_zero: bool
) -> dict[str, float]:
    """Item i's label -> probability, checked; raises DataError naming the item and what to fix."""
    if not isinstance(item, Mapping):
        raise DataError(
            f"item {i}: no label scores (got {type(item).__name__}); calibration needs every item scored: "
            "run infer with decode=score"
        )
    unknown = [name for name in item if name not in labels]
    if unknown:
        raise DataError(f"item {i}: scores has a probability for {unknown[0]!r}, not one of the labels {list(labels)}")
    missing = [name for name in labels if name not in item]
    if missing and not missing_as_zero:
        raise DataError(
            f"item {i}: scores has no probability for {missing[0]!r}; every item needs one for each of "
            f"{list(labels)} (scores from decode=score on this task have them)"
        )
    values: dict[str, float] = {}
    for name, raw in item.items():
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise DataError(f"item {i}: the probability of {name!r} is {raw!r}, not a number") from None
        if not math.isfinite(value) or value < 0:
            raise DataError(f"item {i}: the probability of {name!r} is {raw!r}; probabilities must be finite and >= 0")
        values[name] = value
    total = math.fsum(values.values())
    if abs(total - 1) > SUM_TOLERANCE:
        raise DataError(
            f"item {i}: the label probabilities sum to {total:.6g}, not 1: store them renormalised over the item's "
            "labels (each divided by their sum), as decode=score writes them"
        )
    return values


def ece(inputs: CalibrationInputs, counts: np.ndarray, bins: int = 15) -> np.ndarray:
    """Expected calibration error of the top-label confidence, per row of item weights.

    The confidence is the top label's probability and an item is a hit when that label (the argmax) is the gold
    one. Bins are `bins` equal-width intervals of [0, 1] with float edges e_j = j / bins: bin j (0-based) holds
    confidences in (e_j, e_{j+1}] (`ECE_BIN_RULE`; torchmetrics' [e_j, e_{j+1}) puts a confidence equal to e_j
    one bin higher); the first bin also holds 0, and the last holds 1.0 (and any value above it from rounding).
    ECE = sum over bins of (n_b / n) * |accuracy_b - mean confidence_b|, with n_b the bin's weight; empty bins add
    nothing.

    Args:
        inputs: the items (`calibration_inputs`).
        counts: (R, n) item weights, e.g. `resample_counts`; np.ones((1, n)) for the point value.
        bins: number of bins, an integer >= 1.

    Returns:
        float64 (R,); NaN for a row of zero total weight.

    Raises:
        ConfigError: `bins` is not an integer >= 1.
        ValueError: `counts` is not (R, n).
    """
    _check_bins(bins)
    weights = _weights(counts, inputs.n)
    # (n_b / n) * |acc_b - conf_b| = |sum over the bin's items of (hit - confidence)| / n: one product for all bins
    gap = _bin_onehot(inputs.confidence, bins) * (inputs.hit - inputs.confidence)[:, None]  # [n, bins]
    per_bin = weights @ gap  # [R, bins]
    total = weights.sum(axis=1)
    return np.divide(np.abs(per_bin).sum(axis=1), total, out=np.full(len(total), np.nan), where=total > 0)


def brier(inputs: CalibrationInputs, counts: np.ndarray, positive: int | None = None) -> np.ndarray:
    """Brier score, per row of item weights, as scikit-learn's `brier_score_loss` computes it by default.

    Two labels: the mean of (p_positive - [gold is positive])^2, in [0, 1]; this is
    `brier_score_loss(gold == positive, probs[:, positive])`. When the probabilities sum to 1 it is the same for
    either label as the positive one. More labels: the multi-class score, the mean over items of
    sum_k (p_k - [gold is k])^2, in [0, 2] and not halved; this is `brier_score_loss(gold, probs, labels=range(k))`
    in scikit-learn >= 1.7, and `positive` is not used.

    Args:
        inputs: the items (`calibration_inputs`).
        counts: (R, n) item weights; np.ones((1, n)) for the point value.
        positive: index of the positive label for two labels; None takes the second label (index 1).

    Returns:
        float64 (R,); NaN for a row of zero total weight.

    Raises:
        ValueError: `positive` is not a label index, or `counts` is not (R, n).
    """
    weights = _weights(counts, inputs.n)
    k = len(inputs.labels)
    if positive is not None and not 0 <= positive < k:
        raise ValueError(f"positive={positive} is not the index of one of the {k} labels")
    onehot = np.eye(k)[inputs.gold]  # [n, k]
    if k == 2:
        column = 1 if positive is None else positive
        per_item = (inputs.probs[:, column] - onehot[:, column]) ** 2
    else:
        per_item = ((inputs.probs - onehot) ** 2).sum(axis=1)
    return weighted_mean(weights, per_item)


def nll(inputs: CalibrationInputs, counts: np.ndarray) -> np.ndarray:
    """Mean negative log-likelihood (natural log) of the gold label, per row of item weights.

    The gold label's probability is clipped to [eps, 1 - eps] with eps the float64 machine epsilon (about
    2.2e-16), as scikit-learn's `log_loss` does, so a probability of 0 costs -log(eps), about 36.04, not infinity;
    the probabilities are not renormalised afterwards (scikit-learn 1.9 does not either). Equals
    `log_loss(gold, probs, labels=range(k))`.

    Args:
        inputs: the items (`calibration_inputs`).
        counts: (R, n) item weights; np.ones((1, n)) for the point value.

    Returns:
        float64 (R,); NaN for a row of zero total weight.

    Raises:
        ValueError: `counts` is not (R, n).
    """
    weights = _weights(counts, inputs.n)
    p_gold = inputs.probs[np.arange(inputs.n), inputs.gold]
    return weighted_mean(weights, -np.log(np.clip(p_gold, NLL_EPS, 1 - NLL_EPS)))


def reliability_table(inputs: CalibrationInputs, bins: int = 15) -> list[dict[str, Any]]:
    """Per bin of `ece`: its edges, item count, accuracy and mean confidence (None for an empty bin).

    Returns:
        One dict per bin, in order: {"low", "high", "count", "accuracy", "confidence"}; `plot_reliability` draws
        them.

    Raises:
        ConfigError: `bins` is not an integer >= 1.
    """
    _check_bins(bins)
    which = _bin_index(inputs.confidence, bins)
    count = np.bincount(which, minlength=bins)
    hits = np.bincount(which, weights=inputs.hit.astype(np.float64), minlength=bins)
    confidence = np.bincount(which, weights=inputs.confidence, minlength=bins)
    edges = _edges(bins)
    return [
        {
            "low": float(edges[j]),
            "high": float(edges[j + 1]),
            "count": int(count[j]),
            "accuracy": float(hits[j] / count[j]) if count[j] else None,
            "confidence": float(confidence[j] / count[j]) if count[j] else None,
        }
        for j in range(bins)
    ]


def calibration_metrics(
    gold: Sequence[str],
    scores: Sequence[Mapping[str, float]],
    labels: Sequence[str],
    *,
    positive: str | None,
    bins: int = 15,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    missing_as_zero: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """ECE, Brier score and NLL of the label probabilities, with bootstrap intervals and the reliability table.

    Args:
        gold: gold label of each item.
        scores: per item, label name -> probability (predictions.jsonl's `scores`).
        labels: the task's label names.
        positive: the positive label of a binary task (its Brier score is that label's); None takes the second
            label. Not used with more than two labels (the multi-class Brier score).
        bins: ECE bins (eval.calibration_bins), an integer >= 1.
        resamples: bootstrap resamples for the intervals; 0 leaves them None.
        level: coverage of the intervals (0.95 for 95%).
        seed: seed of the resamples (`resample_counts`), so intervals reproduce and match the other metrics'.
        missing_as_zero: see `calibration_inputs` (multiple-choice items scored over their own options).

    Returns:
        (metrics, notes). metrics: `ece`, `ece_ci`, `ece_bins` (the number of bins), `ece_bin_rule` ("(lo, hi]":
        which bin an edge belongs to), `brier`, `brier_ci`, `nll`,
        `nll_ci` and `calibration` ({"bins": `reliability_table`}); intervals are [low, high] percentile
        bootstrap intervals or None. notes are plain sentences for the report, saying which definitions are used.

    Raises:
        ConfigError: `bins` is not an integer >= 1, `positive` is not a label, or the labels cannot be scored.
        DataError: an item's gold label or scores cannot be used (see `calibration_inputs`).
    """
    _check_bins(bins)
    if positive is not None and positive not in labels:
        raise ConfigError(f"positive class {positive!r} is not one of the labels {list(labels)}")
    inputs = calibration_inputs(gold, scores, labels, missing_as_zero=missing_as_zero)
    k = len(inputs.labels)
    positive_index = inputs.labels.index(positive) if positive is not None else None
    statistics = {
        "ece": lambda w: ece(inputs, w, bins),
        "brier": lambda w: brier(inputs, w, positive_index),
        "nll": lambda w: nll(inputs, w),
    }
    ones = np.ones((1, inputs.n), dtype=np.int32)
    counts = resample_counts(inputs.n, resamples, seed)  # one set of resamples for all three, as in the other metrics
    metrics: dict[str, Any] = {}
    for name, statistic in statistics.items():
        metrics[name] = float(statistic(ones)[0])
        metrics[f"{name}_ci"] = percentile_interval(statistic(counts), level) if len(counts) else None
        if name == "ece":
            metrics["ece_bins"] = bins
            metrics["ece_bin_rule"] = ECE_BIN_RULE
    metrics["calibration"] = {"bins": reliability_table(inputs, bins)}
    notes = _notes(inputs, bins, positive, k)
    logger.info(
        "calibration over %d items: ECE %.4f (%d bins), Brier %.4f, NLL %.4f",
        inputs.n,
        metrics["ece"],
        bins,
        metrics["brier"],
        metrics["nll"],
    )
    return metrics, notes


def _notes(inputs: CalibrationInputs, bins: int, positive: str | None, k: int) -> list[str]:
    """The report's sentences on how the calibration metrics are defined, and on items worth knowing about."""
    notes = [
        f"ECE: the top label's probability against whether that label (the argmax of the scores, ties to the "
        f"first label in the task's order) is the gold one, in {bins} equal-width bins (j/{bins}, (j+1)/{bins}] "
        "over [0, 1], the first also taking 0, as Guo et al. (2017) and scikit-learn's calibration_curve bin; "
        "torchmetrics and netcal bin [j/n, (j+1)/n) and so differ where a confidence sits exactly on an edge."
    ]
    if k == 2:
        chosen = positive if positive is not None else inputs.labels[1]
        notes.append(
            f"Brier score: the mean squared difference between the probability of {chosen!r} and the gold label "
            "(scikit-learn's brier_score_loss; 0 is best, 1 worst)."
        )
    else:
        unused = f"; the positive class {positive!r} is not used" if positive is not None else ""
        notes.append(
            f"Brier score: multi-class, the mean over items of the squared differences summed over the {k} labels "
            f"(scikit-learn's brier_score_loss with all labels; 0 is best, 2 worst, not halved){unused}."
        )
    notes.append(
        "NLL: the mean negative natural log of the gold label's probability, clipped to [eps, 1 - eps] with "
        "eps = 2.2e-16 as scikit-learn's log_loss does."
    )
    zero = int(np.count_nonzero(inputs.probs[np.arange(inputs.n), inputs.gold] < NLL_EPS))
    if zero:
        notes.append(
            f"{zero} of {inputs.n} items give their gold label a probability below 2.2e-16; each adds "
            f"-log(eps) = {-math.log(NLL_EPS):.2f} to the NLL sum through the clipping."
        )
    return notes


def _check_bins(bins: Any) -> None:
    """Raises ConfigError unless `bins` is an integer >= 1 (a bool is not one)."""
    if isinstance(bins, bool) or not isinstance(bins, Integral) or bins < 1:
        raise ConfigError(
            f"eval.calibration_bins={bins!r}: use an integer of at least 1 (15 is the usual choice for ECE)"
        )


def _weights(counts: np.ndarray, n: int) -> np.ndarray:
    """`counts` as an array, checked to be (R, n)."""
    weights = np.asarray(counts)
    if weights.ndim != 2 or weights.shape[1] != n:
        raise ValueError(f"counts has shape {weights.shape}; expected (resamples, {n})")
    return weights


def _edges(bins: int) -> np.ndarray:
    """The bins + 1 edges j / bins, each the float nearest the fraction (np.linspace can be an ulp off)."""
    return np.arange(bins + 1) / bins


def _bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Bin of each confidence: j with e_j < c <= e_{j+1}; 0 goes to the first bin, anything above 1 to the last."""
    # side="left" gives the first edge >= c, i.e. j + 1 for c in (e_j, e_{j+1}]
    which = np.searchsorted(_edges(bins), confidence, side="left") - 1
    return np.clip(which, 0, bins - 1)


def _bin_onehot(confidence: np.ndarray, bins: int) -> np.ndarray:
    """float64 (n, bins) with a 1 in each item's bin."""
    return np.eye(bins)[_bin_index(confidence, bins)]


def plot_reliability(calibration_bins: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Writes a reliability diagram as a PNG: accuracy per confidence bin against the diagonal, counts below.

    The top panel has a bar of accuracy per non-empty bin, the diagonal of perfect calibration, and the gap between
    each bin's accuracy and its mean confidence shaded red; the bottom panel has the number of items per bin. The
    title gives the ECE, computed from the bins (the same value as `ece`). Uses matplotlib's Agg canvas directly (no
    pyplot), so it needs no display and leaves the global backend alone.

    Args:
        calibration_bins: the bins, as metrics' `calibration["bins"]` (`reliability_table`).
        path: the PNG to write; parent folders are created.
        title: first line of the title (task and split); the ECE line follows.

    Returns:
        The path written.

    Raises:
        ValueError: no bins, or a bin without one of low, high, count, accuracy, confidence.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    low, high, count, accuracy, confidence = _bin_arrays(calibration_bins)
    centre, width, filled = (low + high) / 2, high - low, count > 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    fig = Figure(figsize=(5.5, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    # the diagonal on top of the bars (zorder), so it shows where each bar should end
    top.plot([0, 1], [0, 1], linestyle="--", color="black", label="perfect calibration", zorder=3)
    top.bar(
        centre[filled], accuracy[filled], width=width[filled], color="tab:blue", edgecolor="black", label="accuracy"
    )
    gap_low = np.minimum(accuracy, confidence)[filled]
    gap = np.abs(accuracy - confidence)[filled]
    top.bar(
        centre[filled],
        gap,
        bottom=gap_low,
        width=width[filled],
        color="tab:red",
        alpha=0.45,
        hatch="//",
        edgecolor="darkred",
        label="gap to mean confidence",
        zorder=2,
    )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left")
    total = int(count.sum())
    # the ECE formula on the table: sum_b (n_b / n) * |acc_b - conf_b|, empty bins left out
    value = float((count[filled] * gap).sum() / total) if total else math.nan
    heading = f"ECE {value:.4f} ({len(count)} bins, {total} items)"
    top.set_title(f"{title}\n{heading}" if title else heading)
    bottom.bar(centre, count, width=width, color="grey", edgecolor="black")
    bottom.set_xlabel("confidence (the top label's probability)")
    bottom.set_ylabel("items")
    fig.savefig(path, format="png", dpi=120)
    logger.debug("wrote reliability diagram %s", path)
    return path


def _bin_arrays(calibration_bins: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, ...]:
    """low, high, count, accuracy, confidence as float arrays (NaN for an empty bin's None); ValueError if bad."""
    if not calibration_bins:
        raise ValueError("no calibration bins to plot")
    keys = ("low", "high", "count", "accuracy", "confidence")
    for j, entry in enumerate(calibration_bins):
        absent = [key for key in keys if key not in entry]
        if absent:
            raise ValueError(f"calibration bin {j} has no {absent[0]!r} (it needs {', '.join(keys)})")
    return tuple(
        np.array([math.nan if entry[key] is None else float(entry[key]) for entry in calibration_bins]) for key in keys
    )
