"""The metric registry: a metric added in one place reaches metrics.json, eval's log, the report, compare and W&B;
every number the eval stage writes is declared; metrics.json's values read back as MetricValue."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from vlx.__main__ import run_stage
from vlx.metrics import registry
from vlx.metrics.registry import ITEMS, METRICS, Metric
from vlx.metrics.values import MetricValue, read_values
from vlx.run.records import Prediction, Verdict

ESNLI = ("entailment", "contradiction", "neutral")
REFS = (Path(__file__).parent / "data" / "esnlive_test_explanations_300.txt").read_text().splitlines()


def words(row) -> float | None:
    """The toy metric: how many words the explanation has (None without one: left out)."""
    return len(row.explanation.split()) if row.explanation else None


@pytest.fixture
def explanation_words():
    """A metric declared by a test, the way a plugin would: one `Metric` with a function over prediction rows."""
    metric = Metric("explanation_words", "Explanation words", higher_is_better=None, interval=ITEMS, item_score=words)
    with registry.registered(metric):
        yield metric
    assert "explanation_words" not in METRICS


def rows_of(n: int, seed: int, extra_words: int, refs: bool = False, scores: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        gold = ESNLI[i % 3]
        pred = gold if rng.random() < 0.6 else ESNLI[(i + 1) % 3]
        expl = " ".join(REFS[i].split()[: 3 + i % 4 + extra_words]) if i % 5 else ""  # every 5th: none
        row = {
            "id": f"x{i:03d}",
            "image": f"{i}.jpg",
            "text": "h",
            "gold": gold,
            "pred": pred,
            "explanation": expl,
            "raw": f"{pred}. {expl}",
        }
        if refs:
            row["refs"] = [REFS[i]]
        if scores:
            p = np.full(3, 0.1)
            p[ESNLI.index(pred)] = 0.8
            row["scores"] = dict(zip(ESNLI, p.tolist(), strict=True))
        rows.append(row)
    return rows


def scored(make_cfg, folder: Path, rows: list[dict], resamples: int = 50) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_stage(
        make_cfg(
            "stage=eval", f"stage.run={folder}", "task=esnli", f"eval.resamples={resamples}", run_dir=folder / "eval"
        )
    )
    return json.loads((folder / "metrics.json").read_text())


def test_a_metric_added_in_one_place_shows_everywhere(explanation_words, make_cfg, tmp_path, caplog):
    from vlx.stages.evaluation import flat_metrics

    rows_a, rows_b = rows_of(30, seed=1, extra_words=0), rows_of(30, seed=2, extra_words=4)[3:]
    with caplog.at_level(logging.INFO, logger="vlx.stages.evaluation"):
        metrics_a = scored(make_cfg, tmp_path / "A", rows_a)
    metrics_b = scored(make_cfg, tmp_path / "B", rows_b)

    # metrics.json: the mean over the rows it scores, with its bootstrap interval
    want_a = [len(r["explanation"].split()) for r in rows_a if r["explanation"]]
    assert metrics_a["explanation_words"] == pytest.approx(np.mean(want_a))
    low, high = metrics_a["explanation_words_ci"]
    assert low < metrics_a["explanation_words"] < high
    assert read_values(metrics_a)["explanation_words"].n == len(want_a)
    # eval's log table and the W&B payload
    assert any(line.strip().startswith("explanation_words") for line in caplog.text.splitlines())
    assert flat_metrics(metrics_a)["explanation_words"] == metrics_a["explanation_words"]

    # compare: the paired difference on the shared items both explain
    run_stage(
        make_cfg(
            "stage=compare",
            f"stage.runs=[{tmp_path / 'A'},{tmp_path / 'B'}]",
            "eval.resamples=50",
            run_dir=tmp_path / "cmp",
        )
    )
    result = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    by_a = {r["id"]: Prediction.from_json(r) for r in rows_a}
    by_b = {r["id"]: Prediction.from_json(r) for r in rows_b}
    both = [i for i in sorted(by_b) if by_a[i].explanation and by_b[i].explanation]
    got = result["metrics"]["explanation_words"]
    assert got["n"] == len(both)
    assert got["difference"] == pytest.approx(np.mean([words(by_b[i]) - words(by_a[i]) for i in both]))
    assert got["difference"] > 3 and got["ci"][0] > 0 and got["p_value"] < 0.05  # B's are 4 words longer
    assert "| explanation_words |" in (tmp_path / "cmp" / "comparison.md").read_text()

    # report: a column with each run's value
    run_stage(make_cfg("stage=report", f"stage.runs=[{tmp_path / 'A'},{tmp_path / 'B'}]", run_dir=tmp_path / "rep"))
    table = (tmp_path / "rep" / "results.md").read_text().splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    col = header.index("Explanation words")
    assert [line.strip("|").split("|")[col].strip() for line in table[2:4]] == [
        f"{metrics_a['explanation_words']:.4f}",
        f"{metrics_b['explanation_words']:.4f}",
    ]


def test_a_removed_metric_is_gone(make_cfg, tmp_path):
    with registry.registered(Metric("explanation_words", "Explanation words", item_score=words)):
        assert "explanation_words" in scored(make_cfg, tmp_path / "with", rows_of(9, 0, 0), resamples=0)
    assert "explanation_words" not in scored(make_cfg, tmp_path / "without", rows_of(9, 0, 0), resamples=0)
    with pytest.raises(ValueError, match="already declared"):
        registry.register(Metric("accuracy", "Accuracy"))


def test_every_number_eval_writes_is_declared(make_cfg, tmp_path):
    """Labels, label scores and reference explanations: classification, calibration and explanation metrics; the
    judge's and the human raters' numbers from their own functions. Each scalar is a declared metric (or count)."""
    from vlx.metrics.human import human_metrics
    from vlx.metrics.judge_scores import judge_scores

    metrics = scored(make_cfg, tmp_path / "run", rows_of(12, 0, 0, refs=True, scores=True), resamples=10)
    verdicts = [Verdict("a", score=1.0, correct=True), Verdict("b", score=0.0, correct=False)]
    metrics.update(judge_scores(verdicts, resamples=10))
    metrics.update(human_metrics({("r1", "x000"): "yes", ("r2", "x000"): "no"}, {"x000": True}, resamples=10))
    numbers = {k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert {"accuracy", "ece", "bleu4", "all_bertscore_f1", "judge_score", "human_score"} <= numbers
    assert numbers - set(METRICS) == set()
    # every interval belongs to a declared metric that has one
    for key in (k for k in metrics if k.endswith("_ci") and k not in ("per_class_ci",)):
        assert METRICS[key.removesuffix("_ci")].interval != registry.NO_INTERVAL, key


def test_metric_values_read_old_files_and_write_the_same_keys():
    """metrics.json's `<name>` and `<name>_ci` as written before the registry: read back, written the same."""
    old = {
        "n": 3,
        "accuracy": 0.5,
        "accuracy_ci": [0.25, 0.75],
        "ece": 0.1,
        "ece_ci": None,
        "protocol": "coco",
        "intervals": {"level": 0.9},
        "some_newer_key": 1.0,
    }
    values = read_values(old)
    assert list(values) == ["n", "accuracy", "ece"]  # table order, undeclared keys left to their readers
    assert values["accuracy"] == MetricValue("accuracy", 0.5, (0.25, 0.75), 3, 0.9, ITEMS)
    assert values["accuracy"].to_json() == {"accuracy": 0.5, "accuracy_ci": [0.25, 0.75]}
    assert values["ece"].to_json() == {"ece": 0.1, "ece_ci": None} and values["n"].to_json() == {"n": 3}
    assert values["accuracy"].text() == "0.5000  [0.2500, 0.7500]"


def test_directions_and_scales_are_declared():
    assert registry.lower_is_better({"accuracy": 1, "nll": 1, "ece": 1}) == ["ece", "nll"]
    assert METRICS["bleu4"].scale_for("evil") == 100 and METRICS["bleu4"].scale_for("coco_no_java") == 1
    assert METRICS["accuracy"].scale_for("evil") == 1
    assert registry.protocol_of({}) == "coco" == registry.DEFAULT_PROTOCOL
    report = [m.name for m in registry.shown(registry.REPORT)]
    assert report[:3] == ["n", "accuracy", "macro_f1"] and "nll" not in report
