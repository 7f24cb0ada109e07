"""`vlx.models.fast.vision_windows`: the vision towers of Qwen2-VL-style models attend within each image (and each
window) in a few batched SDPA calls instead of one per span; on each tiny model in `ARCHITECTURES`, in float32, the
image features and the generated tokens equal transformers' SDPA per span, with images of different sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vlx.models import load_adapter
from vlx.models.batches import encode
from vlx.models.fast import vision_windows
from vlx.models.tiny import ensure_tiny_model

# ARCHITECTURES entry -> its tiny model (Qwen2-VL has no tiny model in vlx: its entry is covered by Qwen2.5-VL's
# code, which transformers copies from it)
TINY = {"qwen2_5_vl": "qwen2_5_vl", "qwen3_vl": "qwen3_vl"}


def test_every_architecture_but_qwen2_vl_has_its_equality_test():
    assert set(vision_windows.ARCHITECTURES) - set(TINY) == {"qwen2_vl"}


def photos() -> list[Image.Image]:
    """Noise pictures of three sizes (grids of different shapes, windows cut at the edges)."""
    sizes = [(500, 375), (300, 420), (640, 480)]
    return [
        Image.fromarray(np.random.RandomState(i).randint(0, 255, (h, w, 3), dtype=np.uint8))
        for i, (w, h) in enumerate(sizes)
    ]


@pytest.fixture(scope="module", params=sorted(TINY))
def pair(request, tmp_path_factory):
    """(the adapter as vlx loads it, the same checkpoint with transformers' SDPA throughout)."""
    folder = ensure_tiny_model(TINY[request.param], tmp_path_factory.getbasetemp() / "windows" / request.param)
    options = {"dtype": "float32", "device_map": "cpu", "compile": False}
    ours, plain = load_adapter(str(folder), **options), load_adapter(str(folder), attn_implementation="sdpa", **options)
    return ours, plain


def features(adapter, inputs) -> torch.Tensor:
    with torch.inference_mode():
        out = adapter.model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    return torch.cat(list(out.pooler_output))


def test_vlx_loads_the_vision_tower_with_windowed_attention_and_the_language_model_as_it_was(pair):
    ours, plain = pair
    assert ours.model.config.vision_config._attn_implementation == vision_windows.NAME
    assert plain.model.config.vision_config._attn_implementation == "sdpa"
    assert ours.model.config.get_text_config(decoder=True)._attn_implementation == "sdpa"


def test_image_features_and_tokens_equal_sdpa_per_span(pair):
    ours, plain = pair
    images = photos()
    turn = [{"type": "image"}, {"type": "text", "text": "{}"}]
    prompts = [
        ours.processor.apply_chat_template(
            [{"role": "user", "content": [turn[0], {**turn[1], "text": t}]}], add_generation_prompt=True
        )
        for t in ("a dog runs", "two cats sit on a mat", "x")
    ]
    inputs = encode(ours.processor, prompts, images)
    assert len({tuple(g) for g in inputs["image_grid_thw"].tolist()}) >= 2  # images of different shapes
    expected, got = features(plain, inputs), features(ours, inputs)
    assert expected.abs().max() > 0.1  # real features, not zeros
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    settings = {"do_sample": False, "max_new_tokens": 6}
    assert ours.generate(prompts, images, **settings).texts == plain.generate(prompts, images, **settings).texts


def test_spans_attend_to_themselves_alone():
    """The function against SDPA per span on spans of mixed lengths, and against attending over all of them (which
    a wrong grouping would amount to)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 4, 30, 8) for _ in range(3))
    bounds = torch.tensor([0, 8, 16, 21, 29, 30])
    got, _ = vision_windows.windows_attention(None, q, k, v, scaling=0.35, cu_seq_lens_q=bounds)
    pieces = [
        torch.nn.functional.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], scale=0.35)
        for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
    ]
    expected = torch.cat(pieces, dim=2).transpose(1, 2)  # [1, tokens, heads, dim]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    whole, _ = vision_windows.windows_attention(None, q, k, v, scaling=0.35, cu_seq_lens_q=None)
    assert (whole - expected).abs().max() > 1e-2


def test_other_models_are_left_as_they_were(tmp_path):
    folder = ensure_tiny_model("llava_next", tmp_path / "llava")
    adapter = load_adapter(str(folder), dtype="float32", device_map="cpu", compile=False)
    assert not vision_windows.applies(adapter.model) and not vision_windows.install(adapter.model)
