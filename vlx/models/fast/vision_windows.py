"""Vision towers that attend within windows (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): a few batched SDPA calls per layer.

These towers put every image of a batch in one sequence and attend within spans of it: each image (full-attention
layers) or each window of 8 x 8 patches (Qwen2.5-VL's windowed layers). Without flash attention, transformers calls
SDPA once per span: for a batch of 32 e-SNLI-VE images at Qwen2.5-VL's pixel bounds that is ~17 windows per image,
~540 calls per windowed layer and ~15,000 per forward of the tower, each a small kernel launched from Python.

Here spans of one length go to SDPA together, as a batch: [spans, heads, length, head_dim]. The windows of an image
are mostly of one size (those at its right and bottom edges are smaller) and the images of a batch share their
sizes, so a layer makes a handful of calls. Each span still attends to itself alone: the same numbers as one call
per span (tests/test_fast_paths.py, on the tiny models, in float32).

transformers hands an attention function the spans' bounds (`cu_seq_lens_q`) only when its name says "flash", so
the function is registered as `vlx_flash_windows`; `install` sets it on the vision tower's config alone (the
language model keeps its own attention).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from vlx import compat

NAME = "vlx_flash_windows"

# model_type -> its vision tower's config key; each is proven by tests/test_fast_paths.py's equality test
ARCHITECTURES: dict[str, str] = {
    "qwen2_vl": "vision_config",
    "qwen2_5_vl": "vision_config",
    "qwen3_vl": "vision_config",
}


def windows_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of each span of the sequence to itself, spans of one length in one SDPA call.

    Args:
        module: the attention module (unused: transformers' signature).
        query: [1, heads, tokens, head_dim].
        key: the same shape.
        value: the same shape.
        attention_mask: unused (these towers pass none).
        scaling: the softmax scale.
        dropout: attention dropout (0 at inference).
        cu_seq_lens_q: [spans + 1] cumulative bounds of the spans (the keys' are the same).
        **kwargs: transformers' other arguments (unused).

    Returns:
        [1, tokens, heads, head_dim] (the layout transformers' attention functions return), and no weights.
    """
    bounds = [0, query.shape[2]] if cu_seq_lens_q is None else cu_seq_lens_q.tolist()  # None: one span, the whole
    heads, tokens, dim = query.shape[1:]
    out = query.new_empty(heads, tokens, dim)
    by_length: dict[int, list[int]] = {}
    for start, end in zip(bounds, bounds[1:], strict=False):
        if end > start:
            by_length.setdefault(end - start, []).append(start)
    for length, starts in by_length.items():
        index = torch.tensor(starts, device=query.device)[:, None] + torch.arange(length, device=query.device)
        index = index.reshape(-1)
        # [spans, heads, length, head_dim]
        q, k, v = (t[0][:, index].unflatten(1, (len(starts), length)).transpose(0, 1) for t in (query, key, value))
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling)
        out[:, index] = attended.transpose(0, 1).flatten(1, 2)
    return out.transpose(0, 1).unsqueeze(0), None


def register() -> None:
    """Registers `windows_attention` with transformers under NAME."""
    AttentionInterface.register(NAME, windows_attention)


def applies(model: torch.nn.Module) -> bool:
    """Whether `model` (bare or in peft) has a vision tower of `ARCHITECTURES` that attends through SDPA."""
    config = _config(model)
    key = ARCHITECTURES.get(getattr(config, "model_type", None) or "")
    vision = getattr(config, key, None) if key else None
    return vision is not None and getattr(vision, "_attn_implementation", None) == "sdpa"


def install(model: torch.nn.Module) -> bool:
    """Switches the vision tower of a model in `ARCHITECTURES` from SDPA per span to `windows_attention`; leaves any
    other model (and one loaded with eager or flash attention) as it is. Returns whether it switched."""
    if not applies(model):
        return False
    register()
    config = _config(model)
    getattr(config, ARCHITECTURES[config.model_type])._attn_implementation = NAME
    return True


def _config(model: torch.nn.Module) -> Any:
    base = compat.base_model(model)
    return getattr(base, "config", None)
