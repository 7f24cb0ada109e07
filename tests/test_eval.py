"""The eval stage: hand-made predictions give the reference libraries' numbers; references; clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from vlx.__main__ import run_stage
from vlx.errors import VlxError
from vlx.run.directory import RunDir
from vlx.tasks.references import read_references

ESNLI = ("entailment", "contradiction", "neutral")
EXPLANATIONS = [
    "a man is riding a bike so he is outside",
    "the dog is running in the grass",
    "two women are sitting at a table and talking",
    "the boy cannot be sleeping while he plays football",
    "the people are on a street in a city",
    "not every man with a hat is a farmer",
]


def write_predictions(run_dir, rows):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def esnli_rows(n=24, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        gold = ESNLI[i % 3]
        pred = gold if rng.random() < 0.6 else (None if rng.random() < 0.3 else ESNLI[(i + 1) % 3])
        ref = EXPLANATIONS[i % len(EXPLANATIONS)]
        cand = ref if i % 4 == 0 else " ".join(reversed(ref.split())) if i % 4 == 1 else EXPLANATIONS[(i + 2) % 6]
        rows.append(
            {
                "id": f"p{i}",
                "image": f"{i}.jpg",
                "text": "h",
                "gold": gold,
                "pred": pred,
                "explanation": cand,
                "raw": f"{pred}. {cand}",
                "refs": [ref],
            }
        )
    return rows


@pytest.fixture(scope="module")
def esnli_eval(tmp_path_factory):
    """A hand-made e-SNLI-VE predictions file scored once by `vlx stage=eval run=<dir> task=esnli`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from vlx.__main__ import CONFIG_DIR

    run_dir = tmp_path_factory.mktemp("esnli_run")
    rows = esnli_rows()
    write_predictions(run_dir, rows)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "stage=eval",
                f"stage.run={run_dir}",
                "task=esnli",
                "eval.resamples=200",
                f"hydra.run.dir={run_dir}/eval",
            ],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    returned = run_stage(cfg)
    GlobalHydra.instance().clear()
    return run_dir, rows, json.loads((run_dir / "metrics.json").read_text()), returned


def test_classification_equals_sklearn(esnli_eval):
    run_dir, rows, metrics, returned = esnli_eval
    gold = [r["gold"] for r in rows]
    pred = [r["pred"] or "unparsed" for r in rows]
    assert metrics["n"] == 24
    assert metrics["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    assert metrics["macro_f1"] == pytest.approx(
        f1_score(gold, pred, labels=list(ESNLI), average="macro", zero_division=0)
    )
    assert metrics["unparsed_rate"] == pytest.approx(sum(r["pred"] is None for r in rows) / 24)
    low, high = metrics["accuracy_ci"]
    assert low <= metrics["accuracy"] <= high
    assert (run_dir / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert returned["accuracy"] == metrics["accuracy"]


@pytest.mark.slow
def test_explanations_scored_on_correct_items_as_evil_does(esnli_eval):
    from vlx.metrics.bertscore import BertScoreSettings
    from vlx.metrics.text import coco_scores

    _, rows, metrics, _ = esnli_eval
    correct = [r for r in rows if r["pred"] == r["gold"]]
    direct, _ = coco_scores([r["explanation"] for r in correct], [r["refs"] for r in correct], spice=False)
    for key in ("bleu4", "meteor", "rouge_l", "cider"):
        assert metrics[key] == pytest.approx(direct[key], abs=1e-9), key
    everything, _ = coco_scores([r["explanation"] for r in rows], [r["refs"] for r in rows], spice=False)
    assert metrics["all_bleu4"] == pytest.approx(everything["bleu4"], abs=1e-9)
    assert 0 < metrics["bertscore_f1"] <= 1 and metrics["bertscore"]["num_layers"] == BertScoreSettings().num_layers
    # SPICE cannot run offline: e-ViL's combined scores say so in their names
    assert metrics["evil_spice"] is False and "evil_global" not in metrics
    assert metrics["evil_global_no_spice"] == pytest.approx(metrics["evil_avg_all_no_spice"] * metrics["accuracy"])
    low, high = metrics["evil_global_no_spice_ci"]
    assert low < metrics["evil_global_no_spice"] < high
    for key in ("meteor", "rouge_l", "cider", "evil_avg_overlap_no_spice", "all_cider"):
        assert metrics[f"{key}_ci"][0] <= metrics[key] <= metrics[f"{key}_ci"][1], key
    assert metrics["protocol"] == "coco" and metrics["intervals"]["resamples"] > 0
    assert metrics["n_with_references"] == 24 and metrics["n_without_references"] == 0


def meme_rows(n=20, with_scores=True):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        gold = ("not offensive", "offensive")[i % 2]
        p_off = float(np.clip((0.7 if gold == "offensive" else 0.35) + rng.normal(0, 0.2), 0.01, 0.99))
        row = {
            "id": f"{i:05d}",
            "image": f"img/{i:05d}.png",
            "text": "t",
            "gold": gold,
            "pred": "offensive" if p_off > 0.5 else "not offensive",
            "explanation": f"it mocks group {i % 3}",
            "raw": "r",
            "refs": [],
        }
        if with_scores:
            row["scores"] = {"offensive": p_off, "not offensive": 1 - p_off}
        rows.append(row)
    return rows


def eval_cfg(make_cfg, run_dir, *extra):
    return make_cfg(
        "stage=eval", f"stage.run={run_dir}", "task=meme", "eval.resamples=100", *extra, run_dir=run_dir / "eval"
    )


def test_meme_auroc_and_binary_f1_from_label_probabilities(make_cfg, tmp_path):
    rows = meme_rows()
    write_predictions(tmp_path / "r", rows)
    metrics = run_stage(eval_cfg(make_cfg, tmp_path / "r"))
    y = [r["gold"] == "offensive" for r in rows]
    assert metrics["auroc"] == pytest.approx(roc_auc_score(y, [r["scores"]["offensive"] for r in rows]))
    assert metrics["binary_f1"] == pytest.approx(
        f1_score([r["gold"] for r in rows], [r["pred"] for r in rows], pos_label="offensive")
    )
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert any("no reference explanations" in n for n in saved["notes"]) and "bleu4" not in saved


def test_meme_without_scores_has_null_auroc_and_says_why(make_cfg, tmp_path):
    write_predictions(tmp_path / "r", meme_rows(with_scores=False))
    run_stage(eval_cfg(make_cfg, tmp_path / "r"))
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["auroc"] is None and saved["accuracy"] is not None
    assert any("auroc" in n.lower() and "decode=score" in n for n in saved["notes"])  # the reason, and the fix


def test_hatred_references_score_the_memes_that_have_them(make_cfg, tmp_path):
    rows = meme_rows()
    write_predictions(tmp_path / "r", rows)
    hatred = tmp_path / "hatred.jsonl"  # HatReD's own format: integer id without zeros, img, target, reasonings
    hatred.write_text(
        "".join(
            json.dumps(
                {
                    "id": i,
                    "img": f"{i:05d}.png",
                    "target": ["group"],
                    "reasonings": [f"it mocks group {i % 3}", "it insults a group"],
                }
            )
            + "\n"
            for i in range(1, 20, 2)
        )
    )
    run_stage(eval_cfg(make_cfg, tmp_path / "r", f"task.references={hatred}"))
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["n_with_references"] == 10 and saved["n_without_references"] == 10
    assert saved["all_bleu4"] > 0.5  # candidates equal one of the two references
    assert any("10 items have no reference explanation" in n for n in saved["notes"])


def test_a_references_file_matching_no_item_is_refused(make_cfg, tmp_path):
    """A references file of another task or split would leave the explanation metrics out without a word: refused
    in one line naming the file, both sides' ids and what to do, before anything is written."""
    write_predictions(tmp_path / "r", meme_rows())
    other = tmp_path / "esnli_refs.jsonl"
    other.write_text("".join(json.dumps({"id": f"pair{i}", "explanations": ["e"]}) + "\n" for i in range(5)))
    with pytest.raises(VlxError) as refused:
        run_stage(eval_cfg(make_cfg, tmp_path / "r", f"task.references={other}"))
    assert str(refused.value) == (
        f"task.references={str(other)!r} matches none of the 20 items of run {tmp_path / 'r'} (ids 00000, 00001, "
        f"00002, ...); its 5 ids (pair0, pair1, pair2, ...). Give the references of this task and split (ids match "
        f"without leading zeros), or leave task.references out"
    )
    assert not (tmp_path / "r" / "metrics.json").exists() and not (tmp_path / "r" / "confusion_matrix.png").exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"id": 1, "reasonings": []}\n')
    with pytest.raises(VlxError, match=r"matches none of the 20 items .*; it holds no explanations\. Give"):
        run_stage(eval_cfg(make_cfg, tmp_path / "r", f"task.references={empty}"))


def test_a_references_file_for_some_items_warns_with_the_counts(make_cfg, tmp_path, caplog):
    """HatReD explains only the hateful memes: the others are left out of the explanation metrics, said in a
    warning with the counts (and in metrics.json)."""
    write_predictions(tmp_path / "r", meme_rows())
    some = tmp_path / "some.jsonl"
    some.write_text(
        "".join(json.dumps({"id": i, "explanations": [f"it mocks group {i % 3}"]}) + "\n" for i in range(3))
    )
    with caplog.at_level("WARNING", logger="vlx.tasks.references"):
        run_stage(eval_cfg(make_cfg, tmp_path / "r", f"task.references={some}"))
    assert (
        f"task.references={some} has explanations for 3 of the 20 items of run {tmp_path / 'r'}; the other 17 "
        "are left out of the explanation metrics" in caplog.text
    )
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["n_with_references"] == 3 and saved["n_without_references"] == 17


def test_an_infer_tasks_references_matching_no_item_are_warned_about(tmp_path, caplog):
    """At infer, the file may be meant for the few-shot pool's split only: none matching the queries is a warning
    that their explanations cannot be scored."""
    from helpers import meme_items, write_memes

    from vlx.tasks import build_task

    write_memes(tmp_path / "memes", "dev_seen", meme_items(4))
    other = tmp_path / "refs.jsonl"
    other.write_text('{"id": "x1", "explanations": ["e"]}\n')
    with caplog.at_level("WARNING", logger="vlx.tasks.references"):
        task = build_task("meme", data_dir=tmp_path / "memes", split="dev_seen", references=str(other))
        assert not any(ex.explanations for ex in task.load().examples)
    assert (
        f"task.references={str(other)!r} matches none of the 4 items (ids 01000, 01007, 01014, ...); its 1 id "
        "(x1): their explanations cannot be scored"
    ) in caplog.text


def test_references_formats_and_errors(tmp_path):
    path = tmp_path / "refs.jsonl"
    path.write_text(
        '{"id": 1456, "img": "01456.png", "target": ["x"], "reasonings": ["r1", "r2"]}\n'
        '{"id": "00042", "explanations": ["e1"]}\n{"id": "abc", "explanations": "single"}\n'
    )
    assert read_references(path) == {"1456": ("r1", "r2"), "42": ("e1",), "abc": ("single",)}
    path.write_text('{"id": 1, "explanations": ["a"]}\n{"id": 2, "reasonings": 5}\n')
    with pytest.raises(VlxError, match=r"refs\.jsonl:2: expected 'reasonings'"):
        read_references(path)


def test_malformed_prediction_line_is_named(make_cfg, tmp_path):
    write_predictions(tmp_path / "r", meme_rows(4))
    with (tmp_path / "r" / "predictions.jsonl").open("a") as f:
        f.write('{"id": "x", "gold": \n')
    with pytest.raises(VlxError, match=r"predictions\.jsonl:5: not valid JSON"):
        run_stage(eval_cfg(make_cfg, tmp_path / "r"))


def test_missing_run_is_a_clear_error(make_cfg, tmp_path):
    with pytest.raises(VlxError, match="predictions.jsonl not found"):
        run_stage(eval_cfg(make_cfg, tmp_path))


def test_infer_scores_its_run_at_the_end(make_cfg, tmp_path):
    cfg = make_cfg(
        "model=tiny_paligemma",
        "task=shapes",
        "task.limit=6",
        "generation.max_new_tokens=12",
        "eval_after_infer=true",
        "eval.resamples=50",
    )
    summary = run_stage(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n"] == 6 and summary["accuracy"] == metrics["accuracy"]
    assert metrics["n_with_references"] == 6  # the shapes explanations travel in the predictions' refs
    assert "all_bleu4" in metrics and 0 <= metrics["all_bertscore_f1"] <= 1
    info = json.loads((tmp_path / "run" / "summary.json").read_text())["run"]
    assert info["task"] == "shapes" and info["model"] == "tiny_paligemma" and info["labels"] == list(ESNLI)


def test_calibration_from_label_probabilities_and_judge_keys_kept(make_cfg, tmp_path):
    """decode=score runs get ECE, Brier and NLL (equal to sklearn's) with intervals and a reliability diagram; a
    re-score leaves the judge's numbers (its own judge.json) alone, and readers still see them beside eval's."""
    from sklearn.metrics import brier_score_loss, log_loss

    rows = meme_rows(40)
    write_predictions(tmp_path / "r", rows)
    run_stage(eval_cfg(make_cfg, tmp_path / "r", "eval.calibration_bins=5"))
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    y = [r["gold"] == "offensive" for r in rows]
    p = [r["scores"]["offensive"] for r in rows]
    assert saved["brier"] == pytest.approx(brier_score_loss(y, p))
    assert saved["nll"] == pytest.approx(log_loss(y, p))
    assert saved["ece_bins"] == 5 and len(saved["calibration"]["bins"]) == 5 and saved["ece_bin_rule"] == "(lo, hi]"
    for key in ("ece", "brier", "nll"):
        low, high = saved[f"{key}_ci"]
        assert low <= saved[key] <= high, key
    assert (tmp_path / "r" / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved["intervals"]["resamples"] == 100 and "correctly labelled" in saved["intervals"]["explanations"]
    judged = RunDir(tmp_path / "r")
    judged.judge_dir("j").mkdir(parents=True)
    judged.verdicts_file("j").write_text("")
    judged.write_judge_results("j", {"judge": "j", "judge_score": 0.5, "all_judge_score": 0.4})
    run_stage(eval_cfg(make_cfg, tmp_path / "r"))
    again = judged.results()
    assert again["judge_score"] == 0.5 and again["all_judge_score"] == 0.4 and again["ece_bins"] == 15
    assert "judge_score" not in json.loads(judged.metrics_file.read_text())  # eval's file holds eval's numbers


def test_bad_eval_settings_are_named(make_cfg, tmp_path):
    write_predictions(tmp_path / "r", meme_rows(4))
    for setting, message in (
        ("eval.protocol=bleu", "eval.protocol='bleu'"),
        ("eval.calibration_bins=0", "eval.calibration_bins=0"),
        ("eval.evil_references=some", "eval.evil_references='some'"),
    ):
        with pytest.raises(VlxError, match=message):
            run_stage(eval_cfg(make_cfg, tmp_path / "r", setting))
