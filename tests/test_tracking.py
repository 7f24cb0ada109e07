"""W&B: an offline run folder with config, summary and predictions; failed runs are closed; no secrets written."""

from __future__ import annotations

import json

import pytest

from vlx.__main__ import run_stage
from vlx.tracking import tracking


def test_offline_wandb_run_is_written(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "local-0123456789abcdef0123456789abcdef01234567")
    cfg = make_cfg("model=tiny_llava", "task=shapes", "task.limit=3", "logger=wandb", "generation.max_new_tokens=4",
                   "eval_after_infer=true", "eval.resamples=20")  # fmt: skip
    run_stage(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (record,) = runs[0].glob("run-*.wandb")  # the offline run log holds config and summary
    assert b"tiny-models/llava_next" in record.read_bytes() and b"items_per_s" in record.read_bytes()
    (table,) = (runs[0] / "files" / "media" / "table").glob("predictions_*.table.json")
    data = json.loads(table.read_text())
    assert data["columns"] == ["id", "image", "text", "gold", "pred", "explanation", "raw"]
    assert [row[0] for row in data["data"]] == [
        json.loads(line)["id"] for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    ]
    assert len(list((runs[0] / "files" / "media" / "images").glob("examples_*.png"))) == 3
    # the scores: summary values, the per-class table and the confusion matrix image
    assert b"macro_f1" in record.read_bytes() and b"bertscore_f1" in record.read_bytes()
    assert list((runs[0] / "files" / "media" / "table").glob("per_class_*.table.json"))
    assert list((runs[0] / "files" / "media" / "images").glob("confusion_matrix_*.png"))
    for path in (tmp_path / "run").rglob("*"):  # the key never lands in any output
        if path.is_file():
            assert b"0123456789abcdef0123456789abcdef01234567" not in path.read_bytes(), path


def test_failed_stage_still_closes_the_run(tmp_path):
    import wandb

    settings = {"project": "vlx-test", "mode": "offline", "dir": str(tmp_path)}
    with pytest.raises(RuntimeError, match="boom"), tracking(settings, {"a": 1}, name="failing"):
        assert wandb.run is not None
        raise RuntimeError("boom")
    assert wandb.run is None
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_no_logger_opens_nothing(tmp_path):
    import wandb

    with tracking(None, {"a": 1}, name="none") as tracker:
        tracker.log_summary({"x": 1.0})
        assert wandb.run is None


def test_finetune_reports_its_loss_curve_to_wandb(make_cfg, tmp_path):
    cfg = make_cfg("stage=finetune", "model=tiny_paligemma", "task=shapes", "task.split=train", "task.limit=8",
                   "lora=r64", "finetune.max_steps=3", "finetune.per_device_batch_size=4",
                   "finetune.gradient_accumulation_steps=1", "finetune.logging_steps=1", "finetune.save_strategy=no",
                   "logger=wandb")  # fmt: skip
    run_stage(cfg)
    (record,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    data = record.read_bytes()
    assert b"train/loss" in data and b"train/learning_rate" in data  # the Trainer logged into vlx's run
    assert b"train/samples_per_s" in data  # with vlx's throughput
    assert b"train_samples_per_s" in data  # and vlx's summary
