"""Each assumption `vlx.compat` makes about transformers' internals, checked against the installed release: a
release that changes one fails here, naming it, rather than somewhere inside a run."""

from __future__ import annotations

import inspect

import pytest
import torch
from PIL import Image
from transformers import AttentionInterface, CompileConfig, TrainingArguments

from vlx import compat
from vlx.models import load_adapter
from vlx.models.batches import encode
from vlx.models.fast import attention
from vlx.models.tiny import ensure_tiny_model
from vlx.tasks.items import Example


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    folder = ensure_tiny_model("llava_next", tmp_path_factory.getbasetemp() / "compat" / "llava_next")
    return load_adapter(str(folder), dtype="float32", device_map="cpu", compile=False)


def inputs_of(adapter):
    prompt = adapter.render_prompt(Example("q", None, "Red.", None), "Is it red?")
    return encode(adapter.processor, [prompt], [Image.new("RGB", (40, 30), (200, 30, 30))])


def test_the_cache_argument_is_a_forward_keyword_of_the_model_and_of_its_decoder_blocks(llava):
    name = compat.cache_argument(llava.model)
    assert name in inspect.signature(type(llava.model).forward).parameters
    layer = llava.model.model.language_model.layers[0]
    assert name in compat.CACHE_KEYWORDS and name in inspect.signature(type(layer).forward).parameters
    with torch.no_grad():
        out = llava.model(**inputs_of(llava), use_cache=True)
    assert compat.output_cache(out) is not None


def test_decoder_blocks_get_their_cache_as_a_keyword(llava):
    """`route_cache_free_calls` tells calls apart by that keyword: a block run with a cache must receive it as one
    (and None without)."""
    layer = llava.model.model.language_model.layers[0]
    seen = []
    original = layer.forward

    def spy(*args, **kwargs):
        seen.append(any(kwargs.get(k) is not None for k in compat.CACHE_KEYWORDS))
        return original(*args, **kwargs)

    layer.forward = spy
    try:
        with torch.no_grad():
            llava.model(**inputs_of(llava), use_cache=True)
            llava.model(**inputs_of(llava), use_cache=False)
    finally:
        layer.forward = original
    assert seen == [True, False]


def test_extra_forward_keywords_reach_the_attention_function(llava):
    """vlx's cache-free prefill hands `kv_sink` and `tail_mask` to its attention function through the model's
    forward keywords."""
    received = []

    def probe(module, query, key, value, attention_mask, **kwargs):
        received.append(kwargs.get("vlx_probe"))
        return attention.grouped_sdpa_attention(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("vlx_probe", probe)
    text_config = llava.model.config.get_text_config(decoder=True)
    before = text_config._attn_implementation
    llava.model.set_attn_implementation({"text_config": "vlx_probe"})
    try:
        with torch.no_grad():
            llava.model(**inputs_of(llava), use_cache=False, vlx_probe="here")
    finally:
        llava.model.set_attn_implementation({"text_config": before})
    assert received and set(received) == {"here"}


def test_the_bitsandbytes_quantizer_says_whether_it_compiles(tmp_path_factory):
    from transformers import BitsAndBytesConfig

    folder = ensure_tiny_model("paligemma", tmp_path_factory.getbasetemp() / "compat" / "paligemma")
    adapter = load_adapter(
        str(folder),
        dtype="float32",
        device_map="cpu",
        compile=False,
        quantization=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
    )
    quantizer = adapter.model.hf_quantizer
    assert quantizer.is_compileable is False  # transformers' own answer, which allow_quantized_compile overrides
    compat.allow_quantized_compile(adapter.model)
    assert adapter.model.hf_quantizer is quantizer and quantizer.is_compileable is True


def test_compile_config_has_the_switch_for_compiling_off_the_gpu():
    assert hasattr(CompileConfig(), "_compile_all_devices")
    assert compat.compile_config_for(torch.device("cpu"))._compile_all_devices is True


def test_training_arguments_count_gpus_in_n_gpu(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    assert hasattr(args, "_n_gpu")
    compat.train_on_one_gpu(args)
    assert args.n_gpu == 1


def test_a_loaded_config_names_its_attention(llava):
    text_config = llava.model.config.get_text_config(decoder=True)
    assert compat.attention_implementation(text_config) == "sdpa_grouped"  # llava_next/mistral: on the allow-list
    assert compat.attention_implementation(llava.model.config.vision_config) in ("sdpa", "sdpa_grouped")
