"""Label scoring for M-RoPE models from one prefill and a cached continuation per label (`vlx.models.fast.mrope`)
equals the plain path, one full forward per label (`vlx.models.label_scoring.score_per_answer`), on each architecture of
`vlx.models.fast.MROPE_SCORING`: tiny random-weight models in float32, a left-padded batch of prompts of different
lengths with one or two images of different grids each, answers of 1, 2 and 3 tokens, batch N equal to batch 1.

The batches are built here, token by token (an image's placeholder tokens, its pixel patches and grid), so the tests
need no processor: the Qwen-VL processors hold a video processor that transformers makes with torchvision. The
models are vlx's tiny checkpoints where those can be built (`vlx.models.tiny`), else the same architecture from a
config of the same shape written here (Qwen2-VL has no tiny checkpoint in vlx).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from transformers import (
    AutoModelForImageTextToText,
    BatchFeature,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from vlx import compat
from vlx.models import fast, label_scoring
from vlx.models.fast import mrope
from vlx.models.label_scoring import score_answers, score_per_answer
from vlx.models.tiny import ensure_tiny_model, missing_requirements
from vlx.models.tiny.qwen2_5_vl import qwen_tokenizer

# MROPE_SCORING entry -> its tiny architecture in vlx.models.tiny (None: built from `config` here only)
MODELS = {
    "qwen2_vl/qwen2_vl_text": None,
    "qwen2_5_vl/qwen2_5_vl_text": "qwen2_5_vl",
    "qwen3_vl/qwen3_vl_text": "qwen3_vl",
}
TOKENIZER = qwen_tokenizer()  # the tiny Qwen-VL models' tokenizer (Qwen's special tokens)
ANSWER_TEXTS = ["entailment", "no", "Yes"]  # 1, 2 and 3 tokens (`test_the_answers_differ_in_length`)
ANSWERS = [TOKENIZER(a, add_special_tokens=False)["input_ids"] for a in ANSWER_TEXTS]
# each prompt: text tokens, then (grid_thw of an image, text tokens after it) per image; different lengths, one or
# two images of different grids
PROMPTS = [
    ([311, 312, 313], [((1, 4, 4), [314, 315])]),
    ([316], [((1, 2, 6), [317, 318, 319, 320, 321, 322]), ((1, 6, 4), [323])]),
    ([324, 325, 326, 327, 328, 329, 330], [((1, 4, 2), [331, 332, 333, 334])]),
]


def config(architecture: str):
    """A config of the tiny checkpoints' shape (vlx/models/tiny): 64 wide, 2 layers each, grouped-query attention,
    the real patch, merge and M-RoPE settings, weights of std 0.2 (so outputs depend visibly on positions)."""
    tok = TOKENIZER
    ids = {
        "image_token_id": tok.image_token_id,
        "video_token_id": tok.video_token_id,
        "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
        "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
    }
    text = {
        "vocab_size": len(tok),
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "initializer_range": 0.2,
    }
    if architecture == "qwen2_vl/qwen2_vl_text":
        vision = {
            "depth": 2,
            "embed_dim": 64,
            "hidden_size": 64,
            "num_heads": 4,
            "mlp_ratio": 1,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "initializer_range": 0.2,
        }
        rope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}
        return Qwen2VLConfig(vision_config=vision, text_config={**text, "rope_parameters": rope}, **ids)
    if architecture == "qwen2_5_vl/qwen2_5_vl_text":
        vision = {
            "hidden_size": 64,
            "intermediate_size": 64,
            "depth": 2,
            "num_heads": 4,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
            "tokens_per_second": 2,
            "out_hidden_size": 64,
            "initializer_range": 0.2,
        }
        rope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]}
        return Qwen2_5_VLConfig(
            vision_config=vision, text_config={**text, "rope_parameters": rope}, tie_word_embeddings=False, **ids
        )
    vision = {
        "hidden_size": 64,
        "intermediate_size": 64,
        "depth": 2,
        "num_heads": 4,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": [0],
        "out_hidden_size": 64,
        "initializer_range": 0.2,
    }
    rope = {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [4, 2, 2], "mrope_interleaved": True}
    return Qwen3VLConfig(
        vision_config=vision,
        text_config={**text, "head_dim": 16, "rope_parameters": rope},
        tie_word_embeddings=True,
        **ids,
    )


CLASSES = {
    "qwen2_vl/qwen2_vl_text": Qwen2VLForConditionalGeneration,
    "qwen2_5_vl/qwen2_5_vl_text": Qwen2_5_VLForConditionalGeneration,
    "qwen3_vl/qwen3_vl_text": Qwen3VLForConditionalGeneration,
}


def test_the_answers_differ_in_length():
    assert [len(ids) for ids in ANSWERS] == [1, 2, 3]


def test_every_m_rope_scoring_architecture_has_its_equality_tests():
    assert set(MODELS) == set(fast.MROPE_SCORING)
    assert not set(fast.MROPE_SCORING) & set(fast.ALLOWED)  # vlx's other fast paths build 1-D positions


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request, tmp_path_factory):
    tiny = MODELS[request.param]
    if tiny is not None and missing_requirements(tiny) is None:
        folder = ensure_tiny_model(tiny, tmp_path_factory.getbasetemp() / "mrope" / tiny)
        built = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            built = CLASSES[request.param](config(request.param))
    built.eval()
    assert fast.model_architecture(built) == request.param
    return built


def ids_of(model) -> dict[str, int]:
    config = model.config
    return {
        "image": config.image_token_id,
        "start": config.vision_start_token_id,
        "end": config.vision_end_token_id,
        "pad": TOKENIZER.pad_token_id,
    }


def batch_of(model, prompts) -> BatchFeature:
    """A left-padded batch as the Qwen-VL processors make it: input_ids with each image's placeholder tokens
    (t * h * w / merge^2 of them), attention_mask, mm_token_type_ids (1 on image tokens), pixel_values (one row of
    channels x temporal x patch x patch values per patch, image after image) and image_grid_thw."""
    vision = model.config.vision_config
    merge, patch, temporal = vision.spatial_merge_size, vision.patch_size, vision.temporal_patch_size
    special = ids_of(model)
    rows, grids, pixels = [], [], []
    for text, images in prompts:
        row = list(text)
        for grid, after in images:
            count = grid[0] * grid[1] * grid[2]
            row += [special["start"], *[special["image"]] * (count // merge**2), special["end"], *after]
            grids.append(grid)
            # an image's pixels depend on it and its prompt only, so a prompt alone gets the same as in a batch
            generator = torch.Generator().manual_seed(sum(text) + 1000 * sum(after) + sum(grid))
            pixels.append(torch.randn(count, 3 * temporal * patch * patch, generator=generator))
        rows.append(row)
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([[special["pad"]] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return BatchFeature(
        {
            "input_ids": input_ids,
            "attention_mask": mask,
            "mm_token_type_ids": (input_ids == special["image"]).long(),
            "pixel_values": torch.cat(pixels),
            "image_grid_thw": torch.tensor(grids),
        }
    )


def plain(model, inputs) -> torch.Tensor:
    with torch.inference_mode():
        return score_per_answer(model, copy.copy(inputs), ANSWERS, ids_of(model)["pad"], 0)


def cached(model, inputs) -> torch.Tensor:
    assert mrope.applies(model, inputs)
    with torch.inference_mode():
        totals = mrope.score_on_a_cache(model, copy.copy(inputs), ANSWERS, ids_of(model)["pad"])
    assert totals is not None  # the prompt's positions are shared by every [prompt + answer] sequence
    return totals


def test_the_cached_path_equals_a_full_forward_per_label(model):
    inputs = batch_of(model, PROMPTS)
    assert inputs["attention_mask"].min() == 0 and len(set(inputs["image_grid_thw"].tolist()[0])) > 1
    got, want = cached(model, inputs), plain(model, inputs)
    assert got.shape == (len(PROMPTS), len(ANSWERS))
    assert (got - want).abs().max() < 1e-5, (got, want)
    assert (want[:, 1:] - want[:, :1]).abs().min() > 1e-3  # the labels' scores differ: a real comparison


def test_batch_n_equals_batch_1(model):
    together = cached(model, batch_of(model, PROMPTS))
    for i, prompt in enumerate(PROMPTS):
        alone = cached(model, batch_of(model, [prompt]))  # no padding; the same pixels (`batch_of`)
        assert (alone[0] - together[i]).abs().max() < 1e-5, (i, alone, together[i])


def positions_from_the_mask(inputs, answer_ids, pad_id):
    """What the issue forbids: 1-D token positions from the mask, copied into the three planes."""
    from vlx.models.batches import append_tokens

    def filled(batch):
        ones = batch["attention_mask"].long()
        return ((ones.cumsum(-1) - 1).clamp(min=0))[None].expand(3, -1, -1)

    width = inputs["input_ids"].shape[1]
    prompt = filled(inputs)
    rows = inputs["input_ids"].shape[0]
    follow = [
        filled(append_tokens(copy.copy(inputs), [ids] * rows, pad_id))[..., width : width + len(ids) - 1]
        for ids in answer_ids
    ]
    return prompt, follow


def test_positions_filled_from_2d_ones_would_fail_the_equality(model, monkeypatch):
    """The equality above is sensitive to the positions: the same path at 2-D positions copied into the three
    planes is far from the plain path."""
    inputs = batch_of(model, PROMPTS)
    monkeypatch.setattr(mrope, "positions_per_answer", lambda _m, i, a, p: positions_from_the_mask(i, a, p))
    wrong = cached(model, inputs)
    monkeypatch.undo()
    assert (wrong - plain(model, inputs)).abs().max() > 1e-3


def test_the_rope_index_is_the_models_own(model):
    """`compat.rope_index` calls the function the forward uses for a prompt without positions: its positions given
    explicitly give the same logits as none given."""
    inputs = batch_of(model, PROMPTS)
    positions = compat.rope_index(model)(inputs)
    assert positions.shape == (3, *inputs["input_ids"].shape)
    flat = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # 1-D token positions
    assert positions[1].ne(positions[2]).any()  # an image's rows and columns
    # the text after an image continues past its grid, not its token count: a 4x4 grid of 4 tokens spans 2 steps
    assert (positions[:, :, -1] <= flat[None, :, -1]).all() and (positions[:, :, -1] < flat[None, :, -1]).any()
    with torch.inference_mode():
        given = model(**inputs, position_ids=positions).logits
        own = model(**inputs).logits
    assert torch.equal(given, own)


def test_a_batch_without_images_takes_the_plain_path(model):
    """Text alone: the model positions it without its rope-index function, as the plain path lets it."""
    text = BatchFeature(
        {
            "input_ids": torch.tensor([[0, 11, 12], [13, 14, 15]]),
            "attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),
            "mm_token_type_ids": torch.zeros(2, 3, dtype=torch.long),
        }
    )
    assert not mrope.applies(model, text)
    assert mrope.applies(model, batch_of(model, PROMPTS))


def test_architectures_off_the_list_take_the_plain_path(model, monkeypatch):
    monkeypatch.setattr(fast, "MROPE_SCORING", {})
    monkeypatch.setattr(mrope, "MROPE_SCORING", {})
    assert not mrope.applies(model, batch_of(model, PROMPTS))


def test_score_answers_takes_the_cached_path_with_one_vision_pass(model, monkeypatch):
    """Through `score_answers` (as the adapters call it): one vision-tower pass for three labels where the plain path
    makes three, and the same probabilities."""
    inputs = batch_of(model, PROMPTS)
    processor = SimpleNamespace(tokenizer=TOKENIZER)  # what `score_answers` reads of a processor given the batch
    passes = []

    def run():
        passes.clear()
        return score_answers(model, processor, [], [], ANSWER_TEXTS, inputs=copy.copy(inputs)), len(passes)

    hook = model.model.visual.register_forward_hook(lambda *_: passes.append(1))
    try:
        got, got_passes = run()
        monkeypatch.setattr(label_scoring.mrope, "MROPE_SCORING", {})  # off the list: the plain path
        want, want_passes = run()
    finally:
        hook.remove()
    assert (got_passes, want_passes) == (1, len(ANSWER_TEXTS))
    for row, expected in zip(got, want, strict=True):
        assert max(abs(row[a] - expected[a]) for a in ANSWER_TEXTS) < 1e-5, (row, expected)
