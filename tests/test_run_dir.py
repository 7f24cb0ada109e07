"""A run directory and what it holds: `RunDir` names every file, the typed records read and write the files as vlx
has always written them, and each stage's results (eval's metrics.json, each judge's judge.json) are combined by the
readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_judge import finished_run, judge_cfg

from vlx.__main__ import run_stage
from vlx.errors import ConfigError, DataError
from vlx.run.directory import RunDir
from vlx.run.records import Prediction, RunInfo, Verdict
from vlx.stages.infer import prediction
from vlx.tasks import build_task

# predictions.jsonl lines as stage=infer wrote them before the records existed (main at cf31308), byte for byte: a
# generated answer, a multiple-choice item with option texts, an open question, a label-scored item
OLD_LINES = [
    '{"id": "1", "image": "img/1.png", "text": "A dog runs.", "gold": "entailment", "pred": "entailment", '
    '"explanation": "The dog is running.", "raw": "Entailment. The dog is running.", "refs": ["a dog runs"], '
    '"demos": ["7", "9"]}',
    '{"id": "q2", "image": "img/2.jpg", "text": "What is it?", "gold": "C", "pred": null, "explanation": "", '
    '"raw": "I cannot tell", "refs": [], "demos": [], "choices": {"A": "cat", "B": "dog", "C": "clothing", '
    '"D": "clothing"}}',
    '{"id": "v3", "image": "img/3.jpg", "text": "How many?", "gold": "2", "pred": "two", "explanation": "två é", '
    '"raw": "two because", "refs": ["there are two"], "demos": [], "answers": ["2", "two", "3"]}',
    '{"id": "m4", "image": "img/4.png", "text": "meme text", "gold": "offensive", "pred": "offensive", '
    '"explanation": null, "raw": "Offensive", "refs": [], "demos": [], "scores": {"offensive": 0.75, '
    '"not offensive": 0.25}}',
]


def test_run_dir_names_every_file(tmp_path):
    run = RunDir(tmp_path)
    assert run.predictions_file == tmp_path / "predictions.jsonl" and run.predictions_csv.name == "predictions.csv"
    assert run.summary_file == tmp_path / "summary.json" and run.metrics_file == tmp_path / "metrics.json"
    assert run.manifest == tmp_path / "manifest.json" and run.ratings_file == tmp_path / "ratings.jsonl"
    assert run.error_file == tmp_path / "error.json" and run.explanation_items.name == "explanation_items.jsonl"
    assert run.plots == (tmp_path / "confusion_matrix.png", tmp_path / "reliability.png")
    assert run.lock_file() == tmp_path / ".vlx.lock" and run.lock_file(2) == tmp_path / ".vlx.rank2.lock"
    assert run.shard_file(1) == tmp_path / "predictions.rank1.jsonl"
    assert run.overrides_file == tmp_path / ".hydra" / "overrides.yaml"
    assert run.verdicts_file("j") == tmp_path / "judgements" / "j" / "verdicts.jsonl"
    assert run.judge_results_file("j") == tmp_path / "judgements" / "j" / "judge.json"
    assert run.adapter_dir == tmp_path / "adapter" and run.infer_dir == tmp_path / "infer"
    assert not any(tmp_path.iterdir())  # asking for a path makes nothing
    # a fine-tune run's root finds the inference in its infer/; a predictions.jsonl given directly, its folder
    (tmp_path / "infer").mkdir()
    (tmp_path / "infer" / "predictions.jsonl").write_text(OLD_LINES[0] + "\n")
    assert RunDir.find(tmp_path, "run").path == tmp_path / "infer"
    assert RunDir.find(tmp_path / "infer" / "predictions.jsonl", "run").path == tmp_path / "infer"
    with pytest.raises(ConfigError, match=r"^run='.*nowhere': no such directory"):
        RunDir.find(tmp_path / "nowhere", "run")


def test_predictions_round_trip_byte_for_byte(tmp_path):
    """Old predictions.jsonl files read into records and written back are the same bytes."""
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(line + "\n" for line in OLD_LINES), encoding="utf-8")
    rows = RunDir(tmp_path).predictions()
    assert [r.id for r in rows] == ["1", "q2", "v3", "m4"]
    assert rows[1].choices == {"A": "cat", "B": "dog", "C": "clothing", "D": "clothing"} and rows[1].pred is None
    assert rows[2].answers == ("2", "two", "3") and rows[3].scores == {"offensive": 0.75, "not offensive": 0.25}
    assert [json.dumps(r.to_json(), ensure_ascii=False) for r in rows] == OLD_LINES
    RunDir(tmp_path).prediction_store().rewrite(rows)
    assert path.read_text(encoding="utf-8") == "".join(line + "\n" for line in OLD_LINES)
    # a key the record does not know (a newer vlx's, or a hand-made file's) is kept, after the known ones
    extra = Prediction.from_json({**json.loads(OLD_LINES[0]), "note": "by hand"}, "x:1")
    assert list(extra.to_json())[-1] == "note" and extra.extra == {"note": "by hand"}


def test_infer_writes_the_rows_it_always_wrote(tmp_path):
    """stage=infer's prediction for an item is the row main wrote: same keys, same order, same values."""
    task = build_task("shapes", sizes={"test": 3}, cache_dir=tmp_path, split="test")
    example = task.examples()[0]
    answer = f"{example.label.capitalize()}. Because the picture shows it."
    row = prediction(
        task, example, answer, [], {example.label: 0.9, "neutral" if example.label != "neutral" else "entailment": 0.1}
    ).to_json()
    assert list(row) == ["id", "image", "text", "gold", "pred", "explanation", "raw", "refs", "demos", "scores"]
    assert row["id"] == example.id and row["image"] == str(example.image) and row["gold"] == example.label
    assert row["pred"] == example.label and row["explanation"] == "Because the picture shows it."
    assert row["refs"] == list(example.explanations) and row["demos"] == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "2", "gold": ["x"]}', "'gold' must be a label (text) or null"),
        ('{"id": "2", "scores": {"a": "high"}}', "'scores' must be an object of label -> probability"),
        ('{"id": "2", "refs": "one"}', "'refs' must be a list"),
        ('{"gold": "a"}', "each line must be a JSON object with an 'id'"),
    ],
)
def test_a_bad_row_names_its_file_and_line(tmp_path, line, message):
    path = tmp_path / "predictions.jsonl"
    path.write_text(OLD_LINES[0] + "\n" + line + "\n")
    with pytest.raises(DataError) as err:
        RunDir(tmp_path).predictions()
    text = str(err.value)
    assert text.startswith(f"{path}:2: ") and message in text and "\n" not in text


def test_verdict_and_run_info_round_trip():
    verdict = {
        "id": "1",
        "verdict": "weak yes",
        "score": 2 / 3,
        "raw": "Weak yes",
        "correct": True,
        "pred": "a",
        "explanation": "e",
        "judge": "j",
        "prompt_version": "v1",
        "probs": {"yes": 0.5},
    }
    assert Verdict.from_json(verdict, "v:1").to_json() == verdict
    with pytest.raises(DataError, match=r"^v:3: 'correct' must be true, false or null"):
        Verdict.from_json({**verdict, "correct": "yes"}, "v:3")
    info = {
        "task": "shapes",
        "split": "test",
        "labels": ["a", "b"],
        "positive": None,
        "model": "tiny_llava",
        "checkpoint": "x",
        "adapter": None,
        "shots": 2,
        "shot_strategy": "balanced",
        "quant": "none",
        "generation": "greedy",
        "seed": 0,
    }
    assert list(RunInfo.from_json(info).to_json().items()) == list(info.items())
    assert RunInfo.from_json({"task": "esnli"}).labels == ()  # an older summary: what is missing is empty


def _report(make_cfg, runs: list[Path], out: Path) -> str:
    run_stage(make_cfg("stage=report", f"stage.runs=[{','.join(map(str, runs))}]", run_dir=out))
    return (out / "results.md").read_text()


def test_two_judges_keep_their_numbers_and_report_shows_both(make_cfg, tmp_path):
    """Each judge writes its own judge.json; metrics.json stays eval's; the report shows both judges' S_E."""
    run = finished_run(tmp_path)
    run_stage(judge_cfg(make_cfg, run))
    run_stage(judge_cfg(make_cfg, run, "stage.decode=score", "stage.judge_name=scored"))
    folder = RunDir(run)
    assert folder.judge_names() == ["scored", "tiny_llava"]
    first, second = (json.loads(folder.judge_results_file(n).read_text()) for n in ("tiny_llava", "scored"))
    assert first["judge"] == "tiny_llava" and second["judge"] == "scored" and second["decode"] == "score"
    assert json.loads(folder.metrics_file.read_text()) == {"accuracy": 0.7, "bleu4": 0.25, "notes": ["kept"]}
    results = folder.results()
    assert results["judges"]["tiny_llava"]["judge_score"] == first["judge_score"]
    assert results["judges"]["scored"]["judge_score"] == second["judge_score"]
    assert "judge_score" not in results  # two judges: no single judge_score
    table = _report(make_cfg, [run], tmp_path / "report")
    header, _, row = table.splitlines()[:3]
    assert "Judge S_E (scored)" in header and "Judge S_E (tiny_llava)" in header
    cells = dict(zip(header.split(" | "), row.split(" | "), strict=True))
    for name, numbers in (("tiny_llava", first), ("scored", second)):
        shown = cells[f"Judge S_E ({name})"]
        assert shown == ("" if numbers["judge_score"] is None else f"{numbers['judge_score']:.4f}")


def test_old_layout_judge_keys_in_metrics_are_still_reported(make_cfg, tmp_path):
    """A metrics.json written when the judge merged its numbers into it (and no judge.json beside it) still shows
    the judge's score in the report."""
    run = finished_run(tmp_path)
    old = {
        "accuracy": 0.7,
        "judge_score": 0.625,
        "judge_score_ci": [0.5, 0.75],
        "judge_n": 8,
        "all_judge_score": 0.5,
        "judge_model": "llava",
        "judge_prompt_version": "evil-4level-v1",
    }
    (run / "metrics.json").write_text(json.dumps(old))
    results = RunDir(run).results()
    assert results["judge_score"] == 0.625 and results["judges"]["llava"]["judge_n"] == 8
    header, _, row = _report(make_cfg, [run], tmp_path / "report").splitlines()[:3]
    cells = dict(zip(header.split(" | "), row.split(" | "), strict=True))
    assert cells["Judge S_E"] == "0.6250" and cells["Accuracy"] == "0.7000"
