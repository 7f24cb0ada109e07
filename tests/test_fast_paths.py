"""vlx's fast paths run only for the architectures on `vlx.models.fast.ALLOWED`, and each entry is backed here: on
its tiny model in float32, vlx's prefill and its label scoring give what plain transformers gives (the model loaded
with transformers' own attention, `generate` and a cached continuation per label), token for token. The compiled
variants of the same entries are compared in tests/test_fast_decode.py (parametrized over FAST_MODELS)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

from vlx import compat
from vlx.errors import ConfigError
from vlx.models import fast, load_adapter
from vlx.models.batches import encode
from vlx.models.fast import prefill
from vlx.models.fast import prefill_scoring as fast_scoring
from vlx.models.hf import resolve_compile
from vlx.models.loading import resolve_attention
from vlx.models.tiny import ensure_tiny_model
from vlx.tasks.items import Example

# allow-list entry -> the tiny model whose equality tests back it
FAST = {
    "llava_next/mistral": "llava_next",
    "paligemma/gemma": "paligemma",
    "internvl/qwen2": "internvl",
    "llava_onevision/qwen2": "llava_onevision",
    "idefics3/llama": "idefics3",
    "gemma3/gemma3_text": "gemma3",
}
# the same, as model settings (the family's own tiny YAML where there is one)
OWN_YAML = {"llava_next": "tiny_llava", "paligemma": "tiny_paligemma"}
FAST_MODELS = {
    tiny: [f"model={OWN_YAML[tiny]}"] if tiny in OWN_YAML else ["model=tiny", f"model.tiny={tiny}"]
    for tiny in FAST.values()
}


def test_every_allowed_architecture_has_its_equality_tests():
    assert set(FAST) == set(fast.ALLOWED)


def test_every_family_of_the_matrix_is_allowed_or_refused_with_its_reason(tmp_path):
    """Each tiny architecture vlx builds is on the allow-list (with the tests above) or refused with a reason, and a
    refused one resolves to transformers' own attention, uncompiled, and is refused `model.compile=true`."""
    from vlx.models.loading import read_config
    from vlx.models.tiny import TINY_ARCHITECTURES

    for tiny in TINY_ARCHITECTURES:
        architecture = fast.architecture(read_config(str(ensure_tiny_model(tiny, tmp_path / tiny))))
        assert (architecture in fast.ALLOWED) != (architecture in fast.REFUSED), architecture
        if architecture in fast.REFUSED:
            assert len(fast.REFUSED[architecture]) > 20
            assert resolve_attention("auto", architecture) is None and resolve_compile("auto", architecture) is False
            if architecture not in fast.STATIC_DECODE:
                with pytest.raises(ConfigError, match=r"model.compile=true: .*\(Gemma 2 caps"):
                    resolve_compile(True, architecture)


@pytest.fixture(scope="module", params=sorted(FAST))
def pair(request, tmp_path_factory):
    """(vlx's adapter with its fast paths, the same checkpoint with transformers' own attention and code)."""
    folder = ensure_tiny_model(FAST[request.param], tmp_path_factory.getbasetemp() / "fast" / request.param)
    options = {"dtype": "float32", "device_map": "cpu", "compile": False}
    ours, plain = load_adapter(str(folder), **options), load_adapter(str(folder), attn_implementation="sdpa", **options)
    assert fast.model_architecture(ours.model) == request.param
    return ours, plain


TEXTS = ["Red.", "A blue one, far in the back of a long hall with many doors.", "Green"]


def batch(adapter):
    prompts = [adapter.render_prompt(Example(f"q{i}", None, t, None), f"Is '{t}' true?") for i, t in enumerate(TEXTS)]
    colours = [(200, 30, 30), (30, 30, 200), (30, 200, 30)]
    pictures = [Image.new("RGB", size, c) for size, c in zip([(56, 40), (30, 60), (90, 30)], colours, strict=True)]
    return prompts, pictures


@pytest.mark.parametrize("static", [False, True])
def test_fast_generation_equals_transformers_generate(pair, static):
    ours, plain = pair
    prompts, pictures = batch(ours)
    settings = {"do_sample": False, "max_new_tokens": 8, "min_new_tokens": 8}
    if static:
        settings["cache_implementation"] = "static"
    inputs = encode(ours.processor, prompts, pictures)
    own_prefill = prefill.applies(ours.model, inputs, settings)
    assert own_prefill == ("token_type_ids" not in inputs)  # PaliGemma's prefix attends both ways: transformers'
    assert not prefill.applies(plain.model, inputs, settings)
    got = ours.generate(prompts, pictures, **settings)
    expected = plain.generate(prompts, pictures, **settings)
    assert got.texts == expected.texts and len(set(got.texts)) > 1
    assert got.prompt_tokens == expected.prompt_tokens


def test_fast_scores_equal_transformers_scores(pair):
    ours, plain = pair
    prompts, pictures = batch(ours)
    answers = ["Entailment", "Contradiction", "Neutral"]
    inputs = encode(ours.processor, prompts, pictures)
    assert fast_scoring.applies(ours.model, inputs) == ("token_type_ids" not in inputs)
    assert not fast_scoring.applies(plain.model, inputs)
    got, expected = ours.score(prompts, pictures, answers), plain.score(prompts, pictures, answers)
    for row, want in zip(got, expected, strict=True):
        assert all(abs(row[a] - want[a]) < 1e-5 for a in answers), (row, want)


@pytest.mark.parametrize("config", [Qwen2_5_VLConfig, Qwen3VLConfig])
def test_m_rope_models_get_no_fast_path(config):
    """Qwen-VL's language model takes 3-D positions (time, height, width): vlx's 2-D `position_ids` would be
    copied into all three planes. So none of the fast paths is chosen for it, and asking for one is refused."""
    architecture = fast.architecture(config())
    assert not fast.allowed(architecture)
    assert resolve_attention("auto", architecture) is None  # transformers' own choice
    with pytest.raises(ConfigError, match="proven for"):
        resolve_attention("sdpa_grouped", architecture)
    assert resolve_compile("auto", architecture) is False
    # model.compile=true: transformers' static cache and compiled decode step alone (tests/test_fast_decode.py)
    assert architecture in fast.STATIC_DECODE and resolve_compile(True, architecture) is True


def test_allowed_models_default_to_vlx_attention(pair):
    ours, plain = pair
    config = ours.model.config.get_text_config(decoder=True)
    assert compat.attention_implementation(config) == "sdpa_grouped"
    assert compat.attention_implementation(plain.model.config.get_text_config(decoder=True)) == "sdpa"
    assert torch.cuda.is_available() or resolve_compile("auto", fast.model_architecture(ours.model)) is False
