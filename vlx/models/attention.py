"""`sdpa_grouped`: transformers' SDPA attention, except that a one-token query (a decode step) attends per KV head.

Mistral-7B has 32 query heads over 8 KV heads (Gemma-2B: 8 over 1). Under a padding mask, transformers' SDPA path
repeats the KV cache to one copy per query head on every decode step (newer versions avoid it, but not inside a
compiled step), which reads 4x (8x) the cache from memory. Here the query heads that share a KV head become that
head's query positions instead: [B, H, 1, D] -> [B, H_kv, H / H_kv, D] against the cache as it is, and the mask
[B, 1, 1, S] broadcasts over them. Same numbers, a quarter of the memory traffic. Prefill and training (more than one
query position) go to the stock SDPA function unchanged.

Importing this module registers the name with transformers (attention and mask functions), so that
`attn_implementation="sdpa_grouped"` works in `from_pretrained`.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

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
    kernel on an H100). "matmul": query-key product, softmax in float32, product with the values; it was 9% slower
    end to end on an H100 under the compiled decode step (docs/PERFORMANCE.md), and stays for comparison.
    """
    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, length, dim = query.shape
    per_head_mask = attention_mask is not None and attention_mask.shape[1] != 1
    if groups == 1 or length != 1 or dropout or per_head_mask or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)  # fmt: skip
    # query head h uses KV head h // groups (transformers' repeat_kv order), so heads fold as [H_kv, groups]
    grouped = query.reshape(batch, heads // groups, groups, dim)
    if decode_kernel == "sdpa":
        out = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask,
                                                               scale=scaling)  # fmt: skip
    else:
        scores = torch.matmul(grouped, key.transpose(-1, -2)) * (dim**-0.5 if scaling is None else scaling)
        if attention_mask is not None:  # [B, 1, 1, S]: True (or 0.0) where a position may be attended
            if attention_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attention_mask, float("-inf"))
            else:
                scores = scores + attention_mask
        out = torch.matmul(torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype), value)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def register(name: str = NAME, function: Any = grouped_sdpa_attention) -> None:
    """Makes an attention function known to transformers under `name` (idempotent); its masks are SDPA's."""
    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


register()
