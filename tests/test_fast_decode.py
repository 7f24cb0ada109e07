"""The speed settings change no output: the grouped decode attention, prompt padding, and compiled decoding."""

from __future__ import annotations

import importlib.util
import json
from unittest import mock

import pytest
import torch
from conftest import SHARED_ESNLI
from helpers import esnli_from_shared
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from PIL import Image
from test_fast_paths import FAST_MODELS
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from vlx.__main__ import CONFIG_DIR, run_stage
from vlx.models.batches import pad_left
from vlx.models.fast import prefill
from vlx.models.fast.attention import grouped_sdpa_attention
from vlx.models.fast.compiling import compile_cache_free
from vlx.models.generation import generate_texts
from vlx.tasks.items import Example


class Heads(torch.nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


@pytest.mark.parametrize("kernel", ["matmul", "sdpa"])
@pytest.mark.parametrize("groups", [1, 4, 8])
@pytest.mark.parametrize("length", [1, 5])
def test_grouped_attention_equals_sdpa_under_a_padding_mask(groups, length, kernel):
    torch.manual_seed(0)
    batch, kv_heads, cached, dim = 3, 2, 11, 16
    query = torch.randn(batch, kv_heads * groups, length, dim)
    key, value = torch.randn(2, batch, kv_heads, cached, dim)
    mask = torch.ones(batch, 1, length, cached, dtype=torch.bool).tril(diagonal=cached - length)
    mask[1, ..., :4] = False  # a left-padded row
    mask[2, ..., :7] = False
    module = Heads(groups)
    expected, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    got, _ = grouped_sdpa_attention(module, query, key, value, mask, scaling=0.25, decode_kernel=kernel)
    assert got.shape == (batch, length, kv_heads * groups, dim)
    assert torch.allclose(got, expected, atol=1e-6)
    if length > 1:
        return  # (the float-mask check below needs rows with something to attend; length 5 has fully masked rows)
    # a float mask (0 where attended, a large negative number elsewhere) gives the same
    as_float = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    got, _ = grouped_sdpa_attention(module, query, key, value, as_float, scaling=0.25, decode_kernel=kernel)
    assert torch.allclose(got, expected, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(FAST_MODELS))  # the fast paths' allow-list (tests/test_fast_paths.py)
def test_compiled_cache_free_modules_give_the_same_logits(model):
    """Norms, MLPs and vision blocks compiled, and decoder blocks for calls without a cache (dynamic shapes): the
    same logits, for two batch shapes, with and without a cache."""
    from torch._dynamo.utils import counters

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*FAST_MODELS[model], "model.dtype=float32", "model.compile=false"])
    GlobalHydra.instance().clear()
    adapter = instantiate(cfg.model, _partial_=True)(quantization=None)
    images = [Image.new("RGB", (56, 40), (200, 30, 30)), Image.new("RGB", (30, 60), (30, 30, 200))]
    prompts = [adapter.render_prompt(Example("q", None, t, None), f"Is '{t}' true?") for t in ["Red.", "A blue one."]]
    batches = [adapter.encode(prompts, images), adapter.encode(prompts[:1], images[:1])]
    calls = [(b, cache) for b in batches for cache in (True, False)]  # blocks: eager with a cache, else compiled
    with torch.no_grad():
        eager = [adapter.model(**b, use_cache=cache).logits for b, cache in calls]
        torch._dynamo.reset()  # graphs compiled for another model of the same blocks (Qwen2's) would be reused
        counts = compile_cache_free(adapter.model)
        counters.clear()
        compiled = [adapter.model(**b, use_cache=cache).logits for b, cache in calls]
    kinds = " ".join(counts)
    assert "RMSNorm" in kinds and "MLP" in kinds and "DecoderLayer (without" in kinds
    assert "EncoderLayer" in kinds or "VisionLayer" in kinds  # the vision blocks
    assert counters["stats"]["unique_graphs"] >= 3, counters["stats"]  # blocks, norms/MLPs, vision blocks
    for e, c in zip(eager, compiled, strict=True):
        assert torch.allclose(e, c, rtol=1e-4, atol=1e-5)


def test_causal_attention_with_a_tail_equals_one_masked_sdpa():
    """`tail_mask`: the first positions attend causally (unmasked kernel), the tail under its own mask; the same as
    SDPA over the whole sequence with the combined mask."""
    torch.manual_seed(0)
    batch, heads, kv_heads, head, tail, dim = 2, 4, 2, 9, 4, 8
    total = head + tail
    query = torch.randn(batch, heads, total, dim)
    key, value = torch.randn(2, batch, kv_heads, total, dim)
    tail_mask = torch.rand(batch, 1, tail, total) > 0.4
    tail_mask[..., 0] = True  # every tail query sees something
    full = torch.ones(total, total, dtype=torch.bool).tril().expand(batch, 1, total, total).clone()
    full[:, :, head:] = tail_mask
    expected, _ = sdpa_attention_forward(Heads(heads // kv_heads), query, key, value, full, scaling=0.3)
    got, _ = grouped_sdpa_attention(Heads(heads // kv_heads), query, key, value, None, scaling=0.3, tail_mask=tail_mask)
    assert got.shape == (batch, total, heads, dim)
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("static", [False, True])
def test_vlx_prefill_generates_what_transformers_generate_does(static):
    """LLaVA-NeXT's prompts prefilled by vlx (right-padded, cache-free, keys and values sent to a dynamic or static
    cache) and `generate` going on from there: the same tokens as transformers' own generate, for a batch of
    prompts of different lengths and images of different sizes."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["model=tiny_llava", "model.dtype=float32", "model.compile=false"])
    GlobalHydra.instance().clear()
    adapter = instantiate(cfg.model, _partial_=True)(quantization=None)
    images = [
        Image.new("RGB", (56, 40), (200, 30, 30)),
        Image.new("RGB", (30, 60), (30, 30, 200)),
        Image.new("RGB", (90, 30), (30, 200, 30)),
    ]
    texts = ["Red.", "A blue one, far in the back of a long hall with many doors.", "Green"]
    prompts = [adapter.render_prompt(Example("q", None, t, None), f"Is '{t}' true?") for t in texts]
    settings = {"do_sample": False, "max_new_tokens": 10, "min_new_tokens": 10}
    if static:
        settings["cache_implementation"] = "static"
    ours = generate_texts(adapter.model, adapter.processor, prompts, images, pad_to_multiple_of=64, **settings)
    with mock.patch.object(prefill, "prefill_aware", lambda model: False):  # transformers' prefill
        theirs = generate_texts(adapter.model, adapter.processor, prompts, images, **settings)
    assert ours.texts == theirs.texts and len(set(ours.texts)) == 3
    assert ours.prompt_tokens == theirs.prompt_tokens and ours.new_tokens == theirs.new_tokens == 10


def test_pad_left_keeps_rows_right_aligned():
    inputs = {"input_ids": torch.tensor([[0, 5, 6], [7, 8, 9]]), "attention_mask": torch.tensor([[0, 1, 1], [1, 1, 1]])}
    padded = pad_left(dict(inputs), 4, pad_id=0)
    assert padded["input_ids"].tolist() == [[0, 0, 5, 6], [0, 7, 8, 9]]
    assert padded["attention_mask"].tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]
    assert pad_left(dict(padded), 4, pad_id=0)["input_ids"].shape == (2, 4)


def answers(make_cfg, tmp_path, name: str, *overrides: str) -> list[str]:
    out = tmp_path / name
    run_stage(
        make_cfg(
            "task=shapes",
            "task.limit=6",
            "batch_size=3",
            "generation.max_new_tokens=8",
            "model.dtype=float32",
            *overrides,
            run_dir=out,
        )
    )
    return [json.loads(line)["raw"] for line in (out / "predictions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("model", sorted(FAST_MODELS))
def test_grouped_attention_generates_what_sdpa_generates(make_cfg, tmp_path, model):
    stock = answers(make_cfg, tmp_path, "sdpa", *FAST_MODELS[model], "model.attn_implementation=sdpa")
    grouped = answers(make_cfg, tmp_path, "grouped", *FAST_MODELS[model], "model.attn_implementation=sdpa_grouped")
    assert grouped == stock and any(stock)


@pytest.fixture
def compiled_decode_steps(monkeypatch) -> list[int]:
    """Counts the decode steps that `generate` ran through transformers' compiled call (a spy: the real one runs)."""
    from transformers import PreTrainedModel

    calls: list[int] = []
    real = PreTrainedModel.get_compiled_call

    def spy(self, compile_config):
        calls.append(1)
        return real(self, compile_config)

    monkeypatch.setattr(PreTrainedModel, "get_compiled_call", spy)
    return calls


@pytest.mark.slow
def test_compiled_decoding_generates_what_eager_does(make_cfg, tmp_path, compiled_decode_steps):
    """model.compile=true: static cache, compiled decode step, prompts padded to 64 tokens (after label scoring)."""
    eager = answers(make_cfg, tmp_path, "eager", "model=tiny_llava", "model.compile=false", "decode=score_then_explain")
    assert not compiled_decode_steps  # eager decoding does not go through it
    compiled = answers(
        make_cfg, tmp_path, "compiled", "model=tiny_llava", "model.compile=true", "decode=score_then_explain"
    )
    assert compiled == eager and any(eager)
    assert compiled_decode_steps  # the decode steps ran compiled, not eagerly
    summary = json.loads((tmp_path / "compiled" / "summary.json").read_text())
    assert (
        summary["prompt_tokens_mean"]
        == json.loads((tmp_path / "eager" / "summary.json").read_text())["prompt_tokens_mean"]
    )  # padding is not counted as prompt


@pytest.mark.slow
@pytest.mark.parametrize("tiny", ["qwen2_5_vl", "qwen3_vl"])
def test_static_decoding_of_m_rope_models_generates_what_plain_does(make_cfg, tmp_path, compiled_decode_steps, tiny):
    """model.compile=true for a fast.STATIC_DECODE architecture: transformers' static cache and compiled decode step,
    prompts padded to 64 tokens, vlx's own modules left uncompiled; the same answers as plain `generate`."""
    from vlx.models import fast

    model = ["model=tiny", f"model.tiny={tiny}"]
    assert any(a.startswith(tiny) for a in fast.STATIC_DECODE)
    torch._dynamo.reset()
    plain = answers(make_cfg, tmp_path, "plain", *model, "model.compile=false")
    assert not compiled_decode_steps
    static = answers(make_cfg, tmp_path, "static", *model, "model.compile=true")
    assert static == plain and any(plain)
    assert compiled_decode_steps  # the decode steps ran compiled


@pytest.mark.slow
def test_static_decoding_compiles_once_for_prompts_of_several_widths():
    """A Qwen-VL static cache is one length for prompt widths up to it (`static_cache_length`): a batch of prompts
    128 tokens wide after one 64 wide decodes through the step compiled for the first, where a cache sized to each
    width compiles again (a run of many widths spent its time compiling: docs/PERFORMANCE.md)."""
    from torch._dynamo.utils import counters

    from vlx import compat
    from vlx.models.batches import STATIC_CACHE_MULTIPLE, static_cache_length

    if not compat.static_cache_ceiling():
        pytest.skip("this transformers sizes a static cache to each call (no max_cache_len)")
    assert static_cache_length(64, {"max_new_tokens": 8}) == static_cache_length(128, {"max_new_tokens": 8})
    assert static_cache_length(STATIC_CACHE_MULTIPLE, {"max_new_tokens": 1}) == 2 * STATIC_CACHE_MULTIPLE
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "config", overrides=["model=tiny", "model.tiny=qwen2_5_vl", "model.dtype=float32", "model.compile=true"]
        )
    GlobalHydra.instance().clear()
    adapter = instantiate(cfg.model, _partial_=True)(quantization=None)
    image = Image.new("RGB", (56, 40), (200, 30, 30))
    short, long = "Red.", " ".join(["a long hall with many doors"] * 12)
    settings = {"do_sample": False, "max_new_tokens": 6, "min_new_tokens": 6}
    widths, graphs = [], []
    torch._dynamo.reset()
    counters.clear()
    for text in (short, long, short):
        prompt = adapter.render_prompt(Example("q", None, text, None), f"Is '{text}' true?")
        inputs = adapter.encode([prompt], [image])
        widths.append(-(-inputs["input_ids"].shape[1] // 64) * 64)
        adapter.generate([prompt], [image], inputs=inputs, **settings)
        graphs.append(counters["stats"]["unique_graphs"])
    assert widths[0] < widths[1], widths  # two widths after padding to 64
    assert graphs[0] >= 1 and graphs[2] == graphs[1] == graphs[0], graphs  # compiled once, reused for both widths


@pytest.mark.gpu
def test_compiled_prefill_on_cuda_generates_what_transformers_does(make_cfg, tmp_path):
    """On a GPU: vlx's compiled cache-free prefill and one-forward scoring against transformers' own prefill and
    generate (sdpa, not compiled), float32: the same labels and explanations."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    theirs = answers(
        make_cfg,
        tmp_path,
        "hf",
        "model=tiny_llava",
        "model.compile=false",
        "model.attn_implementation=sdpa",
        "decode=score_then_explain",
    )
    ours = answers(make_cfg, tmp_path, "vlx", "model=tiny_llava", "model.compile=true", "decode=score_then_explain")
    assert ours == theirs and any(theirs)


@pytest.mark.slow
def test_compiled_nf4_decoding_generates_what_eager_does(make_cfg, tmp_path, compiled_decode_steps):
    """4-bit weights: transformers would not compile their decode step by itself (allow_quantized_compile)."""
    eager = answers(make_cfg, tmp_path, "eager", "model=tiny_llava", "quant=nf4", "model.compile=false")
    compiled = answers(make_cfg, tmp_path, "compiled", "model=tiny_llava", "quant=nf4", "model.compile=true")
    assert compiled == eager and any(eager)
    assert compiled_decode_steps  # the 4-bit model's decode steps ran compiled


def test_max_tiles_cuts_llava_image_tokens(make_cfg, tmp_path):
    if not SHARED_ESNLI.is_dir():
        pytest.skip("../shared/data/esnlive is not beside the repo")
    # images of several aspect ratios; the tiny LLaVA-NeXT grids are 1x2, 2x1 and 2x2 tiles
    csv_dir, image_dir, _ = esnli_from_shared(SHARED_ESNLI / "esnlive_test.csv", tmp_path / "esnli", limit=4)
    tokens = {}
    for tiles in ("null", 2, 1):
        out = tmp_path / f"tiles{tiles}"
        run_stage(
            make_cfg(
                "model=tiny_llava",
                "task=esnli",
                f"task.csv_dir={csv_dir}",
                f"task.image_dir={image_dir}",
                "task.split=test",
                "task.limit=4",
                "generation.max_new_tokens=4",
                f"model.max_tiles={tiles}",
                run_dir=out,
            )
        )
        summary = json.loads((out / "summary.json").read_text())
        assert len((out / "predictions.jsonl").read_text().splitlines()) == 4
        tokens[tiles] = summary["image_tokens_mean"]
    assert tokens["null"] > tokens[2] > tokens[1] > 0


def test_max_tiles_must_be_positive(make_cfg):
    from vlx.errors import ConfigError

    with pytest.raises(ConfigError, match="model.max_tiles=0"):
        run_stage(make_cfg("model=tiny_llava", "task=shapes", "task.limit=1", "model.max_tiles=0"))


@pytest.mark.parametrize("model", ["tiny_llava", "tiny_paligemma"])
def test_worker_processes_prepare_the_same_batches(make_cfg, tmp_path, model):
    in_thread = answers(make_cfg, tmp_path, "thread", f"model={model}", "loader_workers=0")
    in_workers = answers(make_cfg, tmp_path, "workers", f"model={model}", "loader_workers=2")
    assert in_workers == in_thread and any(in_thread)


def test_loader_workers_is_checked(make_cfg):
    from vlx.errors import ConfigError

    with pytest.raises(ConfigError, match="loader_workers=-1"):
        run_stage(make_cfg("model=tiny_llava", "task=shapes", "task.limit=1", "loader_workers=-1"))


def test_flash_attention_without_its_package_is_a_config_error(make_cfg):
    from vlx.errors import ConfigError

    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    with pytest.raises(ConfigError, match="needs the flash-attn package"):
        run_stage(
            make_cfg("model=tiny_llava", "task=shapes", "task.limit=1", "model.attn_implementation=flash_attention_2")
        )
