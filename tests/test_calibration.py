"""Calibration metrics: ECE against a per-item loop, Brier and NLL against scikit-learn, resample parity, CIs,
bad inputs and the reliability diagram."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import sklearn
from PIL import Image
from sklearn.metrics import brier_score_loss, log_loss

from vlx.errors import ConfigError, DataError
from vlx.metrics.bootstrap import percentile_interval, resample_counts
from vlx.metrics.calibration import (
    _bin_index,
    brier,
    calibration_inputs,
    calibration_metrics,
    ece,
    nll,
    plot_reliability,
    reliability_table,
)

MEMES = ["not offensive", "offensive"]
NLI = ["entailment", "neutral", "contradiction"]  # not alphabetical: the tests hand scikit-learn indices
# probabilities whose top value is exactly an edge of both 10 and 15 bins (0.6 = 9/15, 0.8 = 12/15), 1.0, and ties
EDGE_SCORES = {
    2: [[0.6, 0.4], [0.2, 0.8], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.7, 0.3]],
    3: [[0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.2, 0.6, 0.2], [0.0, 0.0, 1.0]],
}


def _random_case(rng: np.random.Generator, n: int, labels: list[str]) -> tuple[list[str], list[dict[str, float]]]:
    """Random gold labels and Dirichlet label probabilities, the gold label favoured, plus the edge-case rows."""
    k = len(labels)
    gold = rng.integers(0, k, n)
    alpha = np.ones((n, k)) * 0.7
    alpha[np.arange(n), gold] += 1.5  # right more often than chance, with a spread of confidences
    draws = rng.gamma(alpha)  # Dirichlet rows: independent gammas, normalised
    probs = [list(row) for row in draws / draws.sum(axis=1, keepdims=True)] + EDGE_SCORES[k]
    gold = list(gold) + list(rng.integers(0, k, len(EDGE_SCORES[k])))
    return [labels[g] for g in gold], [dict(zip(labels, map(float, row), strict=True)) for row in probs]


def _matrix(scores: list[dict[str, float]], labels: list[str]) -> np.ndarray:
    return np.array([[item[label] for label in labels] for item in scores])


def _loop_ece(gold: list[str], scores: list[dict[str, float]], labels: list[str], bins: int) -> float:
    """ECE the plain way: each item's bin by comparing with the edges, then per-bin accuracy and confidence."""
    count, hits, confs = [0] * bins, [0.0] * bins, [0.0] * bins
    for label, item in zip(gold, scores, strict=True):
        confidence = max(item[name] for name in labels)
        pred = next(name for name in labels if item[name] == confidence)  # first label of the tied ones
        for j in range(bins):
            if j / bins < confidence <= (j + 1) / bins or (j == 0 and confidence == 0):
                break
        else:
            j = bins - 1
        count[j] += 1
        hits[j] += pred == label
        confs[j] += confidence
    n = len(gold)
    return sum(c / n * abs(h / c - s / c) for c, h, s in zip(count, hits, confs, strict=True) if c)


def _point(statistic, inputs, *args) -> float:
    (value,) = statistic(inputs, np.ones((1, inputs.n)), *args)
    return float(value)


@pytest.mark.parametrize("labels", [MEMES, NLI], ids=["k2", "k3"])
@pytest.mark.parametrize("bins", [10, 15])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_matches_per_item_loop(labels: list[str], bins: int, seed: int):
    gold, scores = _random_case(np.random.default_rng(seed), 300, labels)
    inputs = calibration_inputs(gold, scores, labels)
    assert _point(ece, inputs, bins) == pytest.approx(_loop_ece(gold, scores, labels, bins), abs=1e-12)


def test_bin_edges_and_empty_bins():
    # (j/10, (j+1)/10]: 0.5 in bin 4, 0.6 and 0.7 at their bins' upper edges, 1.0 in the last bin
    gold = ["offensive"] * 6
    tops = [0.5, 0.6, 0.7, 0.7000001, 0.95, 1.0]
    scores = [{"offensive": t, "not offensive": 1 - t} for t in tops]
    table = reliability_table(calibration_inputs(gold, scores, MEMES), 10)
    assert [row["count"] for row in table] == [0, 0, 0, 0, 1, 1, 1, 1, 0, 2]
    assert table[4]["accuracy"] == 0.0  # a 0.5/0.5 tie goes to "not offensive", the first label
    assert table[9] == {"low": 0.9, "high": 1.0, "count": 2, "accuracy": 1.0, "confidence": pytest.approx(0.975)}
    assert table[0]["accuracy"] is None and table[0]["confidence"] is None  # empty bin
    assert table[3]["low"] == 0.3 and table[3]["high"] == 0.4
    # confidence 0 cannot come from probabilities that sum to 1, but the convention puts it in the first bin
    assert _bin_index(np.array([0.0, 1e-9, 1.0, 1.0005]), 15).tolist() == [0, 0, 14, 14]


def _edge_case(rng: np.random.Generator, n: int, labels: list[str]) -> tuple[list[str], list[dict[str, float]]]:
    """Items whose top probability is mostly exactly an edge of 15 bins (8/15 ... 15/15, as j / 15), right about
    as often as that probability says, and some in between."""
    k = len(labels)
    edges = [j / 15 for j in range(8, 16)]
    gold, scores = [], []
    for _ in range(n):
        top = edges[rng.integers(len(edges))] if rng.random() < 0.7 else float(rng.uniform(0.55, 0.99))
        g = int(rng.integers(k))
        pred = g if rng.random() < top else (g + 1) % k
        probs = [(1 - top) / (k - 1)] * k
        probs[pred] = top
        gold.append(labels[g])
        scores.append(dict(zip(labels, probs, strict=True)))
    return gold, scores


def _ece_by_rule(gold: list[str], scores: list[dict[str, float]], labels: list[str], bin_of, cast=float) -> float:
    """ECE with each item's top confidence, as `cast` rounds it, binned by `bin_of(confidence)`; ties go to the
    first label."""
    groups: dict[int, list[tuple[float, bool]]] = {}
    for label, item in zip(gold, scores, strict=True):
        top = max(item[name] for name in labels)
        pred = next(name for name in labels if item[name] == top)
        confidence = cast(top)
        groups.setdefault(bin_of(confidence), []).append((confidence, pred == label))
    n = len(gold)
    return sum(len(g) / n * abs(np.mean([h for _, h in g]) - np.mean([c for c, _ in g])) for g in groups.values())


@pytest.mark.parametrize("labels", [MEMES, NLI], ids=["k2", "k3"])
def test_ece_bins_on_edges_as_guo_et_al_and_sklearn(labels: list[str]):
    """Confidences exactly on bin edges go to the bin below, (lo, hi]: Guo et al.'s rule (their bin m is
    ((m-1)/M, m/M]) and scikit-learn's `calibration_curve`, whose per-bin accuracy and confidence equal the
    reliability table's. The [lo, hi) rule (torchmetrics, netcal) gives another ECE on the same items."""
    from sklearn.calibration import calibration_curve

    gold, scores = _edge_case(np.random.default_rng(4), 400, labels)
    inputs = calibration_inputs(gold, scores, labels)
    right = _ece_by_rule(gold, scores, labels, lambda c: max(math.ceil(c * 15 - 1e-9) - 1, 0))
    assert _point(ece, inputs, 15) == pytest.approx(right, abs=1e-12)
    accuracy, confidence = calibration_curve(inputs.hit, inputs.confidence, n_bins=15)
    table = [row for row in reliability_table(inputs, 15) if row["count"]]
    assert [row["accuracy"] for row in table] == pytest.approx(accuracy, abs=1e-12)
    assert [row["confidence"] for row in table] == pytest.approx(confidence, abs=1e-12)
    left = _ece_by_rule(gold, scores, labels, lambda c: math.floor(c * 15 + 1e-9))  # 1.0 in a bin of its own
    assert abs(left - right) > 1e-3


@pytest.mark.parametrize("labels", [MEMES, NLI], ids=["k2", "k3"])
def test_ece_against_torchmetrics(labels: list[str]):
    """torchmetrics' multiclass_calibration_error (the top label's calibration; its binary_calibration_error is the
    positive class's) bins [lo, hi), 1.0 in a bin of its own, on confidences and torch.linspace edges in float32
    (it casts them): equal to that rule, and to vlx's ECE wherever no confidence sits on an edge. On edges the two
    differ, as metrics.json's ece_bin_rule and note say."""
    torch = pytest.importorskip("torch")
    functional = pytest.importorskip("torchmetrics.functional.classification", reason="torchmetrics: the dev extra")
    edges = torch.linspace(0, 1, 16, dtype=torch.float32).tolist()

    def float32(value: float) -> float:
        return float(np.float32(value))

    def theirs(gold: list[str], scores: list[dict[str, float]]) -> float:
        probs = torch.tensor(_matrix(scores, labels), dtype=torch.float64)
        target = torch.tensor([labels.index(g) for g in gold])
        return float(functional.multiclass_calibration_error(probs, target, num_classes=len(labels), n_bins=15))

    gold, scores = _edge_case(np.random.default_rng(5), 400, labels)
    left = _ece_by_rule(gold, scores, labels, lambda c: sum(e <= c for e in edges) - 1, cast=float32)
    assert theirs(gold, scores) == pytest.approx(left, abs=1e-6)  # float32 sums
    assert abs(theirs(gold, scores) - _point(ece, calibration_inputs(gold, scores, labels), 15)) > 1e-4
    gold, scores = _random_case(np.random.default_rng(6), 400, labels)  # Dirichlet draws: none on an edge
    gold, scores = gold[: -len(EDGE_SCORES[len(labels)])], scores[: -len(EDGE_SCORES[len(labels)])]
    # torchmetrics rounds the confidences to float32 (its update casts them): equal to about 1e-7
    assert theirs(gold, scores) == pytest.approx(_point(ece, calibration_inputs(gold, scores, labels), 15), abs=1e-6)


def test_ece_exact_values():
    # 10 items at 0.8 with 8 right and 10 at 0.6 with 6 right: perfectly calibrated, ECE 0
    gold = ["offensive"] * 8 + ["not offensive"] * 2 + ["offensive"] * 6 + ["not offensive"] * 4
    scores = [{"offensive": 0.8, "not offensive": 0.2}] * 10 + [{"offensive": 0.6, "not offensive": 0.4}] * 10
    inputs = calibration_inputs(gold, scores, MEMES)
    assert _point(ece, inputs, 10) == pytest.approx(0.0, abs=1e-12)
    # the same confidences with every answer wrong: ECE is the mean confidence
    wrong = calibration_inputs(["not offensive"] * 20, scores, MEMES)
    assert _point(ece, wrong, 10) == pytest.approx(0.7, abs=1e-12)
    # one bin holds everything: ECE = |accuracy - mean confidence|
    assert _point(ece, inputs, 1) == pytest.approx(abs(14 / 20 - 0.7), abs=1e-12)


def test_calibrated_and_overconfident_constructions():
    rng = np.random.default_rng(3)
    n = 20_000
    confidence = rng.uniform(0.5, 1.0, n)
    right = rng.random(n) < confidence  # right with exactly the stated probability
    gold = ["offensive" if r else "not offensive" for r in right]
    scores = [{"offensive": c, "not offensive": 1 - c} for c in confidence]
    calibrated = calibration_inputs(gold, scores, MEMES)
    assert _point(ece, calibrated, 15) < 0.02
    # the same confidences pushed towards 1 with accuracy unchanged (about 0.75): ECE is large
    sharp = 1 - (1 - confidence) / 10
    over = calibration_inputs(gold, [{"offensive": c, "not offensive": 1 - c} for c in sharp], MEMES)
    assert _point(ece, over, 15) > 0.15
    assert _point(ece, over, 15) == pytest.approx(float(np.mean(sharp) - np.mean(right)), abs=0.02)


@pytest.mark.parametrize("positive", [None, 0, 1])
def test_brier_binary_matches_sklearn(positive: int | None):
    gold, scores = _random_case(np.random.default_rng(4), 200, MEMES)
    inputs = calibration_inputs(gold, scores, MEMES)
    pos = 1 if positive is None else positive
    y_true = np.array([g == MEMES[pos] for g in gold])
    expected = brier_score_loss(y_true, _matrix(scores, MEMES)[:, pos])
    assert _point(brier, inputs, positive) == pytest.approx(expected, abs=1e-12)


def test_brier_multiclass_formula_and_sklearn():
    gold, scores = _random_case(np.random.default_rng(5), 200, NLI)
    inputs = calibration_inputs(gold, scores, NLI)
    formula = np.mean(
        [sum((item[label] - (label == g)) ** 2 for label in NLI) for g, item in zip(gold, scores, strict=True)]
    )
    assert _point(brier, inputs) == pytest.approx(formula, abs=1e-12)
    assert _point(brier, inputs, 2) == _point(brier, inputs)  # positive is not used with three labels
    if tuple(int(x) for x in sklearn.__version__.split(".")[:2]) >= (1, 7):  # multi-class brier_score_loss
        gold_index = [NLI.index(g) for g in gold]
        expected = brier_score_loss(gold_index, _matrix(scores, NLI), labels=[0, 1, 2])
        assert _point(brier, inputs) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("labels", [MEMES, NLI], ids=["k2", "k3"])
def test_nll_matches_sklearn_log_loss_with_clipping(labels: list[str]):
    gold, scores = _random_case(np.random.default_rng(6), 200, labels)
    # the gold label given probability 0 (clipped to eps) and 1 (clipped to 1 - eps)
    zero = {label: 0.0 for label in labels} | {labels[1]: 1.0}
    gold += [labels[0], labels[1]]
    scores += [zero, zero]
    inputs = calibration_inputs(gold, scores, labels)
    expected = log_loss([labels.index(g) for g in gold], _matrix(scores, labels), labels=list(range(len(labels))))
    assert _point(nll, inputs) == pytest.approx(expected, abs=1e-10)
    assert _point(nll, inputs) > -math.log(np.finfo(float).eps) / len(gold)  # the 0 counts, finitely


@pytest.mark.parametrize("labels", [MEMES, NLI], ids=["k2", "k3"])
def test_resampled_values_equal_point_values_on_the_resample(labels: list[str]):
    gold, scores = _random_case(np.random.default_rng(7), 120, labels)
    inputs = calibration_inputs(gold, scores, labels)
    counts = resample_counts(inputs.n, 20, seed=11)
    vectorised = {"ece": ece(inputs, counts, 10), "brier": brier(inputs, counts, 0), "nll": nll(inputs, counts)}
    for r, row in enumerate(counts):
        idx = np.repeat(np.arange(inputs.n), row)
        drawn = calibration_inputs([gold[i] for i in idx], [scores[i] for i in idx], labels)
        assert vectorised["ece"][r] == pytest.approx(_point(ece, drawn, 10), abs=1e-12)
        assert vectorised["brier"][r] == pytest.approx(_point(brier, drawn, 0), abs=1e-12)
        assert vectorised["nll"][r] == pytest.approx(_point(nll, drawn), abs=1e-12)
    # a row of zero weight has no value
    assert np.isnan(ece(inputs, np.zeros((1, inputs.n)), 10)).all()


def test_intervals_reproduce_and_contain_the_point_value():
    gold, scores = _random_case(np.random.default_rng(8), 500, NLI)
    first, _ = calibration_metrics(gold, scores, NLI, positive=None, resamples=300, seed=5)
    again, _ = calibration_metrics(gold, scores, NLI, positive=None, resamples=300, seed=5)
    other, _ = calibration_metrics(gold, scores, NLI, positive=None, resamples=300, seed=6)
    for name in ("ece", "brier", "nll"):
        low, high = first[f"{name}_ci"]
        assert low <= first[name] <= high
        assert high - low > 0
        assert again[f"{name}_ci"] == first[f"{name}_ci"]
        assert other[f"{name}_ci"] != first[f"{name}_ci"]
    # the intervals come from the project's shared resamples
    inputs = calibration_inputs(gold, scores, NLI)
    assert first["ece_ci"] == percentile_interval(ece(inputs, resample_counts(inputs.n, 300, 5), 15))
    none, _ = calibration_metrics(gold, scores, NLI, positive=None, resamples=0)
    assert none["ece_ci"] is None and none["brier_ci"] is None and none["nll_ci"] is None
    assert none["ece"] == first["ece"]


def test_metrics_dict_and_notes():
    gold, scores = _random_case(np.random.default_rng(9), 100, MEMES)
    metrics, notes = calibration_metrics(gold, scores, MEMES, positive="offensive", bins=10, resamples=50)
    assert list(metrics) == [
        "ece",
        "ece_ci",
        "ece_bins",
        "ece_bin_rule",
        "brier",
        "brier_ci",
        "nll",
        "nll_ci",
        "calibration",
    ]
    assert metrics["ece_bins"] == 10 and metrics["ece_bin_rule"] == "(lo, hi]"
    table = metrics["calibration"]["bins"]
    assert len(table) == 10 and sum(row["count"] for row in table) == len(gold)
    inputs = calibration_inputs(gold, scores, MEMES)
    assert metrics["ece"] == pytest.approx(_loop_ece(gold, scores, MEMES, 10), abs=1e-12)
    assert metrics["brier"] == pytest.approx(_point(brier, inputs, 1), abs=1e-15)
    assert any("'offensive'" in note and "brier_score_loss" in note for note in notes)
    assert any("argmax" in note and "(j/10, (j+1)/10]" in note and "torchmetrics" in note for note in notes)
    assert any("below 2.2e-16" in note for note in notes)  # EDGE_SCORES has a 0 for some gold labels
    _, multi = calibration_metrics(
        *_random_case(np.random.default_rng(9), 50, NLI), NLI, positive="neutral", resamples=0
    )
    assert any("multi-class" in note and "'neutral' is not used" in note for note in multi)


def test_missing_as_zero_scores_own_options():
    # a multiple-choice item with two of three options: the third counts as 0
    letters = ["A", "B", "C"]
    inputs = calibration_inputs(
        ["A", "C"], [{"A": 0.9, "B": 0.1}, {"A": 0.2, "B": 0.3, "C": 0.5}], letters, missing_as_zero=True
    )
    assert inputs.probs.tolist() == [[0.9, 0.1, 0.0], [0.2, 0.3, 0.5]]
    assert inputs.hit.tolist() == [True, True]
    with pytest.raises(DataError, match=r"item 0: scores has no probability for 'C'"):
        calibration_inputs(["A"], [{"A": 0.9, "B": 0.1}], letters)


@pytest.mark.parametrize(
    ("bad", "gold", "message"),
    [
        ({"entailment": 0.5, "neutral": 0.5}, "neutral", r"item 2: scores has no probability for 'contradiction'"),
        ({"entailment": 1.2, "neutral": -0.2, "contradiction": 0.0}, "neutral", r"item 2: .*'neutral' is -0\.2"),
        ({"entailment": math.nan, "neutral": 0.5, "contradiction": 0.5}, "neutral", r"item 2: .*finite"),
        ({"entailment": math.inf, "neutral": 0.5, "contradiction": 0.5}, "neutral", r"item 2: .*finite"),
        ({"entailment": "x", "neutral": 0.5, "contradiction": 0.5}, "neutral", r"item 2: .*'x', not a number"),
        ({"entailment": 0.5, "neutral": 0.3, "contradiction": 0.1}, "neutral", r"item 2: .*sum to 0\.9, not 1.*renorm"),
        ({"entailment": 0.5, "neutral": 0.5, "contradiction": 0.0, "yes": 0.0}, "neutral", r"item 2: .*'yes'"),
        (None, "neutral", r"item 2: no label scores.*decode=score"),
        ({"entailment": 0.5, "neutral": 0.5, "contradiction": 0.0}, "maybe", r"item 2: gold label 'maybe'"),
    ],
)
def test_bad_inputs_name_the_item(bad, gold: str, message: str):
    good = {"entailment": 0.2, "neutral": 0.3, "contradiction": 0.5}
    with pytest.raises(DataError, match=message):
        calibration_inputs(["neutral", "entailment", gold], [good, good, bad], NLI)
    # within 1e-3 of 1 is accepted (rounded scores), and kept as stored
    kept = calibration_inputs(["neutral"], [{"entailment": 0.2, "neutral": 0.3, "contradiction": 0.5004}], NLI)
    assert kept.probs[0, 2] == 0.5004


@pytest.mark.parametrize("bins", [0, -3, 2.5, True, "15", None])
def test_bad_bins_are_config_errors(bins):
    gold, scores = _random_case(np.random.default_rng(10), 10, MEMES)
    with pytest.raises(ConfigError, match=rf"eval\.calibration_bins={bins!r}: use an integer"):
        calibration_metrics(gold, scores, MEMES, positive=None, bins=bins, resamples=0)


def test_other_config_and_shape_errors():
    gold, scores = _random_case(np.random.default_rng(10), 10, MEMES)
    with pytest.raises(ConfigError, match="'funny' is not one of the labels"):
        calibration_metrics(gold, scores, MEMES, positive="funny", resamples=0)
    with pytest.raises(ConfigError, match="at least two labels"):
        calibration_inputs(["a"], [{"a": 1.0}], ["a"])
    with pytest.raises(DataError, match=f"scores has {len(gold) - 1} items but gold has {len(gold)}"):
        calibration_inputs(gold, scores[:-1], MEMES)
    with pytest.raises(DataError, match="no items"):
        calibration_inputs([], [], MEMES)
    inputs = calibration_inputs(gold, scores, MEMES)
    with pytest.raises(ValueError, match=rf"counts has shape \({inputs.n},\)"):
        nll(inputs, np.ones(inputs.n))


def test_plot_reliability_writes_png(tmp_path: Path):
    gold, scores = _random_case(np.random.default_rng(12), 400, NLI)
    metrics, _ = calibration_metrics(gold, scores, NLI, positive=None, resamples=0)
    out = plot_reliability(metrics["calibration"]["bins"], tmp_path / "plots" / "reliability.png", title="val")
    assert out == tmp_path / "plots" / "reliability.png"
    assert out.stat().st_size > 10_000
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size[0] > 400 and image.size[1] > 400
        image.verify()
    with pytest.raises(ValueError, match="no calibration bins"):
        plot_reliability([], tmp_path / "empty.png")
    with pytest.raises(ValueError, match="bin 0 has no 'accuracy'"):
        plot_reliability([{"low": 0, "high": 1, "count": 3, "confidence": 0.5}], tmp_path / "bad.png")
