"""W&B: an offline run folder with config, summary and predictions; failed runs are closed; no secrets written."""

from __future__ import annotations

import pytest

from vlx.__main__ import run_stage
from vlx.tracking import tracking


def test_offline_wandb_run_is_written(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "local-0123456789abcdef0123456789abcdef01234567")
    cfg = make_cfg("model=tiny_llava", "task=shapes", "task.limit=3", "logger=wandb", "generation.max_new_tokens=4")
    run_stage(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = runs[0] / "files"
    config = (files / "config.yaml").read_text()
    assert "tiny-models/llava_next" in config and "shapes" in config
    assert list(runs[0].glob("run-*.wandb"))
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
