"""Classification metrics for a VLM's parsed labels, in the form papers report them.

e-SNLI-VE reports accuracy; Hateful Memes reports AUROC, accuracy and binary F1. Point estimates come from
scikit-learn (the reference semantics); the bootstrap intervals use vectorised equivalents of the same formulas,
because calling scikit-learn 1000 times over 15,000 items is too slow. The tests check the two agree.

An unparsed prediction (None) is always a wrong answer: it matches no gold label, it is a miss of the gold class in
macro-F1 and per-class recall, it has its own "unparsed" column in the confusion matrix, and for binary F1 it is a
negative prediction (it does not claim the positive class). Where a task's own pipeline guesses for an unparsable
answer (ScienceQA), the eval stage passes the guess as the prediction and marks the item `unparsed`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support, roc_auc_score

from vlx.metrics.bootstrap import bootstrap_ci

logger = logging.getLogger(__name__)

UNPARSED = "unparsed"  # name of the confusion matrix's extra column


def classification_metrics(
    gold: Sequence[str],
    pred: Sequence[str | None],
    labels: Sequence[str],
    *,
    positive: str | None = None,
    scores: Sequence[Mapping[str, float] | None] | None = None,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    unparsed: Sequence[bool] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Accuracy, macro-F1, per-class P/R/F1, confusion matrix and (binary tasks) binary F1 and AUROC, with CIs.

    Unparsed predictions (None) count as wrong everywhere: they never equal the gold label, they are misses of the
    gold class in macro-F1 and per-class recall (scikit-learn sees them as a class outside `labels`), and for binary
    F1 they are negative predictions, i.e. they never claim `positive`.

    Args:
        gold: gold label of each item; every one must be in `labels`.
        pred: parsed label of each item, or None where the output could not be parsed.
        labels: the task's label names, in the order used for per-class results and the confusion matrix.
        positive: the positive class of a binary task ("offensive" for Hateful Memes); adds `binary_f1` and `auroc`.
            With more than two labels these are one-vs-rest for `positive`. None for multi-class metrics only.
        scores: per item, label name -> probability (from label scoring), or None where the item has none. AUROC
            uses `scores[i][positive]` and is computed only when every item has a finite score for `positive`.
        resamples: bootstrap resamples for the confidence intervals (0 leaves the intervals None).
        level: coverage of the intervals (0.95 for 95%).
        seed: seed of the bootstrap resamples, so intervals reproduce.
        unparsed: which answers could not be parsed, where `pred` holds a guess for them (ScienceQA's rule,
            `eval.unparsed=guess`): `unparsed_rate` counts them and the guesses are scored as predictions. None:
            the None predictions.

    Returns:
        (metrics, notes). metrics has `n`, `unparsed_rate`, `unparsed_rate_ci`, `accuracy`, `accuracy_ci`,
        `macro_f1`, `macro_f1_ci`, `per_class` ({label: {precision, recall, f1, support}}), `per_class_ci` ({label:
        {precision, recall, f1: [low, high]}}), `confusion_matrix` ({"rows": labels, "cols":
        labels + ["unparsed"], "matrix": counts, rows gold, columns predicted}); with `positive` also `binary_f1`,
        `binary_f1_ci`, `auroc` and `auroc_ci` (None when AUROC cannot be computed; notes say why). CIs are
        [low, high] percentile bootstrap intervals. notes are plain sentences for the report.

    Raises:
        ValueError: empty input, lengths that differ, duplicate labels, `positive` not a label, a gold label not in
            `labels` or a prediction that is neither a label nor None (the message names the value and its index).
    """
    labels = list(labels)
    _check_inputs(gold, pred, labels, positive, scores)
    n, k = len(gold), len(labels)
    g, p = encode_labels(gold, pred, labels)  # p == k marks an unparsed prediction
    notes: list[str] = []

    missed = p == k if unparsed is None else np.asarray(unparsed, dtype=bool)
    if len(missed) != n:
        raise ValueError(f"unparsed has {len(missed)} entries for {n} items")
    guessed = int(np.count_nonzero(missed & (p != k)))
    if missed.any():
        notes.append(
            f"{int(missed.sum())} of {n} predictions ({missed.mean():.1%}) could not be parsed; "
            + (f"{guessed} got a random option, scored as predictions; " if guessed else "")
            + ("the rest " if guessed else "they ")
            + "count as wrong"
            + (f" (and, for binary F1, as not predicting {positive!r})" if positive is not None else "")
            + "."
        )

    metrics: dict[str, Any] = {"n": n, "unparsed_rate": float(missed.mean())}
    metrics.update(_multiclass_point(g, p, labels))
    cells = g * (k + 1) + p  # one code per (gold, pred) cell, for fast confusion matrices of resamples
    ci = _ci_runner(n, resamples, level, seed)
    metrics["accuracy_ci"] = ci(accuracy_statistic(g == p))
    metrics["macro_f1_ci"] = ci(macro_f1_statistic(cells, k))
    metrics["unparsed_rate_ci"] = ci(accuracy_statistic(missed))
    metrics["per_class_ci"] = _per_class_cis(cells, labels, resamples, level, seed)

    if positive is not None:
        pos = labels.index(positive)
        y_true, y_pred = g == pos, p == pos  # unparsed (k) is never pos: a negative prediction
        metrics["binary_f1"] = float(f1_score(y_true, y_pred, pos_label=True, average="binary", zero_division=0))
        metrics["binary_f1_ci"] = ci(binary_f1_statistic(y_true, y_pred))
        auroc, auroc_ci = _auroc_with_ci(y_true, positive, scores, ci, notes)
        metrics["auroc"], metrics["auroc_ci"] = auroc, auroc_ci

    logger.info(
        "classification metrics over %d items: accuracy %.4f, macro-F1 %.4f, unparsed %d",
        n,
        metrics["accuracy"],
        metrics["macro_f1"],
        int(missed.sum()),
    )
    return metrics, notes


def open_answer_metrics(
    correct: Sequence[bool | float],
    any_answer: Sequence[bool],
    unparsed: Sequence[bool],
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy of open answers with its interval: `n`, `unparsed_rate`, `accuracy` (the mean of the items' scores:
    1/0, or VQA's soft score under e-ViL's rule), `accuracy_ci`, `any_answer_accuracy` (right: any annotator's
    answer) and `any_answer_accuracy_ci`. There is no label set, so no F1 or confusion matrix."""
    hits, anyhits = np.asarray(correct, dtype=float), np.asarray(any_answer, dtype=bool)
    ci = _ci_runner(len(hits), resamples, level, seed)
    return {
        "n": len(hits),
        "unparsed_rate": float(np.mean(unparsed)) if len(hits) else 0.0,
        "accuracy": float(hits.mean()) if len(hits) else None,
        "accuracy_ci": ci(accuracy_statistic(hits)),
        "any_answer_accuracy": float(anyhits.mean()) if len(hits) else None,
        "any_answer_accuracy_ci": ci(accuracy_statistic(anyhits)),
    }


def _check_inputs(
    gold: Sequence[str],
    pred: Sequence[str | None],
    labels: list[str],
    positive: str | None,
    scores: Sequence[Mapping[str, float] | None] | None,
) -> None:
    """Raises ValueError naming the first problem with the inputs' shapes and label sets."""
    if len(gold) == 0:
        raise ValueError("no items: gold is empty")
    if len(pred) != len(gold):
        raise ValueError(f"pred has {len(pred)} items but gold has {len(gold)}")
    if scores is not None and len(scores) != len(gold):
        raise ValueError(f"scores has {len(scores)} items but gold has {len(gold)}")
    if not labels:
        raise ValueError("labels is empty")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels has duplicates: {labels}")
    if positive is not None and positive not in labels:
        raise ValueError(f"positive class {positive!r} is not one of the labels {labels}")


def encode_labels(gold: Sequence[str], pred: Sequence[str | None], labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Labels as integer codes, the form every statistic of this module takes (`g * (k + 1) + p` is a cell of the
    confusion matrix).

    Args:
        gold: gold label of each item.
        pred: predicted label of each item, None where unparsed.
        labels: the task's k labels; a label's code is its index.

    Returns:
        (g, p): int64 arrays, gold in 0..k-1, pred in 0..k with k for unparsed.

    Raises:
        ValueError: a label that is not one of `labels` (named with its index).
    """
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    g = np.empty(len(gold), dtype=np.int64)
    p = np.empty(len(pred), dtype=np.int64)
    for i, label in enumerate(gold):
        if label not in index:
            raise ValueError(f"gold label {label!r} at index {i} is not one of the labels {labels}")
        g[i] = index[label]
    for i, said in enumerate(pred):
        if said is None:
            p[i] = k
        elif said in index:
            p[i] = index[said]
        else:
            raise ValueError(f"prediction {said!r} at index {i} is neither None nor one of the labels {labels}")
    return g, p


def _multiclass_point(g: np.ndarray, p: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class results and the confusion matrix, from scikit-learn.

    scikit-learn gets the integer codes with `labels=range(k)`: the unparsed code k lies outside those labels, so it
    is a miss of the gold class and never a hit, exactly as a sentinel label would be.
    """
    k = len(labels)
    codes = list(range(k))
    precision, recall, f1, support = precision_recall_fscore_support(g, p, labels=codes, zero_division=0)
    matrix = np.bincount(g * (k + 1) + p, minlength=k * (k + 1)).reshape(k, k + 1)
    return {
        "accuracy": float(accuracy_score(g, p)),
        "macro_f1": float(f1_score(g, p, labels=codes, average="macro", zero_division=0)),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": {"rows": list(labels), "cols": [*labels, UNPARSED], "matrix": matrix.tolist()},
    }


Statistic = Callable[[np.ndarray], float | None]  # index array of a resample -> value, None if undefined


def _ci_runner(n: int, resamples: int, level: float, seed: int) -> Callable[[Statistic], list[float] | None]:
    """Binds the bootstrap settings once, so every interval uses the same resamples."""

    def run(statistic: Statistic) -> list[float] | None:
        return bootstrap_ci(n, statistic, resamples=resamples, level=level, seed=seed)

    return run


def accuracy_statistic(correct: np.ndarray) -> Statistic:
    """Accuracy of a resample: the mean of the items' scores (1/0, or VQA's soft score) among the drawn indices.

    Args:
        correct: each item's score, bool or float (n,).

    Returns:
        A `Statistic`: index array of a resample -> its accuracy.
    """
    return lambda idx: float(correct[idx].mean())


def macro_f1_statistic(cells: np.ndarray, k: int) -> Statistic:
    """Macro-F1 of a resample from its confusion matrix (one bincount), as scikit-learn computes it.

    Per class F1 = 2tp / (2tp + fp + fn), 0 where the denominator is 0 (zero_division=0); predictions in the
    unparsed column add to fn of their gold class and to nobody's fp.
    """

    def statistic(idx: np.ndarray) -> float:
        matrix = np.bincount(cells[idx], minlength=k * (k + 1)).reshape(k, k + 1)
        return float(_f1_from_counts(matrix).mean())

    return statistic


def _per_class_cis(
    cells: np.ndarray, labels: list[str], resamples: int, level: float, seed: int
) -> dict[str, dict[str, list[float] | None]]:
    """Per class, the intervals of precision, recall and F1 (scikit-learn's, zero_division=0), from one confusion
    matrix per resample (the same resamples as every other interval)."""
    from vlx.metrics.bootstrap import percentile_interval, resample_counts

    k = len(labels)
    onehot = np.zeros((len(cells), k * (k + 1)), dtype=np.int32)
    onehot[np.arange(len(cells)), cells] = 1
    matrices = (resample_counts(len(cells), resamples, seed) @ onehot).reshape(-1, k, k + 1).astype(float)
    tp = np.diagonal(matrices[:, :, :k], axis1=1, axis2=2)
    predicted, gold = matrices[:, :, :k].sum(axis=1), matrices.sum(axis=2)
    values = {
        "precision": np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0),
        "recall": np.divide(tp, gold, out=np.zeros_like(tp), where=gold > 0),
        "f1": np.divide(2 * tp, predicted + gold, out=np.zeros_like(tp), where=predicted + gold > 0),
    }
    return {
        label: {name: percentile_interval(v[:, i], level) if resamples else None for name, v in values.items()}
        for i, label in enumerate(labels)
    }


def _f1_from_counts(matrix: np.ndarray) -> np.ndarray:
    """Per-class F1 of a k x (k+1) confusion matrix (rows gold, last column unparsed)."""
    k = matrix.shape[0]
    tp = np.diag(matrix[:, :k]).astype(float)
    fp = matrix[:, :k].sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    denom = 2 * tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)


def binary_f1_statistic(y_true: np.ndarray, y_pred: np.ndarray) -> Statistic:
    """Binary F1 of a resample, 0 where it has no positives at all (zero_division=0).

    Args:
        y_true: whether each item's gold label is the positive class (n,).
        y_pred: whether each item's prediction is the positive class (n,); unparsed is not.
    """
    cells = y_true.astype(np.int64) * 2 + y_pred.astype(np.int64)

    def statistic(idx: np.ndarray) -> float:
        _, fp, fn, tp = np.bincount(cells[idx], minlength=4)
        denom = 2 * tp + fp + fn
        return float(2 * tp / denom) if denom else 0.0

    return statistic


def _auroc_with_ci(
    y_true: np.ndarray,
    positive: str,
    scores: Sequence[Mapping[str, float] | None] | None,
    ci: Callable[[Statistic], list[float] | None],
    notes: list[str],
) -> tuple[float | None, list[float] | None]:
    """AUROC of the positive class's probability and its interval, or (None, None) with a note saying why."""
    n = len(y_true)
    if scores is None:
        notes.append(
            "AUROC not computed: the predictions have no label scores; "
            "use label scoring (decode=score) to get label probabilities."
        )
        return None, None
    values = np.array([positive_score(item, positive) for item in scores], dtype=float)
    have = int(np.count_nonzero(~np.isnan(values)))
    if have < n:
        notes.append(
            f"AUROC not computed: only {have} of {n} items have a score for {positive!r}; "
            "use label scoring (decode=score) on every item."
        )
        return None, None
    if y_true.all() or not y_true.any():
        only = positive if y_true.all() else f"not {positive!r}"
        notes.append(f"AUROC not computed: every gold label is {only}, so AUROC is undefined.")
        return None, None
    auroc = float(roc_auc_score(y_true, values))
    return auroc, ci(auroc_statistic(y_true, values))


def positive_score(item: Mapping[str, float] | None, positive: str) -> float:
    """The item's probability for the positive class, NaN where it has none (None, missing key or not finite)."""
    if item is None or positive not in item:
        return math.nan
    value = float(item[positive])
    return value if math.isfinite(value) else math.nan


def auroc_statistic(y_true: np.ndarray, values: np.ndarray) -> Statistic:
    """AUROC of a resample by the Mann-Whitney count, equal to scikit-learn's roc_auc_score with ties.

    The scores are ranked once into tie groups; a resample only needs, per group, its weighted count of positives
    and negatives (two bincounts). AUROC = sum over groups of pos * (negatives in lower groups + neg / 2), divided
    by P * N; a tie counts half, as the trapezoid over scikit-learn's collapsed thresholds does.
    """
    _, group = np.unique(values, return_inverse=True)
    group = group.ravel()
    groups = int(group.max()) + 1
    positive = y_true.astype(float)

    def statistic(idx: np.ndarray) -> float | None:
        drawn = group[idx]
        pos = np.bincount(drawn, weights=positive[idx], minlength=groups)
        total = np.bincount(drawn, minlength=groups)
        neg = total - pos
        n_pos, n_neg = pos.sum(), neg.sum()
        if n_pos == 0 or n_neg == 0:
            return None  # one class in this resample: AUROC undefined, left out of the interval
        below = np.cumsum(neg) - neg  # negatives with a strictly lower score
        return float((pos * (below + neg / 2)).sum() / (n_pos * n_neg))

    return statistic


def plot_confusion_matrix(
    matrix: list[list[int]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """Writes a confusion matrix as a PNG heat map with the count in each cell.

    Uses matplotlib's Agg canvas directly (no pyplot), so it needs no display and leaves the global backend alone.

    Args:
        matrix: counts, one row per gold label and one column per predicted label (e.g. metrics'
            `confusion_matrix["matrix"]`, whose last column is "unparsed").
        row_labels: gold label names, one per row.
        col_labels: predicted label names, one per column.
        path: the PNG to write; parent folders are created.
        title: title above the plot.

    Returns:
        The path written.

    Raises:
        ValueError: the matrix's shape does not match the labels.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.int64).reshape(len(matrix), -1) if matrix else np.zeros((0, 0))
    if counts.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"confusion matrix has shape {counts.shape} but there are {len(row_labels)} row labels "
            f"and {len(col_labels)} column labels"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    # grow with the number of labels so long label names and counts stay readable
    fig = Figure(figsize=(2.0 + 1.1 * len(col_labels), 1.6 + 0.9 * len(row_labels)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues", vmin=0, aspect="auto")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(len(col_labels)), labels=list(col_labels), rotation=30, ha="right")
    ax.set_yticks(range(len(row_labels)), labels=list(row_labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    if title:
        ax.set_title(title)
    _annotate_cells(ax, counts)
    fig.savefig(path, format="png", dpi=120)
    logger.debug("wrote confusion matrix plot %s", path)
    return path


def _annotate_cells(ax: Any, counts: np.ndarray) -> None:
    """Writes each count in its cell, white on dark cells so it stays legible."""
    threshold = counts.max() / 2 if counts.size else 0
    for (row, col), value in np.ndenumerate(counts):
        color = "white" if value > threshold else "black"
        ax.text(col, row, str(int(value)), ha="center", va="center", color=color)
