"""The benchmark scripts' own set-up, on the CPU: what they time must still compose and build with today's configs
and tasks (their figures come from a GPU; here only that they run). scripts/bench_finetune.py: every variant's
config composes, its training items are built as the script builds them (in the task's answer format), and one
variant trains for two steps on the tiny model through the script's own code."""

from __future__ import annotations

import importlib.util
import math
import sys

import pytest
from conftest import REPO
from hydra.utils import instantiate
from omegaconf import OmegaConf

from vlx.models.tiny import ensure_tiny_model


def load_script(name: str):
    """A script of scripts/ as a module (they are run as files, not imported as a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_scripts_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_finetune():
    return load_script("bench_finetune")


def expected_value(text: str):
    """An override's value as Hydra reads it (true/false, numbers, else the string)."""
    return OmegaConf.create(f"v: {text}").v


@pytest.mark.parametrize("model", ["paligemma", "qwen2_5_vl"])
def test_every_finetune_variant_composes_and_builds_its_items(bench_finetune, model, tmp_path):
    assert set(bench_finetune.MODELS) == set(bench_finetune.TINY) == {"paligemma", "qwen2_5_vl"}
    for name, overrides in bench_finetune.VARIANTS:
        cfg = bench_finetune.compose(model, tmp_path / "model", overrides)
        assert cfg.model.checkpoint == str(tmp_path / "model") and cfg.stage.name == "finetune", name
        for override in overrides:  # each setting the variant names is the one it runs with
            key, value = override.split("=", 1)
            if "." in key:
                assert OmegaConf.select(cfg, key) == expected_value(value), (name, override)
        assert bool(cfg.quant and cfg.quant.get("load_in_4bit")) == ("quant=nf4" in overrides), name
        ft = cfg.finetune
        items = bench_finetune.items_for(cfg, 2)
        assert len(items) == 2 * ft.per_device_batch_size * ft.gradient_accumulation_steps, name
    # what each variant learns: the label, then the explanation, in the shapes task's answer format
    # ("Entailment. The picture shows a black triangle."), not the bare explanation (finetune.target=explanation)
    task = instantiate(cfg.task)
    examples = {ex.id: ex for ex in task.examples()}
    for item in items:
        ex = examples[item.id]
        assert item.target == f"{ex.label.capitalize()}. {ex.explanations[0]}", item
        assert item.text == task.instruction(ex) == f"explain en {ex.text}" and item.image == ex.image
    assert len({item.target.split(".")[0] for item in items}) > 1  # more than one label among them


def test_a_finetune_variant_trains_on_the_tiny_model(bench_finetune, tmp_path):
    """Variant 3 (micro-batch 8, logits at the targets only) through the script's run_variant: two optimizer steps
    of 8 items on the tiny PaliGemma, on the CPU."""
    folder = ensure_tiny_model("paligemma", tmp_path / "paligemma")
    name, overrides = bench_finetune.VARIANTS[3]
    result = bench_finetune.run_variant("paligemma", folder, overrides, warmup=1, steps=1, workers=0)
    assert result["samples_per_s"] > 0 and result["text_tokens"] > 0, result
    assert math.isfinite(result["loss_first"]) and math.isfinite(result["loss_last"]), result
    assert result["loss_last"] < result["loss_first"], result  # lr 2e-4 on the same 16 items: the loss falls


@pytest.mark.parametrize("model", ["llava", "paligemma", "qwen2_5_vl"])
def test_every_infer_variant_composes(model, tmp_path):
    """scripts/bench_infer.py: each variant's overrides compose with each model's config, and its code-path switch
    is one the script knows."""
    bench = load_script("bench_infer")
    for name, overrides, batch, decode, _, what in bench.VARIANTS:
        cfg = bench.compose(model, tmp_path / "model", tmp_path / "csv", tmp_path / "images", 8, overrides)
        assert cfg.model.checkpoint == str(tmp_path / "model") and cfg.task.limit == 8, name
        assert decode in ("generate", "score") and batch >= 1, name
        with bench.switched(what):
            pass


def test_the_infer_floor_follows_the_model_and_the_batch(tmp_path):
    """The floor of scripts/bench_infer.py on LLaVA-v1.6-Mistral-7B's full-size architecture (built on the meta
    device: no weights): ~17.8 samples/s at batch 32 for 2,340 image tokens and 40 new tokens (the ~17 the GPU
    figures were compared with); a larger batch shares the decode's weight reads, label scoring has no decode."""
    import torch

    bench = load_script("bench_infer")
    full_size = load_script("full_size_model")
    tiny = ensure_tiny_model("llava_next", tmp_path / "llava_next")
    model_class, config, _ = full_size.llava_v16_mistral_7b(tiny)
    with torch.device("meta"):
        model = model_class(config)
    at_32 = bench.floor(model, 32, 2400, 2340, 40)
    assert 17.0 < at_32 < 18.5
    assert at_32 < bench.floor(model, 64, 2400, 2340, 40) < bench.floor(model, 32, 2400, 2340, 0)


def test_gemma3_full_size_architecture_and_its_floor(tmp_path):
    """scripts/full_size_model.py's gemma-3-4b: 4.3 B parameters (on the meta device), its processor gives 256 image
    tokens at 896 px, and the floor counts the vision tower over an image's 4,096 patches, not its 256 tokens."""
    import torch
    from PIL import Image

    bench, full_size = load_script("bench_infer"), load_script("full_size_model")
    model_class, config, processor = full_size.gemma_3_4b(ensure_tiny_model("gemma3", tmp_path / "gemma3"))
    with torch.device("meta"):
        model = model_class(config)
    assert 4.2e9 < sum(p.numel() for p in model.parameters()) < 4.4e9
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "A dog runs."}]}]
    batch = processor(
        text=[processor.apply_chat_template(turn, add_generation_prompt=True)],
        images=[Image.new("RGB", (500, 375))],
        return_tensors="pt",
    )
    assert int((batch["input_ids"] == config.image_token_index).sum()) == 256
    assert batch["pixel_values"].shape[-2:] == (896, 896)
    assert bench.vision_patches(config, 256) == 4096
    assert bench.floor(model, 32, 282, 256, 40) < bench.floor(model, 32, 282, 256 / 16, 40)  # the patches count


def test_gpu_busy_time_counts_overlapping_kernels_once():
    """bench_infer's GPU-busy fraction: the union of the kernels' intervals (two streams' overlapping kernels count
    once; CPU events not at all)."""
    from types import SimpleNamespace

    import torch

    bench = load_script("bench_infer")
    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU

    def event(start, end, device=cuda):
        return SimpleNamespace(time_range=SimpleNamespace(start=start, end=end), device_type=device)

    trace = SimpleNamespace(
        events=lambda: [event(0, 100), event(50, 150), event(300, 400), event(0, 1000, cpu), event(320, 350)]
    )
    assert bench.KernelTime(trace).seconds() == pytest.approx(250e-6)
    assert math.isnan(bench.KernelTime().seconds())


def test_the_judge_benchmark_judges_a_few_items_and_prints_its_table(monkeypatch, capsys):
    # scripts/bench_judge.py imports bench_eval from its own folder, as when it is run
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    bench = load_script("bench_judge")
    monkeypatch.setattr(
        sys,
        "argv",
        ["bench_judge.py", "--items", "4", "--batch-sizes", "2", "--decodes", "score", "--max-new-tokens", "2"],
    )
    bench.main()
    table = capsys.readouterr().out
    assert "| stage.decode | batch_size | items/s |" in table
    row = next(line for line in table.splitlines() if line.startswith("| score | 2 |"))
    assert float(row.split("|")[3]) > 0 and row.split("|")[5].strip() == "0"  # score decoding parses every verdict
