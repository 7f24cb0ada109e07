"""The infer stage end to end on the tiny models of both real architectures and all three tasks."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import SHARED_ESNLI
from helpers import esnli_from_shared, meme_items, write_memes

from vlx.__main__ import run_stage
from vlx.errors import ConfigError
from vlx.tasks import parse_answer

MODELS = ["tiny_llava", "tiny_paligemma"]


def read_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


def task_overrides(task: str, tmp_path) -> tuple[list[str], list[str]]:
    """Overrides that point a task at test data, and the ids expected in order."""
    if task == "esnli":
        if not SHARED_ESNLI.is_dir():
            pytest.skip("../shared/data/esnlive is not beside the repo")
        csv_dir, image_dir, rows = esnli_from_shared(SHARED_ESNLI / "esnlive_test.csv", tmp_path / "esnli", limit=5)
        return (
            ["task=esnli", f"task.csv_dir={csv_dir}", f"task.image_dir={image_dir}", "task.split=test", "task.limit=5"],
            [r["pairID"] for r in rows],
        )
    if task == "meme":
        write_memes(tmp_path / "memes", "dev_seen", meme_items(5))
        return (["task=meme", f"task.data_dir={tmp_path / 'memes'}"], [f"{1000 + i * 7:05d}" for i in range(5)])
    return (["task=shapes", "task.limit=5"], [f"test-{i // 3:05d}.png#{i}{'ecn'[i % 3]}" for i in range(5)])


@pytest.mark.parametrize("task", ["shapes", "esnli", "meme"])
@pytest.mark.parametrize("model", MODELS)
def test_infer_writes_every_prediction(make_cfg, tmp_path, model, task):
    overrides, ids = task_overrides(task, tmp_path)
    cfg = make_cfg(f"model={model}", *overrides, "batch_size=2", "generation.max_new_tokens=6")
    summary = run_stage(cfg)

    out = tmp_path / "run"
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ids
    for row in rows:
        assert set(row) >= {"id", "image", "text", "gold", "pred", "explanation", "raw"}
        assert (row["pred"], row["explanation"]) == parse_answer(task, row["raw"])
        assert row["gold"] in (
            ("not offensive", "offensive") if task == "meme" else ("entailment", "contradiction", "neutral")
        )
    with (out / "predictions.csv").open() as f:
        reader = csv.DictReader(f)
        expected = ["img_path", "explanation"] if task == "meme" else ["img_path", "hypothesis", "explanation"]
        assert reader.fieldnames == expected
        csv_rows = list(reader)
    assert [r["img_path"] for r in csv_rows] == [r["image"] for r in rows]
    assert [r["explanation"] for r in csv_rows] == [r["raw"] for r in rows]
    assert summary["items"] == 5 and summary["new_items"] == 5
    assert summary["accuracy"] == sum(r["pred"] == r["gold"] for r in rows) / 5
    assert json.loads((out / "summary.json").read_text())["items"] == 5


def test_generation_is_deterministic_and_batch_size_independent(make_cfg, tmp_path):
    """Greedy answers do not depend on how items are batched (left padding done right)."""
    answers = {}
    for bs in (1, 3):
        cfg = make_cfg(
            "model=tiny_llava",
            "task=shapes",
            "task.limit=4",
            f"batch_size={bs}",
            "generation.max_new_tokens=8",
            run_dir=tmp_path / f"bs{bs}",
        )
        run_stage(cfg)
        answers[bs] = [r["raw"] for r in read_rows(tmp_path / f"bs{bs}")]
    assert answers[1] == answers[3]
    assert any(answers[1])  # the model produced text


def test_rerun_into_the_same_directory_skips_finished_items(make_cfg, tmp_path):
    out = tmp_path / "run"
    first = make_cfg("model=tiny_paligemma", "task=shapes", "task.limit=3", "generation.max_new_tokens=4", run_dir=out)
    run_stage(first)
    before = (out / "predictions.jsonl").read_text()
    again = make_cfg("model=tiny_paligemma", "task=shapes", "task.limit=5", "generation.max_new_tokens=4", run_dir=out)
    summary = run_stage(again)
    rows = read_rows(out)
    assert (out / "predictions.jsonl").read_text().startswith(before)  # earlier rows untouched
    assert [r["id"] for r in rows] == [f"test-{i // 3:05d}.png#{i}{'ecn'[i % 3]}" for i in range(5)]
    assert summary["new_items"] == 2 and summary["items"] == 5


def test_skipped_images_are_in_the_summary(make_cfg, tmp_path):
    write_memes(tmp_path / "memes", "dev_seen", meme_items(3))
    (tmp_path / "memes" / "img" / "01007.png").unlink()
    cfg = make_cfg(
        "model=tiny_llava",
        "task=meme",
        f"task.data_dir={tmp_path / 'memes'}",
        "task.on_bad_image=skip",
        "generation.max_new_tokens=3",
    )
    summary = run_stage(cfg)
    assert summary["skipped"] == 1 and summary["items"] == 2
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [s["id"] for s in saved["skipped_items"]] == ["01007"]
    assert [r["id"] for r in read_rows(tmp_path / "run")] == ["01000", "01014"]


def test_paligemma_refuses_demonstrations_before_loading(make_cfg, no_model_loads):
    cfg = make_cfg("model=tiny_paligemma", "task=shapes", "shots=2")
    with pytest.raises(ConfigError, match=r"shots=2: PaliGemmaAdapter takes 1 image\(s\) per prompt"):
        run_stage(cfg)


def test_missing_adapter_is_refused_before_loading(make_cfg, tmp_path, no_model_loads):
    cfg = make_cfg("model=tiny_llava", "task=shapes", f"model.adapter={tmp_path / 'none'}")
    with pytest.raises(ConfigError, match="adapter_config.json"):
        run_stage(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_4bit_nf4_on_cpu(make_cfg, tmp_path, model):
    """bitsandbytes 4-bit loads and generates on a CPU too; the 4-bit layers are really there."""
    import bitsandbytes as bnb
    from hydra.utils import instantiate

    from vlx.stages._common import build_quantization

    cfg = make_cfg(f"model={model}", "task=shapes", "task.limit=2", "quant=nf4", "generation.max_new_tokens=4")
    adapter = instantiate(cfg.model, _partial_=True)(quantization=build_quantization(cfg.quant))
    layers = [m for m in adapter.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.weight.quant_state.quant_type == "nf4" for m in layers)
    run_stage(cfg)
    rows = read_rows(tmp_path / "run")
    assert len(rows) == 2 and all(isinstance(r["raw"], str) for r in rows)


@pytest.mark.gpu
@pytest.mark.parametrize("model", MODELS)
def test_nf4_on_gpu(make_cfg, tmp_path, model):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if not SHARED_ESNLI.is_dir():
        pytest.skip("../shared/data/esnlive is not beside the repo")
    csv_dir, image_dir, rows = esnli_from_shared(SHARED_ESNLI / "esnlive_test.csv", tmp_path / "esnli", limit=30)
    cfg = make_cfg(
        f"model={model}",
        "task=esnli",
        f"task.csv_dir={csv_dir}",
        f"task.image_dir={image_dir}",
        "task.limit=30",
        "quant=nf4",
        "batch_size=16",
    )
    run_stage(cfg)
    assert [r["id"] for r in read_rows(tmp_path / "run")] == [r["pairID"] for r in rows]


def test_length_batching_changes_no_output_and_keeps_dataset_order(make_cfg, tmp_path):
    """Items of mixed image shapes and text lengths, batched by length or in file order: the same answers, and the
    finished predictions file is in the split's order either way."""
    write_memes(tmp_path / "memes", "dev_seen", meme_items(9))  # three image shapes
    answers = {}
    for how in ("length", "dataset"):
        cfg = make_cfg(
            "model=tiny_llava",
            "task=meme",
            f"task.data_dir={tmp_path / 'memes'}",
            f"batching={how}",
            "batch_size=4",
            "generation.max_new_tokens=6",
            run_dir=tmp_path / how,
        )
        run_stage(cfg)
        rows = read_rows(tmp_path / how)
        assert [r["id"] for r in rows] == [f"{1000 + i * 7:05d}" for i in range(9)]
        answers[how] = [r["raw"] for r in rows]
    assert answers["length"] == answers["dataset"]


@pytest.mark.parametrize("workers", [0, 2])
def test_out_of_memory_halves_the_batch_and_loses_nothing(make_cfg, tmp_path, monkeypatch, workers):
    """A batch that runs out of GPU memory is retried at half the size (fault injected into vlx's adapter), with
    batches prepared by a thread or by worker processes."""
    from vlx.models import LlavaNextAdapter

    real = LlavaNextAdapter.generate

    def generate(self, prompts, *args, **kwargs):
        if len(prompts) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(self, prompts, *args, **kwargs)

    monkeypatch.setattr(LlavaNextAdapter, "generate", generate)
    cfg = make_cfg(
        "model=tiny_llava",
        "task=shapes",
        "task.limit=7",
        "batch_size=auto",
        "generation.max_new_tokens=4",
        f"loader_workers={workers}",
    )
    summary = run_stage(cfg)
    assert summary["batch_size"] == 2 and summary["items"] == 7
    rows = read_rows(tmp_path / "run")
    assert sorted(r["id"] for r in rows) == sorted({r["id"] for r in rows}) and len(rows) == 7
