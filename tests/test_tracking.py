"""W&B: an offline run folder with config, summary and predictions; failed runs are closed; no secrets written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env
from helpers import HANG_GUARD_S, wandb_run

from vlx.__main__ import run_stage
from vlx.tracking import tracking


@pytest.mark.slow
def test_offline_wandb_run_is_written(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "local-0123456789abcdef0123456789abcdef01234567")
    cfg = make_cfg(
        "model=tiny_llava",
        "task=shapes",
        "task.limit=3",
        "logger=wandb",
        "generation.max_new_tokens=4",
        "eval_after_infer=true",
        "eval.resamples=20",
    )
    run_stage(cfg)
    (folder,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    run = wandb_run(folder)
    assert run["config"]["model"]["checkpoint"].endswith("tiny-models/llava_next")  # the resolved config
    summary = run["summary"]
    assert summary["items"] == 3 and summary["items_per_s"] > 0  # the infer summary
    assert 0 <= summary["macro_f1"] <= 1 and 0 <= summary["all_bertscore_f1"] <= 1  # and the scores
    (table,) = (folder / "files" / "media" / "table").glob("predictions_*.table.json")
    data = json.loads(table.read_text())
    assert data["columns"] == ["id", "image", "image_path", "text", "gold", "pred", "explanation", "raw"]
    assert [row[0] for row in data["data"]] == [
        json.loads(line)["id"] for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    ]
    assert summary["examples.count"] == 3
    # the per-class table and the confusion matrix image
    assert list((folder / "files" / "media" / "table").glob("per_class_*.table.json"))
    assert list((folder / "files" / "media" / "images").glob("confusion_matrix_*.png"))
    for path in (tmp_path / "run").rglob("*"):  # the key never lands in any output
        if path.is_file():
            assert b"0123456789abcdef0123456789abcdef01234567" not in path.read_bytes(), path


def test_a_run_longer_than_log_images_logs_every_row(make_cfg, tmp_path):
    """wandb types a table column by its first value: images in the first rows, then path strings, made it refuse
    the table (and stop the run before scoring) from row log_images + 1 on."""
    cfg = make_cfg(
        "model=tiny_paligemma",
        "task=shapes",
        "task.limit=7",
        "logger=wandb",
        "logger.log_images=2",
        "generation.max_new_tokens=3",
        "eval_after_infer=true",
        "eval.resamples=0",
    )
    run_stage(cfg)
    (folder,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    (table,) = (folder / "files" / "media" / "table").glob("predictions_*.table.json")
    data = json.loads(table.read_text())
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(data["data"]) == len(rows) == 7
    image, path = data["columns"].index("image"), data["columns"].index("image_path")
    assert [row[image] is not None for row in data["data"]] == [True, True] + [False] * 5
    assert [row[path] for row in data["data"]] == [r["image"] for r in rows]
    run = wandb_run(folder)
    assert run["summary"]["examples.count"] == 2 and run["summary"]["predictions.nrows"] == 7
    assert "accuracy" in run["summary"]  # scoring ran after the table


def test_failed_stage_still_closes_the_run(tmp_path):
    import wandb

    settings = {"project": "vlx-test", "mode": "offline", "dir": str(tmp_path)}
    with pytest.raises(RuntimeError, match="boom"), tracking(settings, {"a": 1}, name="failing"):
        assert wandb.run is not None
        raise RuntimeError("boom")
    assert wandb.run is None
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_no_logger_opens_nothing(tmp_path):
    """logger=none: wandb is never imported (a stage must not pay its start-up, or need it installed) and no run
    folder is made."""
    script = (
        "import sys\n"
        "from hydra import compose, initialize_config_dir\n"
        "from vlx.__main__ import CONFIG_DIR, run_stage\n"
        "from hydra.core.hydra_config import HydraConfig\n"
        "with initialize_config_dir(config_dir=CONFIG_DIR, version_base='1.3'):\n"
        f"    cfg = compose('config', overrides=['model=tiny_llava', 'task=shapes', 'task.limit=2',\n"
        f"        'generation.max_new_tokens=2', 'eval_after_infer=false', 'hydra.run.dir={tmp_path}/run',\n"
        f"        'hydra.runtime.output_dir={tmp_path}/run'], return_hydra_config=True)\n"
        "HydraConfig.instance().set_config(cfg)\n"
        "run_stage(cfg)\n"
        "print('wandb imported:', 'wandb' in sys.modules)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parent,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "wandb imported: False" in res.stdout
    assert len((tmp_path / "run" / "predictions.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "run" / "wandb").exists()


def test_finetune_reports_its_loss_curve_to_wandb(make_cfg, tmp_path):
    cfg = make_cfg(
        "stage=finetune",
        "model=tiny_paligemma",
        "task=shapes",
        "task.split=train",
        "task.limit=8",
        "lora=r64",
        "finetune.max_steps=3",
        "finetune.per_device_batch_size=4",
        "finetune.gradient_accumulation_steps=1",
        "finetune.logging_steps=1",
        "finetune.save_strategy=no",
        "logger=wandb",
    )
    run_stage(cfg)
    (folder,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    run = wandb_run(folder)
    steps = [h for h in run["history"] if "train/loss" in h]
    assert len(steps) == 3 and all("train/learning_rate" in h for h in steps)  # the Trainer logged into vlx's run
    assert all(h["train/samples_per_s"] > 0 for h in steps[1:])  # with vlx's throughput
    losses = json.loads((tmp_path / "run" / "train_summary.json").read_text())["log_history"]
    assert [h["train/loss"] for h in steps] == [h["loss"] for h in losses if "loss" in h]
    assert run["summary"]["steps"] == 3 and run["summary"]["train_samples_per_s"] > 0  # and vlx's summary
