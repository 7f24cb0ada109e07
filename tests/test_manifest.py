"""The run manifest: what a run's outputs depend on, recorded by infer and finetune, checked on resume, and listed by
compare and report where two runs differ."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import transformers

from vlx.__main__ import run_stage
from vlx.errors import ConfigError
from vlx.run import manifest, weights
from vlx.run.manifest import Manifest

BASE = ["model=tiny_llava", "task=shapes", "generation.max_new_tokens=4", "eval_after_infer=false"]


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


@pytest.fixture
def model_copy(make_cfg, tmp_path) -> Path:
    """A copy of the tiny LLaVA-NeXT's folder, which a test may change (vlx's own cache is never changed)."""
    from vlx.models.tiny import ensure_tiny_model

    cfg = make_cfg("model=tiny_llava")
    source = ensure_tiny_model(cfg.model.tiny, Path(cfg.model.tiny_dir))
    return Path(shutil.copytree(source, tmp_path / "model"))


def test_infer_records_the_prompt_the_model_got_and_how_it_was_loaded(make_cfg, tmp_path, monkeypatch):
    from vlx.models.hf import HFAdapter

    real, prompts = HFAdapter.generate, {}

    def generate(self, prompts_, images, ids=None, **kw):  # records, then runs the real thing
        prompts.update(zip(ids, prompts_, strict=True))
        return real(self, prompts_, images, ids=ids, **kw)

    monkeypatch.setattr(HFAdapter, "generate", generate)
    out = tmp_path / "run"
    run_stage(make_cfg(*BASE, "task.limit=3", "shots=1", "batch_size=2", run_dir=out))
    saved = json.loads((out / "manifest.json").read_text())
    m = manifest.read(out)
    first = rows(out)[0]["id"]  # the split's first item (rows are in dataset order)
    assert m.prompt == prompts[first] and m.prompt.count("<image>") == 2  # its demonstration's image, and its own
    assert (m.stage, m.dtype, m.padding_side, m.decode, m.seed) == ("infer", "float32", "left", "generate", 0)
    assert m.generation == {"do_sample": False, "max_new_tokens": 4} and m.batches is None  # greedy: no batch key
    assert m.shots["k"] == 1 and m.task == {"name": "shapes", "split": "test"}
    assert m.image_processor["size"] == {"shortest_edge": 28} and m.image_processor["image_grid_pinpoints"]
    assert m.versions["torch"] == torch.__version__ and m.versions["transformers"] == transformers.__version__
    assert m.versions["peft"] and m.versions["vlx"]
    assert m.weights.startswith("sampled-sha256:") and m.adapter is None and m.quantization is None
    assert Manifest.from_dict(saved) == m and m.to_dict() == saved  # a JSON round trip


def test_sampling_records_the_batches_its_draws_depend_on(make_cfg, tmp_path):
    run_stage(make_cfg(*BASE, "task.limit=1", "generation=seed_sampling", "batch_size=3"))
    assert manifest.read(tmp_path / "run").batches == {"batch_size": 3, "batching": "length"}


def test_resume_refuses_weights_or_a_chat_template_changed_in_place(make_cfg, tmp_path, model_copy, caplog):
    """The config is the same each time: only the manifest can see what changed in the model's folder."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    out, args = tmp_path / "run", [*BASE, f"model.checkpoint={model_copy}"]
    run_stage(make_cfg(*args, "task.limit=2", run_dir=out))
    before = (out / "predictions.jsonl").read_bytes()

    template = model_copy / "chat_template.jinja"
    original = template.read_text()
    template.write_text(original.replace("[INST] ", "[INST] Please: "))
    with pytest.raises(
        ConfigError,
        match=r"the run was made with different settings \(saved -> now\): prompt: "
        r"[\"']\[INST\] <image>\\nAnswer.*[\"'] \(from character 7\) -> "
        r"[\"']\[INST\] Please: ",
    ):
        run_stage(make_cfg(*args, "task.limit=3", run_dir=out))
    template.write_text(original)

    weights = model_copy / "model.safetensors"
    kept = weights.read_bytes()
    with safe_open(weights, "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118 - safe_open's API
    name = next(k for k in sorted(tensors) if "language_model" in k and tensors[k].dim() == 2)
    tensors[name] = tensors[name] + 1  # another training would change every value; one tensor is enough here
    save_file(tensors, weights, metadata=meta)
    with pytest.raises(
        ConfigError,
        match=rf"stage.resume={out}: the run was made with different settings \(saved -> now\)"
        r": weights: sampled-sha256:\w+ -> sampled-sha256:\w+\. Rerun with",
    ):
        run_stage(make_cfg(*args, "task.limit=3", f"stage.resume={out}", run_dir=tmp_path / "elsewhere"))
    assert (out / "predictions.jsonl").read_bytes() == before
    weights.write_bytes(kept)

    # another library version is said, not refused; the run continues
    saved = json.loads((out / "manifest.json").read_text())
    saved["versions"]["transformers"] = "0.0.1"
    (out / "manifest.json").write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING, logger="vlx.stages._resume"):
        run_stage(make_cfg(*args, "task.limit=3", run_dir=out))
    assert f"versions.transformers: 0.0.1 -> {transformers.__version__}" in caplog.text
    assert len(rows(out)) == 3


def test_a_run_without_a_manifest_resumes_and_is_named_by_compare_and_report(make_cfg, tmp_path):
    old = tmp_path / "old"
    run_stage(make_cfg(*BASE, "task.limit=2", run_dir=old))
    (old / "manifest.json").unlink()  # as main wrote runs before manifests
    run_stage(make_cfg(*BASE, "task.limit=3", run_dir=old))  # continued, checked against run_config.json
    assert len(rows(old)) == 3 and not (old / "manifest.json").exists()  # no record claims the earlier rows
    with pytest.raises(ConfigError, match=r"generation.max_new_tokens: 4 \(saved\) vs 8 \(now\)"):
        run_stage(make_cfg(*BASE[:-2], "generation.max_new_tokens=8", "task.limit=4", run_dir=old))

    new = tmp_path / "new"
    run_stage(make_cfg(*BASE, "task.limit=3", run_dir=new))
    assert manifest.pair_lines(old, new) == [f"{old} has no manifest.json ({manifest.NONE_NOTE})"]
    assert manifest.spread_lines({"old": old, "new": new}) == [f"no manifest.json ({manifest.NONE_NOTE}): old"]
    assert manifest.spread_lines({"new": new, "again": new}) == []  # the same settings: nothing to say
    (new / "manifest.json").write_text("{")
    assert "manifest.json: cannot be read" in manifest.pair_lines(old, new)[1]  # said, never an error


def _table_runs(make_cfg, tmp_path: Path) -> tuple[Path, Path]:
    """Two scored runs over the same three table items, with different prompt templates."""
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (40, 30), (220, 30, 30)).save(data / "red.png")
    Image.new("RGB", (30, 40), (30, 30, 220)).save(data / "blue.png")
    (data / "test.csv").write_text(
        "img,hypothesis,gold\nred.png,A red circle.,entailment\n"
        "blue.png,A green square.,contradiction\nred.png,It is wood.,neutral\n"
    )
    args = [
        "model=tiny_llava",
        "task=table",
        f"task.source={data}",
        "task.columns.image=img",
        "task.columns.text=hypothesis",
        "task.columns.label=gold",
        "task.columns.id=null",
        "task.columns.explanations=[]",
        "decode=score",
        "eval_after_infer=true",
        "eval.resamples=20",
    ]
    a, b = tmp_path / "A", tmp_path / "B"
    run_stage(make_cfg(*args, run_dir=a))
    run_stage(make_cfg(*args, "task.prompt='Look. Does {hypothesis} hold?'", run_dir=b))
    return a, b


def test_compare_and_report_list_the_settings_that_differ(make_cfg, tmp_path):
    a, b = _table_runs(make_cfg, tmp_path)
    run_stage(make_cfg("stage=compare", f"stage.runs=[{a},{b}]", "eval.resamples=20", run_dir=tmp_path / "cmp"))
    found = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["settings_differences"]
    assert len(found) == 1 and found[0].startswith('prompt: "[INST] <image>\\nAnswer')
    assert found[0].split(" -> ")[1].lstrip("'\"").startswith("[INST] <image>\\nLook.")
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "## Settings that differ (manifest.json, A -> B)\n\n- prompt: " in md

    run_stage(make_cfg("stage=compare", f"stage.runs=[{a},{a}]", "eval.resamples=20", run_dir=tmp_path / "same"))
    assert "The runs were made with the same settings." in (tmp_path / "same" / "comparison.md").read_text()

    old = tmp_path / "old"
    shutil.copytree(a, old)
    (old / "manifest.json").unlink()
    run_stage(make_cfg("stage=report", f"stage.runs=[{a},{b},{old}]", run_dir=tmp_path / "report"))
    lines = (tmp_path / "report" / "settings.md").read_text().splitlines()
    assert lines[0] == "# Settings that differ (manifest.json)"
    assert lines[2].startswith('- prompt (from character 15): "[INST] <image>\\nAnswer') and lines[2].endswith(" (B)")
    assert " (A); " in lines[2] and "Look. " in lines[2]
    assert lines[3] == f"- no manifest.json ({manifest.NONE_NOTE}): old"


def test_differences_are_one_readable_line_per_key():
    base = Manifest(
        stage="infer",
        model="m",
        weights="sampled-sha256:1",
        dtype="bfloat16",
        prompt="Q: " + "x" * 200,
        generation={"max_new_tokens": 4},
        versions={"torch": "2.13.0"},
    )
    other = dataclasses.replace(
        base,
        dtype="float16",
        prompt="Q: " + "x" * 100 + "y" * 100,
        generation={"max_new_tokens": 8, "do_sample": True},
        versions={"torch": "2.14.1"},
    )
    assert manifest.differences(base, other, skip=("versions",)) == [
        "dtype: bfloat16 -> float16",
        f"prompt: '...{'x' * 60}...' (from character 103) -> '...{'x' * 20}{'y' * 40}...'",
        "generation.max_new_tokens: 4 -> 8",
        "generation.do_sample: (absent) -> true",
    ]
    assert manifest.differences(base, other, only=("versions",)) == ["versions.torch: 2.13.0 -> 2.14.1"]
    assert manifest.differences(base, base) == []


def test_weights_identity_of_a_folder_and_of_a_hub_snapshot(model_copy, tmp_path):
    from huggingface_hub import constants

    found = weights.fingerprint(model_copy)
    moved = Path(shutil.copytree(model_copy, tmp_path / "moved"))
    assert weights.weights_identity(str(moved)) == found  # the weights, not where they lie
    (moved / "config.json").write_text((moved / "config.json").read_text() + " ")  # not weights
    assert weights.fingerprint(moved) == found

    # a hub id: the commit its `main` resolves to in the cache, as the cache lays a download out
    repo = Path(constants.HF_HUB_CACHE) / "models--vlx-test--manifest-tiny"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(model_copy, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert weights.weights_identity("vlx-test/manifest-tiny") == f"commit:{commit}"
    assert weights.weights_identity("vlx-test/not-in-the-cache") is None


def test_adapter_fingerprint_reads_every_byte(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"r": 8}')
    (folder / "adapter_model.safetensors").write_bytes(b"x" * 5000)
    first = weights.adapter_fingerprint(folder)
    (folder / "adapter_model.safetensors").write_bytes(b"x" * 4999 + b"y")  # retrained in place: the tail too
    assert first.startswith("sha256:") and weights.adapter_fingerprint(folder) != first
    assert weights.adapter_fingerprint(tmp_path) is None


@pytest.mark.slow
def test_finetune_records_the_base_and_its_lora_settings(make_cfg, tmp_path):
    run_stage(
        make_cfg(
            "stage=finetune",
            "model=tiny_paligemma",
            "task=shapes",
            "task.split=train",
            "task.limit=4",
            "lora=r64",
            "finetune.per_device_batch_size=4",
            "finetune.max_steps=1",
            "finetune.save_strategy=no",
        )
    )
    m = manifest.read(tmp_path / "run")
    assert m.stage == "finetune" and m.weights.startswith("sampled-sha256:") and m.prompt is None
    assert m.training["lora.r"] == 64 and m.training["finetune.learning_rate"] and m.seed == 0
    assert m.versions["peft"]
