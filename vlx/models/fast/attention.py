"""`sdpa_grouped`: transformers' SDPA attention, except that a one-token query (a decode step) attends per KV head.

Mistral-7B has 32 query heads over 8 KV heads (Gemma-2B: 8 over 1). Under a padding mask, transformers' SDPA path
repeats the KV cache to one copy per query head on every decode step (newer versions avoid it, but not inside a
compiled step), which reads 4x (8x) the cache from memory. Here the query heads that share a KV head become that
head's query positions instead: [B, H, 1, D] -> [B, H_kv, H / H_kv, D] against the cache as it is, and the mask
[B, 1, 1, S] broadcasts over them. Same numbers, a quarter of the memory traffic. Prefill and training (more than one
query position) go to the stock SDPA function unchanged.

Two keyword arguments serve vlx's cache-free prefill (`prefill.generate_after_prefill`, `prefill_scoring`), which
runs the prompt without a KV cache object in the decoder layers, so that whole layers can be compiled once for all
layers:
- `kv_sink`: a transformers Cache; each decoder layer's keys and values are written into it, outside the compiled
  graph (a layer's cache slot is chosen by its index, on which torch would otherwise specialise and recompile).
- `tail_mask`: [B, 1, T, S] booleans for the last T query positions (the label answers that `decode=score` scores
  in the same forward); the first S - T positions attend causally with SDPA's unmasked kernel.

Importing this module registers the name with transformers (attention and mask functions), so that
`attn_implementation="sdpa_grouped"` works in `from_pretrained`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from vlx import compat

if TYPE_CHECKING:
    from vlx.models.types import LoadedModel

NAME = "sdpa_grouped"


def grouped_sdpa_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    decode_kernel: str = "sdpa",
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """An attention function with transformers' signature: query [B, H, L, D], key/value [B, H_kv, S, D];
    returns [B, L, H, D].

    `decode_kernel`: how a grouped decode step is computed. "sdpa": torch's scaled_dot_product_attention (cuDNN's
    kernel on an H100). "matmul": query-key product, softmax in float32, product with the values; slower than "sdpa"
    under the compiled decode step (docs/PERFORMANCE.md, run D), it stays for comparison.
    """
    sink = kwargs.pop("kv_sink", None)
    if sink is not None:
        write_cache(sink, module, key, value)
    tail = kwargs.pop("tail_mask", None)
    if tail is not None and tail.shape[-1] == query.shape[2] == key.shape[2]:
        return _causal_with_tail(module, query, key, value, tail, scaling, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, length, dim = query.shape
    per_head_mask = attention_mask is not None and attention_mask.shape[1] != 1
    if groups == 1 or length != 1 or dropout or per_head_mask or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    # query head h uses KV head h // groups (transformers' repeat_kv order), so heads fold as [H_kv, groups]
    grouped = query.reshape(batch, heads // groups, groups, dim)
    if decode_kernel == "sdpa":
        out = torch.nn.functional.scaled_dot_product_attention(
            grouped, key, value, attn_mask=attention_mask, scale=scaling
        )
    else:
        scores = torch.matmul(grouped, key.transpose(-1, -2)) * (dim**-0.5 if scaling is None else scaling)
        if attention_mask is not None:  # [B, 1, 1, S]: True (or 0.0) where a position may be attended
            if attention_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attention_mask, float("-inf"))
            else:
                scores = scores + attention_mask
        out = torch.matmul(torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype), value)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


@torch.compiler.disable  # the layer index picks the cache slot: traced, it would specialise each layer's graph
def write_cache(cache: Any, module: torch.nn.Module, key: torch.Tensor, value: torch.Tensor) -> None:
    """Writes a prompt's keys and values [B, H_kv, S, D] into positions 0..S-1 of `cache`'s layer for `module` (a
    decoder block's attention; a vision tower's have no layer index and are skipped)."""
    layer = getattr(module, "layer_idx", None)
    if layer is None:
        return
    positions = torch.arange(key.shape[2], device=key.device)
    cache.update(key, value, layer, {"cache_position": positions})  # (positional: the name changed across versions)


def _causal_with_tail(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    tail: torch.Tensor,
    scaling: float | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention over the first S - T positions (no mask: the fast kernel), and the last T queries under
    `tail` [B, 1, T, S] (True = may attend). Returns [B, S, H, D]."""
    head = query.shape[2] - tail.shape[2]
    front, _ = sdpa_attention_forward(
        module,
        query[:, :, :head],
        key[:, :, :head],
        value[:, :, :head],
        None,
        scaling=scaling,
        is_causal=True,
        **kwargs,
    )
    back, _ = sdpa_attention_forward(
        module, query[:, :, head:], key, value, tail, scaling=scaling, is_causal=False, **kwargs
    )
    return torch.cat([front, back], dim=1), None


# attention implementations that honour `kv_sink` and `tail_mask` (those registered here)
PREFILL_AWARE: set[str] = set()


def register(name: str = NAME, function: Any = grouped_sdpa_attention) -> None:
    """Makes an attention function known to transformers under `name` (idempotent); its masks are SDPA's. The
    function must pass its keyword arguments on to `grouped_sdpa_attention`."""
    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    PREFILL_AWARE.add(name)


def prefill_aware(model: LoadedModel) -> bool:
    """Whether the model's language model attends through a function registered here."""
    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    return compat.attention_implementation(config) in PREFILL_AWARE


register()
