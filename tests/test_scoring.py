"""Label probabilities from one shared prefill: equal to scoring each answer with its own full forward, independent
of batching, and through the infer stage into predictions (scores) and metrics (AUROC)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import meme_items, write_memes
from hydra.utils import instantiate
from PIL import Image

from vlx.__main__ import run_stage

ANSWERS = ["Entailment", "Contradiction", "Neutral"]


@pytest.fixture(scope="module", params=["tiny_llava", "tiny_paligemma"])
def adapter(request):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from vlx.__main__ import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"model={request.param}", "model.dtype=float32"])  # exact comparisons
    GlobalHydra.instance().clear()
    return instantiate(cfg.model, _partial_=True)(quantization=None)


def brute_force(adapter, prompt: str, image: Image.Image) -> dict[str, float]:
    """Each answer scored with its own full forward over prompt + answer (batch of one, no cache)."""
    totals = {}
    for answer in ANSWERS:
        inputs = adapter.processor(images=[image], text=[prompt], return_tensors="pt")
        inputs.pop("labels", None)
        ids = adapter.processor.tokenizer(adapter.answer_prefix + answer, add_special_tokens=False)["input_ids"]
        n = inputs["input_ids"].shape[1]
        inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([ids])], dim=1)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        if "token_type_ids" in inputs:
            inputs["token_type_ids"] = torch.cat(
                [inputs["token_type_ids"], torch.ones(1, len(ids), dtype=torch.long)], 1
            )
        inputs = inputs.to(adapter.model.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(adapter.model.dtype)
        with torch.no_grad():
            logp = torch.log_softmax(adapter.model(**inputs).logits[0].float(), dim=-1)
        totals[answer] = sum(logp[n - 1 + j, t].item() for j, t in enumerate(ids))
    probs = torch.softmax(torch.tensor(list(totals.values())), dim=0).tolist()
    return dict(zip(ANSWERS, probs, strict=True))


def prompt_for(adapter, text: str) -> str:
    from vlx.tasks.items import Example

    return adapter.render_prompt(Example("q", None, text, None), f"Is '{text}' true?")


def test_shared_prefill_equals_a_full_forward_per_answer(adapter):
    image = Image.new("RGB", (56, 40), (200, 30, 30))
    prompt = prompt_for(adapter, "There is a red circle.")
    (scored,) = adapter.score([prompt], [image], ANSWERS)
    expected = brute_force(adapter, prompt, image)
    assert sum(scored.values()) == pytest.approx(1.0)
    for answer in ANSWERS:
        assert scored[answer] == pytest.approx(expected[answer], rel=1e-4, abs=1e-6)


def test_scores_do_not_depend_on_batching(adapter):
    images = [
        Image.new("RGB", size, colour)
        for size, colour in [((56, 40), (200, 30, 30)), ((30, 60), (30, 30, 200)), ((50, 50), (30, 160, 40))]
    ]
    prompts = [prompt_for(adapter, t) for t in ["A red one.", "There is a blue square in the middle.", "Green."]]
    together = adapter.score(prompts, images, ANSWERS)
    for prompt, image, row in zip(prompts, images, together, strict=True):
        (alone,) = adapter.score([prompt], [image], ANSWERS)
        for answer in ANSWERS:
            assert row[answer] == pytest.approx(alone[answer], rel=1e-4, abs=1e-6)


def test_meme_label_scoring_gives_auroc(make_cfg, tmp_path):
    write_memes(tmp_path / "memes", "dev_seen", meme_items(8))
    cfg = make_cfg(
        "model=tiny_llava",
        "task=meme",
        f"task.data_dir={tmp_path / 'memes'}",
        "decode=score",
        "eval_after_infer=true",
        "eval.resamples=50",
    )
    run_stage(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    for row in rows:
        assert set(row["scores"]) == {"not offensive", "offensive"}
        assert sum(row["scores"].values()) == pytest.approx(1.0)
        assert row["pred"] == max(row["scores"], key=row["scores"].get)  # every item gets a label
        assert row["raw"] == row["pred"].capitalize() + "."
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["auroc"] is not None and metrics["unparsed_rate"] == 0


@pytest.mark.parametrize("model", ["tiny_llava", "tiny_paligemma"])
def test_score_then_explain_states_the_label_then_explains(make_cfg, tmp_path, model):
    cfg = make_cfg(
        f"model={model}", "task=shapes", "task.limit=3", "decode=score_then_explain", "generation.max_new_tokens=6"
    )
    run_stage(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        stated = row["pred"].capitalize() + "."
        assert row["raw"].startswith(stated)
        assert row["explanation"] == row["raw"][len(stated) :].strip()


def test_padding_to_a_multiple_changes_no_score(adapter):
    """Compiled models pad the batch to a multiple of 64 tokens (right for LLaVA-NeXT's maskless prefill, left for
    PaliGemma's prefix); the probabilities stay the same."""
    from vlx.models.label_scoring import score_answers

    images = [Image.new("RGB", (56, 40), (200, 30, 30)), Image.new("RGB", (30, 60), (30, 30, 200))]
    prompts = [prompt_for(adapter, t) for t in ["A red one.", "There is a blue square in the middle."]]
    answers = [adapter.answer_prefix + a for a in ANSWERS]
    plain = score_answers(adapter.model, adapter.processor, prompts, images, answers)
    padded = score_answers(adapter.model, adapter.processor, prompts, images, answers, pad_to_multiple_of=64)
    for row, padded_row in zip(plain, padded, strict=True):
        for answer in answers:
            assert padded_row[answer] == pytest.approx(row[answer], rel=1e-4, abs=1e-6)


def test_one_forward_scoring_equals_a_cache_and_continuations(adapter):
    """LLaVA-NeXT scores every answer in one cache-free forward (answers as a masked tail after right-padded
    prompts); the log-likelihoods equal those of a left-padded prefill with one continuation per answer, for answers
    of different token counts and prompts of different lengths."""
    import copy

    from vlx.models.batches import encode
    from vlx.models.fast import prefill_scoring as fast_scoring

    if "token_type_ids" in adapter.encode([prompt_for(adapter, "x")], [Image.new("RGB", (30, 30))]):
        pytest.skip("PaliGemma's prefix attends both ways: it always scores on a cache")
    images = [
        Image.new("RGB", (56, 40), (200, 30, 30)),
        Image.new("RGB", (30, 60), (30, 30, 200)),
        Image.new("RGB", (90, 30), (30, 200, 30)),
    ]
    prompts = [prompt_for(adapter, t) for t in ["Red.", "A blue one, far in the back of a long hall.", "Green"]]
    tokenizer = adapter.processor.tokenizer
    answer_ids = [
        tokenizer(a, add_special_tokens=False)["input_ids"]
        for a in ["yes", "no it is not", "maybe, though nobody can say for sure"]
    ]
    assert len({len(ids) for ids in answer_ids}) == 3 and max(len(ids) for ids in answer_ids) > 4
    inputs = encode(adapter.processor, prompts, images)
    with torch.no_grad():
        one = fast_scoring.score_in_one_forward(
            adapter.model, copy.copy(inputs), answer_ids, 64, tokenizer.pad_token_id
        )
        cached = fast_scoring.score_on_a_cache(adapter.model, copy.copy(inputs), answer_ids)
    assert one.shape == (3, 3)
    assert torch.allclose(one, cached, atol=1e-4), (one, cached)
    assert (one[0] != one[1]).all()  # the rows are scored on their own prompts


def test_answers_are_tokenized_without_touching_the_shared_tokenizers_padding(adapter):
    """The loader thread encodes the next batch (padded) with the processor's tokenizer while the main thread
    tokenizes answers: those calls use a copy per thread, so the shared tokenizer's padding is never switched off
    under a batch being encoded (which once left a batch ragged)."""
    import threading

    from vlx.models.batches import token_ids

    tokenizer = adapter.processor.tokenizer
    tokenizer._tokenizer.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    before = tokenizer._tokenizer.padding
    ids = token_ids(tokenizer, ["Entailment", "Not offensive"])
    assert tokenizer._tokenizer.padding == before  # a plain tokenizer call would have turned padding off
    assert ids == [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(t)) for t in ("Entailment", "Not offensive")]
    other: list = []
    thread = threading.Thread(target=lambda: other.append(token_ids(tokenizer, ["Entailment"])))
    thread.start()
    thread.join()
    assert other == [ids[:1]]  # another thread's copy gives the same ids
