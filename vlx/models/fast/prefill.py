"""`generate` after vlx's own prefill: right-padded prompts without a mask or cache object in the decoder blocks.

For the architectures on `vlx.models.fast.ALLOWED` only (see there why).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch

from vlx.compat import cache_argument
from vlx.models.batches import pad_right, static_cache_length
from vlx.models.fast import allowed
from vlx.models.fast.attention import prefill_aware

if TYPE_CHECKING:
    from vlx.models.types import LoadedModel


def applies(model: LoadedModel, inputs: Any, generation: dict[str, Any]) -> bool:
    """Whether `generate_after_prefill` applies: an architecture on the allow-list, a causal prompt (no
    `token_type_ids`: PaliGemma's prefix and Gemma 3's images attend both ways), vlx's attention function, one sequence
    per prompt (beams would need the cache expanded) and a known length."""
    return (
        allowed(model)
        and "token_type_ids" not in inputs
        and prefill_aware(model)
        and generation.get("num_beams", 1) == 1
        and generation.get("num_return_sequences", 1) == 1
        and generation.get("max_new_tokens") is not None
    )


def generate_after_prefill(
    model: LoadedModel, inputs: Any, pad_id: int, multiple: int, static: bool, **generation: Any
) -> torch.Tensor:
    """`generate` for a causal model, its prompts prefilled by vlx: right-padded, without a mask, without a cache
    object in the decoder blocks (so that those run compiled, `compile_cache_free`); the keys and values go into a
    cache from the attention function (`kv_sink`), and `generate` goes on from that cache.

    Every prompt but its last token is right-padded to width P (P + 1 a multiple of `multiple`) and prefilled;
    `generate` then gets [that, each prompt's last token] with a mask that hides the padding gap, so that it runs
    the last prompt token itself (and with it the first token's choice: logits processors, sampling) at position
    len - 1, the positions that transformers counts from the mask being each prompt's own.

    Args:
        model: a causal VLM whose attention is vlx's (`prefill_aware`).
        inputs: the processor's batch on the model's device (any padding).
        pad_id: the tokenizer's padding id.
        multiple: pad the generate input to a multiple of this many positions (1: no rounding).
        static: a static cache (for `generate`'s compiled decode step) instead of a dynamic one.
        **generation: `generate`'s keyword arguments, max_new_tokens included.

    Returns:
        [B, new tokens]: the generated tokens.
    """
    from transformers import DynamicCache, StaticCache

    inputs = pad_right(copy.copy(inputs), 1, pad_id)  # each row's real tokens first
    ids, mask = inputs.pop("input_ids"), inputs.pop("attention_mask")
    lengths = mask.sum(dim=1)
    batch = ids.shape[0]
    last = ids[torch.arange(batch, device=ids.device), lengths - 1]
    width = -(-int(lengths.max()) // multiple) * multiple - 1  # P
    # (each row's last token stays in the head too, where causal attention keeps it from the tokens before it and
    # the mask below hides it from the rest)
    head = torch.full((batch, width), pad_id, dtype=ids.dtype, device=ids.device)
    keep = min(width, ids.shape[1])
    head[:, :keep] = ids[:, :keep]
    new_tokens = int(generation["max_new_tokens"])
    text_config = model.config.get_text_config(decoder=True)
    # (one cache length for the prompt widths of a run, and so one compiled decode step: `static_cache_length`)
    length = static_cache_length(width + 1, {"max_new_tokens": new_tokens})
    cache = StaticCache(config=text_config, max_cache_len=length) if static else DynamicCache()
    if width:
        model(input_ids=head, **inputs, use_cache=False, logits_to_keep=1, kv_sink=cache)
    prompt_mask = (torch.arange(width, device=ids.device)[None, :] < (lengths - 1)[:, None]).to(mask.dtype)
    out = model.generate(
        input_ids=torch.cat([head, last[:, None]], dim=1),
        attention_mask=torch.cat([prompt_mask, mask.new_ones(batch, 1)], dim=1),
        pad_token_id=pad_id,
        **{cache_argument(model): cache},
        **generation,
    )
    return out[:, width + 1 :]
