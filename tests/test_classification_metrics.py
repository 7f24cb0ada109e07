"""Classification metrics: parity with scikit-learn, unparsed handling, AUROC notes, bootstrap CIs and the plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from vlx.metrics.classification import (
    auroc_statistic,
    classification_metrics,
    macro_f1_statistic,
    plot_confusion_matrix,
)

NLI = ["entailment", "neutral", "contradiction"]
MEMES = ["not offensive", "offensive"]
SENTINEL = "<unparsed>"  # what the tests hand scikit-learn for None, independent of the module's integer coding


def _random_case(rng: np.random.Generator, n: int, labels: list[str], unparsed: float = 0.1):
    """Random gold/pred with some unparsed predictions, correct about half the time."""
    gold = [labels[i] for i in rng.integers(0, len(labels), n)]
    pred: list[str | None] = []
    for label in gold:
        draw = rng.random()
        if draw < unparsed:
            pred.append(None)
        elif draw < 0.55:
            pred.append(label)
        else:
            pred.append(labels[rng.integers(0, len(labels))])
    return gold, pred


def _with_sentinel(pred: list[str | None]) -> list[str]:
    return [SENTINEL if p is None else p for p in pred]


def _assert_multiclass_parity(gold, pred, labels, metrics):
    y_pred = _with_sentinel(pred)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(gold, y_pred), abs=1e-15)
    assert metrics["macro_f1"] == pytest.approx(
        f1_score(gold, y_pred, labels=labels, average="macro", zero_division=0), abs=1e-15
    )
    precision, recall, f1, support = precision_recall_fscore_support(gold, y_pred, labels=labels, zero_division=0)
    for i, label in enumerate(labels):
        got = metrics["per_class"][label]
        assert got["precision"] == pytest.approx(precision[i], abs=1e-15)
        assert got["recall"] == pytest.approx(recall[i], abs=1e-15)
        assert got["f1"] == pytest.approx(f1[i], abs=1e-15)
        assert got["support"] == support[i]


def test_hand_made_multiclass_matches_sklearn_and_counts_unparsed_as_wrong():
    gold = ["entailment", "entailment", "neutral", "neutral", "contradiction", "contradiction"]
    pred = ["entailment", None, "neutral", "entailment", None, "contradiction"]
    metrics, notes = classification_metrics(gold, pred, NLI, resamples=50)
    _assert_multiclass_parity(gold, pred, NLI, metrics)
    assert metrics["n"] == 6
    assert metrics["accuracy"] == pytest.approx(3 / 6)
    assert metrics["unparsed_rate"] == pytest.approx(2 / 6)
    # unparsed lowers the gold class's recall, not anyone's precision
    assert metrics["per_class"]["entailment"]["recall"] == pytest.approx(0.5)
    assert metrics["per_class"]["contradiction"]["precision"] == pytest.approx(1.0)
    cm = metrics["confusion_matrix"]
    assert cm["rows"] == NLI
    assert cm["cols"] == [*NLI, "unparsed"]
    assert cm["matrix"] == [[1, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]]
    assert any("2 of 6 predictions" in note for note in notes)
    assert "binary_f1" not in metrics and "auroc" not in metrics


def test_unparsed_column_is_present_and_zero_without_unparsed():
    metrics, notes = classification_metrics(["neutral", "entailment"], ["neutral", "neutral"], NLI, resamples=10)
    assert [row[-1] for row in metrics["confusion_matrix"]["matrix"]] == [0, 0, 0]
    assert metrics["unparsed_rate"] == 0
    assert not any("parsed" in note for note in notes)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_multiclass_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    gold, pred = _random_case(rng, 500, NLI, unparsed=0.15)
    metrics, _ = classification_metrics(gold, pred, NLI, resamples=10)
    _assert_multiclass_parity(gold, pred, NLI, metrics)
    matrix = np.array(metrics["confusion_matrix"]["matrix"])
    assert matrix.sum() == 500
    assert matrix[:, -1].sum() == sum(p is None for p in pred)


def test_class_absent_from_gold_and_pred_scores_zero_like_sklearn():
    gold = ["entailment", "neutral", "entailment"]
    pred = ["entailment", "entailment", None]
    metrics, _ = classification_metrics(gold, pred, NLI, resamples=10)
    _assert_multiclass_parity(gold, pred, NLI, metrics)
    assert metrics["per_class"]["contradiction"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


@pytest.mark.parametrize("seed", [0, 1])
def test_random_binary_matches_sklearn_with_unparsed_as_negative(seed):
    rng = np.random.default_rng(seed)
    gold, pred = _random_case(rng, 400, MEMES, unparsed=0.2)
    # coarse scores so there are many ties
    scores = [{"offensive": float(s), "not offensive": 1 - float(s)} for s in rng.integers(0, 5, 400) / 4]
    metrics, notes = classification_metrics(gold, pred, MEMES, positive="offensive", scores=scores, resamples=20)
    _assert_multiclass_parity(gold, pred, MEMES, metrics)
    as_negative = ["not offensive" if p is None else p for p in pred]
    assert metrics["binary_f1"] == pytest.approx(f1_score(gold, as_negative, pos_label="offensive"), abs=1e-15)
    y_true = [g == "offensive" for g in gold]
    assert metrics["auroc"] == pytest.approx(roc_auc_score(y_true, [s["offensive"] for s in scores]), abs=1e-15)
    assert any("not predicting 'offensive'" in note for note in notes)


def test_binary_f1_without_any_positive_is_zero():
    gold = ["not offensive", "not offensive"]
    metrics, _ = classification_metrics(gold, ["not offensive", None], MEMES, positive="offensive", resamples=10)
    assert metrics["binary_f1"] == 0.0


def test_auroc_with_ties_hand_made():
    gold = ["offensive", "offensive", "not offensive", "not offensive", "offensive"]
    probs = [0.9, 0.5, 0.5, 0.1, 0.5]
    scores = [{"offensive": p} for p in probs]
    metrics, _ = classification_metrics(gold, gold, MEMES, positive="offensive", scores=scores, resamples=10)
    expected = roc_auc_score([g == "offensive" for g in gold], probs)
    assert metrics["auroc"] == pytest.approx(expected, abs=1e-15)
    # pairs (pos, neg): 0.9 beats both; each 0.5 ties 0.5 (half) and beats 0.1
    assert metrics["auroc"] == pytest.approx((2 + 1.5 + 1.5) / 6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_resample_statistics_equal_sklearn(seed):
    """The bootstrap's fast statistics agree with scikit-learn on full data and on a resample with repeats."""
    rng = np.random.default_rng(seed)
    n, k = 300, 3
    g = rng.integers(0, k, n)
    p = np.where(rng.random(n) < 0.1, k, np.where(rng.random(n) < 0.5, g, rng.integers(0, k, n)))
    y = rng.random(n) < 0.4
    values = np.round(rng.random(n), 1)  # ties
    macro = macro_f1_statistic(g * (k + 1) + p, k)
    auroc = auroc_statistic(y, values)
    for idx in (np.arange(n), rng.integers(0, n, n)):
        expected_f1 = f1_score(g[idx], p[idx], labels=list(range(k)), average="macro", zero_division=0)
        assert macro(idx) == pytest.approx(expected_f1, abs=1e-12)
        assert auroc(idx) == pytest.approx(roc_auc_score(y[idx], values[idx]), abs=1e-12)
    assert auroc(np.flatnonzero(y)) is None  # one class only: left out of the interval


def test_auroc_none_with_note_when_scores_missing():
    gold, pred = ["offensive", "not offensive"], ["offensive", "offensive"]
    metrics, notes = classification_metrics(gold, pred, MEMES, positive="offensive", resamples=10)
    assert metrics["auroc"] is None and metrics["auroc_ci"] is None
    assert any("decode=score" in note for note in notes)


def test_auroc_none_with_note_when_scores_partial():
    gold = ["offensive", "not offensive", "offensive"]
    scores = [{"offensive": 0.8}, None, {"not offensive": 0.3}]
    metrics, notes = classification_metrics(gold, gold, MEMES, positive="offensive", scores=scores, resamples=10)
    assert metrics["auroc"] is None
    assert any("only 1 of 3 items" in note for note in notes)


def test_auroc_none_with_note_when_gold_has_one_class():
    gold = ["offensive", "offensive"]
    scores = [{"offensive": 0.8}, {"offensive": 0.2}]
    metrics, notes = classification_metrics(gold, gold, MEMES, positive="offensive", scores=scores, resamples=10)
    assert metrics["auroc"] is None and metrics["auroc_ci"] is None
    assert any("undefined" in note for note in notes)


def _binary_case(seed: int, n: int = 300):
    rng = np.random.default_rng(seed)
    gold, pred = _random_case(rng, n, MEMES)
    signal = 0.5 * np.array([g == "offensive" for g in gold])  # overlapping scores, so AUROC is below 1
    scores = [{"offensive": float(s)} for s in (rng.random(n) + signal) / 1.5]
    return gold, pred, scores


def test_cis_contain_point_estimates_and_are_seeded():
    gold, pred, scores = _binary_case(0)
    kwargs = {"positive": "offensive", "scores": scores, "resamples": 200}
    first, _ = classification_metrics(gold, pred, MEMES, seed=3, **kwargs)
    again, _ = classification_metrics(gold, pred, MEMES, seed=3, **kwargs)
    other, _ = classification_metrics(gold, pred, MEMES, seed=4, **kwargs)
    for key in ("accuracy", "macro_f1", "binary_f1", "auroc"):
        low, high = first[f"{key}_ci"]
        assert low <= first[key] <= high
        assert low < high
        assert again[f"{key}_ci"] == first[f"{key}_ci"]
        assert other[f"{key}_ci"] != first[f"{key}_ci"]


def test_zero_resamples_leave_cis_none():
    gold, pred, scores = _binary_case(1, n=20)
    metrics, _ = classification_metrics(gold, pred, MEMES, positive="offensive", scores=scores, resamples=0)
    assert metrics["accuracy_ci"] is None and metrics["auroc_ci"] is None
    assert metrics["auroc"] is not None


def test_cis_for_15000_items_narrow_with_the_sample():
    """A full split's size (its time: scripts/bench_classification.py): every interval holds its point estimate and
    is several times narrower than the same data's 300-item interval (sqrt(50) ~ 7 in theory)."""
    kwargs = {"positive": "offensive", "resamples": 1000, "seed": 0}
    gold, pred, scores = _binary_case(2, n=15_000)
    metrics, _ = classification_metrics(gold, pred, MEMES, scores=scores, **kwargs)
    small, _ = classification_metrics(gold[:300], pred[:300], MEMES, scores=scores[:300], **kwargs)
    for key in ("accuracy", "macro_f1", "binary_f1", "auroc"):
        low, high = metrics[f"{key}_ci"]
        assert low <= metrics[key] <= high
        assert 3 * (high - low) < small[f"{key}_ci"][1] - small[f"{key}_ci"][0]


@pytest.mark.parametrize(
    ("gold", "pred", "labels", "kwargs", "match"),
    [
        ([], [], NLI, {}, "empty"),
        (["neutral"], [], NLI, {}, "pred has 0 items"),
        (["neutral", "maybe"], ["neutral", "neutral"], NLI, {}, r"'maybe' at index 1"),
        (["neutral"], ["Neutral"], NLI, {}, r"prediction 'Neutral' at index 0"),
        (["neutral"], ["neutral"], NLI, {"positive": "offensive"}, "positive class 'offensive'"),
        (["neutral"], ["neutral"], [*NLI, "neutral"], {}, "duplicates"),
        (["neutral"], ["neutral"], NLI, {"scores": [None, None]}, "scores has 2 items"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_problem(gold, pred, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        classification_metrics(gold, pred, labels, resamples=10, **kwargs)


def test_plot_confusion_matrix_writes_png(tmp_path: Path):
    metrics, _ = classification_metrics(
        ["entailment", "neutral", "contradiction", "neutral"], ["entailment", None, "neutral", "neutral"], NLI
    )
    cm = metrics["confusion_matrix"]
    out = plot_confusion_matrix(cm["matrix"], cm["rows"], cm["cols"], tmp_path / "plots" / "cm.png", title="val")
    assert out == tmp_path / "plots" / "cm.png"
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 5_000


def test_plot_confusion_matrix_rejects_mismatched_shape(tmp_path: Path):
    with pytest.raises(ValueError, match="shape"):
        plot_confusion_matrix([[1, 2], [3, 4]], ["a", "b"], ["a", "b", "unparsed"], tmp_path / "cm.png")


def test_accuracy_ci_is_the_percentile_bootstrap_of_its_level():
    """The interval computed here, independently: resample the items with numpy's generator (seeded as documented),
    take the accuracy of each resample, and the (1 - level) / 2 quantiles."""
    gold, pred, _ = _binary_case(5, n=120)
    correct = np.array([g == p for g, p in zip(gold, pred, strict=True)], dtype=float)
    for level in (0.95, 0.5):
        metrics, _ = classification_metrics(
            gold, pred, MEMES, positive="offensive", resamples=300, level=level, seed=11
        )
        rng = np.random.default_rng(11)
        accuracies = [correct[rng.integers(0, len(correct), size=len(correct))].mean() for _ in range(300)]
        expected = np.quantile(accuracies, [(1 - level) / 2, 1 - (1 - level) / 2])
        assert metrics["accuracy_ci"] == pytest.approx(list(expected), abs=1e-12)
    wide, _ = classification_metrics(gold, pred, MEMES, positive="offensive", resamples=300, level=0.95, seed=11)
    narrow, _ = classification_metrics(gold, pred, MEMES, positive="offensive", resamples=300, level=0.5, seed=11)
    assert wide["accuracy_ci"][0] < narrow["accuracy_ci"][0] < narrow["accuracy_ci"][1] < wide["accuracy_ci"][1]


def test_per_class_and_unparsed_intervals_equal_sklearn_on_the_resamples():
    """Every per-class precision/recall/F1 interval is the percentile interval of scikit-learn's values on the
    same resamples as the other intervals; unparsed_rate gets one too."""
    rng = np.random.default_rng(5)
    labels = ["entailment", "contradiction", "neutral"]
    gold = [labels[i] for i in rng.integers(0, 3, 300)]
    pred = [g if rng.random() < 0.6 else (None if rng.random() < 0.2 else labels[rng.integers(0, 3)]) for g in gold]
    metrics, _ = classification_metrics(gold, pred, labels, resamples=60, seed=3)
    r = np.random.default_rng(3)
    codes = {label: i for i, label in enumerate(labels)}
    g = np.asarray([codes[x] for x in gold])
    p = np.asarray([3 if x is None else codes[x] for x in pred])
    values = []
    for _ in range(60):
        idx = r.integers(0, 300, size=300)
        values.append(precision_recall_fscore_support(g[idx], p[idx], labels=[0, 1, 2], zero_division=0)[:3])
    values = np.asarray(values)  # (resamples, 3 measures, classes)
    for i, label in enumerate(labels):
        for j, name in enumerate(("precision", "recall", "f1")):
            want = list(np.quantile(values[:, j, i], [0.025, 0.975]))
            assert metrics["per_class_ci"][label][name] == pytest.approx(want, abs=1e-12), (label, name)
            low, high = metrics["per_class_ci"][label][name]
            assert low <= metrics["per_class"][label][name] <= high
    low, high = metrics["unparsed_rate_ci"]
    assert low < metrics["unparsed_rate"] < high
