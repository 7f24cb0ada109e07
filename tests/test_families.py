"""One test matrix over every model family vlx ships a YAML for: the family's tiny random-weight model (the real
config, model and processor classes) through the same adapter code as the real checkpoint.

Per family: zero-shot inference through the infer stage gives the task's labels; a batch gives what each prompt
alone gives; label scores equal a brute-force full forward per label (where wrong positions would show); a few-shot
prompt holds every demonstration's image and the model reads them (or the family refuses few-shot with its reason);
a training batch puts the loss on the answer tokens only and a LoRA step lowers it; the saved adapter reloads to the
same logits; the merged model gives the adapter's predictions. Every family runs without torchvision: the processors
that hold a video processor (Qwen2.5-VL, Qwen3-VL, InternVL, LLaVA-OneVision) are loaded without it where torchvision
does not import (vlx.models.processors; tests/test_tiny_models.py compares them with the whole processor where it
does). A family whose processor needs a package that does not import here is skipped with that reason.

Adding a family is one line in FAMILIES (and its tiny builder in vlx.models.tiny).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from vlx.__main__ import run_stage
from vlx.errors import ConfigError
from vlx.models import load_adapter
from vlx.models.batches import append_tokens, encode, on_model
from vlx.models.tiny import ensure_tiny_model, missing_requirements
from vlx.tasks.items import Example


@dataclass(frozen=True)
class Family:
    adapter: str  # the adapter class `model=hf` picks for it
    few_shot: bool = True  # several images per prompt


FAMILIES = {
    "llava_next": Family("LlavaNextAdapter"),
    "paligemma": Family("PaliGemmaAdapter", few_shot=False),
    "paligemma2": Family("PaliGemmaAdapter", few_shot=False),
    "gemma3": Family("HFAdapter"),
    "idefics3": Family("HFAdapter"),
    "llava_onevision": Family("HFAdapter"),
    "internvl": Family("HFAdapter"),
    "qwen2_5_vl": Family("HFAdapter"),
    "qwen3_vl": Family("HFAdapter"),
}

ANSWERS = ["Entailment", "Contradiction", "Neutral"]


def images(n: int, size: tuple[int, int] = (40, 30)) -> list[Image.Image]:
    colours = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (240, 240, 240), (20, 20, 20)]
    return [Image.new("RGB", size, colours[i % len(colours)]) for i in range(n)]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory) -> tuple[str, Path]:
    arch = request.param
    if (missing := missing_requirements(arch)) is not None:
        pytest.skip(f"tiny {arch}: {missing}")
    return arch, ensure_tiny_model(arch, tmp_path_factory.getbasetemp() / "families" / arch)


@pytest.fixture(scope="module")
def adapter(family):
    _, folder = family
    return load_adapter(str(folder), dtype="float32", device_map="cpu", compile=False)


def prompts_of(adapter, texts: list[str]) -> list[str]:
    return [adapter.render_prompt(Example(f"q{i}", None, t, None), f"Is '{t}' true?") for i, t in enumerate(texts)]


TEXTS = ["Red.", "A blue one, far in the back of a long hall with many doors.", "Green"]
SIZES = [(56, 40), (30, 60), (90, 30)]


def test_the_tiny_build_is_small_and_deterministic(family, tmp_path):
    arch, folder = family
    again = ensure_tiny_model(arch, tmp_path / arch)
    assert (again / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    assert (folder / "model.safetensors").stat().st_size < 2.2e6


def test_model_hf_picks_the_family_class(family, adapter):
    assert type(adapter).__name__ == FAMILIES[family[0]].adapter


def test_zero_shot_inference_gives_the_task_labels(family, make_cfg, tmp_path):
    """The infer stage end to end (score, then the explanation generated after the chosen label)."""
    arch, _ = family
    summary = run_stage(
        make_cfg(
            "model=tiny",
            f"model.tiny={arch}",
            "task=shapes",
            "task.limit=4",
            "batch_size=2",
            "decode=score_then_explain",
            "generation.max_new_tokens=4",
        )
    )
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert summary["items"] == 4 and summary["parsed"] == 1.0
    assert all(r["pred"] in ("entailment", "contradiction", "neutral") for r in rows)
    assert all(r["raw"].lower().startswith(r["pred"] + ".") for r in rows)
    assert all(abs(sum(r["scores"].values()) - 1) < 1e-5 for r in rows)


def test_a_batch_gives_what_each_prompt_alone_gives(adapter):
    prompts = prompts_of(adapter, TEXTS)
    pictures = [images(1, size)[0] for size in SIZES]
    settings = {"do_sample": False, "max_new_tokens": 6, "min_new_tokens": 6}
    together = adapter.generate(prompts, pictures, **settings).texts
    alone = [adapter.generate([p], [i], **settings).texts[0] for p, i in zip(prompts, pictures, strict=True)]
    assert together == alone
    assert len(set(together)) > 1  # the prompts and images are read: not one text for all
    scored = adapter.score(prompts, pictures, ANSWERS)
    for row, (p, i) in zip(scored, zip(prompts, pictures, strict=True), strict=True):
        single = adapter.score([p], [i], ANSWERS)[0]
        assert all(abs(row[a] - single[a]) < 1e-5 for a in ANSWERS)


def brute_force_scores(adapter, prompt: str, image: Image.Image) -> dict[str, float]:
    """Per answer one forward over [prompt, answer] (no cache, no padding, the model's own positions)."""
    tokenizer = adapter.processor.tokenizer
    totals = []
    for answer in ANSWERS:
        ids = tokenizer(adapter.answer_prefix + answer, add_special_tokens=False)["input_ids"]
        inputs = append_tokens(
            encode(adapter.processor, [prompt], [image]), [ids], tokenizer.pad_token_id, adapter.answer_token_type
        )
        with torch.inference_mode():
            logits = adapter.model(**on_model(adapter.model, inputs)).logits[0].float()
        logps = torch.log_softmax(logits[-len(ids) - 1 : -1], dim=-1)
        totals.append(sum(logps[k, t] for k, t in enumerate(ids)))
    probs = torch.softmax(torch.stack(totals), dim=0).tolist()
    return dict(zip(ANSWERS, probs, strict=True))


def test_label_scores_equal_a_full_forward_per_label(adapter):
    prompts = prompts_of(adapter, TEXTS)
    pictures = [images(1, size)[0] for size in SIZES]
    scored = adapter.score(prompts, pictures, ANSWERS)
    for row, prompt, picture in zip(scored, prompts, pictures, strict=True):
        expected = brute_force_scores(adapter, prompt, picture)
        assert all(abs(row[a] - expected[a]) < 1e-4 for a in ANSWERS), (row, expected)
    assert scored[0] != scored[1]


def test_few_shot_prompts_hold_every_demonstration_image(family, adapter, make_cfg):
    arch, _ = family
    if not FAMILIES[arch].few_shot:
        with pytest.raises(ConfigError, match=r"shots=2: .* 1 image\(s\) per prompt"):
            run_stage(make_cfg("model=tiny", f"model.tiny={arch}", "task=shapes", "task.limit=2", "shots=2"))
        return
    demos = [("Is it red?", "Entailment. It is red."), ("Is it blue?", "Contradiction. It is green.")]
    query = Example("q", None, "There is a red circle.", None)
    prompt = adapter.render_prompt(query, "Is it a circle?", demos)
    assert prompt.count(adapter.processor.image_token) == 3
    one = encode(adapter.processor, [adapter.render_prompt(query, "Is it a circle?")], images(1))
    three = encode(adapter.processor, [prompt], images(3))
    config = adapter.model.config
    token = getattr(config, "image_token_id", None)
    token = token if token is not None else config.image_token_index
    # (LLaVA-OneVision shows several images at its base resolution only: fewer tokens each than one image alone)
    assert int((three["input_ids"] == token).sum()) > int((one["input_ids"] == token).sum())
    # each demonstration's image reaches the model: another image in its place, other logits at the end
    with torch.inference_mode():
        last = adapter.model(**on_model(adapter.model, three)).logits[0, -1]
        for place in (0, 1):
            pictures = images(3)
            pictures[place] = images(5)[4]
            swapped = adapter.model(**on_model(adapter.model, encode(adapter.processor, [prompt], pictures)))
            assert not torch.allclose(last, swapped.logits[0, -1])


def answer_positions(batch) -> torch.Tensor:
    return batch["labels"] != -100


def test_training_batches_put_the_loss_on_the_answer_only(adapter):
    targets = ["Entailment. The circle is red.", "Neutral. Cannot tell."]
    batch = adapter.training_batch(images(2), ["Is it red?", "Is it a dog?"], targets)
    tokenizer = adapter.processor.tokenizer
    for row, ids, target in zip(answer_positions(batch), batch["labels"], targets, strict=True):
        text = tokenizer.decode(ids[row], skip_special_tokens=True)
        assert text.strip().startswith(target)  # the answer (and what closes the turn), nothing of the prompt
        assert len(text.strip()) < len(target) + 8


@pytest.fixture(scope="module")
def trained(adapter, tmp_path_factory):
    """A LoRA adapter after a few SGD steps on one training batch: (peft model, batch, losses, saved folder)."""
    from peft import LoraConfig, get_peft_model

    base = copy.deepcopy(adapter.model)
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=r".*(language_model|text_model).*\.(q|v)_proj", init_lora_weights=False
    )  # (random B: the first step moves the loss already)
    model = get_peft_model(base, lora)
    batch = adapter.training_batch(images(2), ["Is it red?", "Is it a dog?"], ["Entailment. Red.", "Neutral. No."])
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    losses = []
    model.train()
    for _ in range(3):
        loss = model(**batch).loss
        losses.append(float(loss))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(folder)
    return model, batch, losses, folder


def test_a_lora_step_lowers_the_loss_of_the_answer_tokens(adapter, trained):
    model, batch, losses, _ = trained
    assert losses[-1] < losses[0]
    # the model's loss is the mean cross-entropy over the answer positions alone
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
    labels = batch["labels"]
    shifted, targets = logits[:, :-1], labels[:, 1:]
    keep = targets != -100
    manual = torch.nn.functional.cross_entropy(shifted[keep], targets[keep])
    with torch.no_grad():
        assert abs(float(model(**batch).loss) - float(manual)) < 1e-4


def test_the_adapter_reloads_to_the_same_logits(family, trained):
    model, batch, _, folder = trained
    reloaded = load_adapter(str(family[1]), dtype="float32", device_map="cpu", compile=False, adapter=str(folder))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        assert torch.allclose(model(**inputs).logits, reloaded.model(**inputs).logits, atol=1e-5)


def test_the_merged_model_predicts_what_the_adapter_does(family, adapter, trained, tmp_path):
    _, folder = family
    with_adapter = load_adapter(str(folder), dtype="float32", device_map="cpu", compile=False, adapter=str(trained[3]))
    merged = with_adapter.model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    with_adapter.processor.save_pretrained(tmp_path / "merged")
    prompts = prompts_of(adapter, TEXTS)
    pictures = [images(1, size)[0] for size in SIZES]
    settings = {"do_sample": False, "max_new_tokens": 6, "min_new_tokens": 6}
    expected = (
        load_adapter(str(folder), dtype="float32", device_map="cpu", compile=False, adapter=str(trained[3]))
        .generate(prompts, pictures, **settings)
        .texts
    )
    again = load_adapter(str(tmp_path / "merged"), dtype="float32", device_map="cpu", compile=False)
    assert again.generate(prompts, pictures, **settings).texts == expected
    assert expected != adapter.generate(prompts, pictures, **settings).texts  # the adapter changed the answers


@pytest.mark.parametrize("arch", ["idefics3", "gemma3"])
def test_the_stages_run_a_generic_family_end_to_end(make_cfg, tmp_path, arch):
    """A family without a class of its own, through the stages themselves: QLoRA on its 4-bit base (the Trainer,
    the collator's answer-only labels), inference with the adapter (score, then explanation), the merge, and the
    merged model's inference giving the adapter's predictions."""
    model = ["model=tiny", f"model.tiny={arch}"]
    train = [
        "task=shapes",
        "task.split=train",
        "task.limit=8",
        "lora=r64_lm",
        "finetune.per_device_batch_size=4",
        "finetune.gradient_accumulation_steps=1",
        "finetune.max_steps=2",
        "finetune.save_strategy=no",
        "finetune.logging_steps=1",
    ]
    metrics = run_stage(make_cfg("stage=finetune", *model, *train, "quant=nf4", run_dir=tmp_path / "ft"))
    assert metrics["steps"] == 2 and metrics["first_loss"] > 0
    adapter = tmp_path / "ft" / "adapter"
    infer = [
        "task=shapes",
        "task.limit=4",
        "decode=score_then_explain",
        "generation.max_new_tokens=4",
        "model.dtype=float32",
    ]
    run_stage(make_cfg(*model, f"model.adapter={adapter}", *infer, run_dir=tmp_path / "with_adapter"))
    run_stage(
        make_cfg("stage=merge", *model, f"model.adapter={adapter}", "model.dtype=float32", run_dir=tmp_path / "m")
    )
    run_stage(make_cfg(*model, f"model.checkpoint={tmp_path / 'm' / 'merged'}", *infer, run_dir=tmp_path / "merged"))

    def rows(run: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / run / "predictions.jsonl").read_text().splitlines()]

    with_adapter, merged = rows("with_adapter"), rows("merged")
    assert [r["pred"] for r in merged] == [r["pred"] for r in with_adapter]
    assert [r["raw"] for r in merged] == [r["raw"] for r in with_adapter]
    for a, b in zip(with_adapter, merged, strict=True):
        assert all(abs(a["scores"][k] - b["scores"][k]) < 1e-4 for k in a["scores"])
