"""Batched generation shared by the adapters: one processor call, one generate call, new tokens decoded."""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from vlx.errors import DataError
from vlx.models.attention import prefill_aware

# PaliGemma's detection/segmentation tokens are not "special" to the tokenizer, so skip_special_tokens keeps them
_LOCATION_TOKENS = re.compile(r"<(?:loc\d{4}|seg\d{3})>")


@dataclass(frozen=True)
class Generation:
    """A batch's answers and what their prompts cost."""

    texts: list[str]
    prompt_tokens: list[int]  # per item, padding excluded
    image_tokens: list[int]  # per item: positions holding image features
    new_tokens: int = 0  # positions generated for the batch (the longest answer, eos included)


def clean_answer(text: str) -> str:
    """Strips location/segmentation tokens and surrounding whitespace from a decoded answer."""
    return _LOCATION_TOKENS.sub("", text).strip()


def context_length(model: torch.nn.Module) -> int | None:
    """The language model's context window in tokens (max_position_embeddings), where the config gives one."""
    config = model.config
    text_config = getattr(config, "text_config", None) or config
    return getattr(text_config, "max_position_embeddings", None)


def append_tokens(inputs: Any, extra: list[list[int]], pad_id: int) -> Any:
    """Appends token ids to each row of a left-padded batch and pads on the left again.

    The appended tokens are answer tokens: for PaliGemma's prefix-LM they get token_type_ids 1 (causal), like the
    tokens the model writes itself.
    """
    width = max(len(e) for e in extra)
    rows = {key: [] for key in ("input_ids", "attention_mask", "token_type_ids") if key in inputs}
    for i, tokens in enumerate(extra):
        fill = width - len(tokens)
        added = torch.tensor(tokens, dtype=inputs["input_ids"].dtype)
        rows["input_ids"].append(torch.cat([torch.full((fill,), pad_id), inputs["input_ids"][i], added]))
        rows["attention_mask"].append(
            torch.cat([torch.zeros(fill), inputs["attention_mask"][i], torch.ones(len(tokens))])
        )
        if "token_type_ids" in rows:
            rows["token_type_ids"].append(
                torch.cat([torch.zeros(fill), inputs["token_type_ids"][i], torch.ones(len(tokens))])
            )
    for key, values in rows.items():
        inputs[key] = torch.stack(values).to(inputs["input_ids"].dtype if key == "input_ids" else torch.long)
    return inputs


def encode(processor: Any, prompts: list[str], images: list[Image.Image]) -> Any:
    """The processor's left-padded batch (no labels: PaliGemma's processor adds them with token_type_ids)."""
    inputs = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    inputs.pop("labels", None)
    return inputs


def pad_left(inputs: Any, multiple: int, pad_id: int) -> Any:
    """Left-pads a batch's token rows (ids, mask, token types) to a multiple of `multiple` positions."""
    width = inputs["input_ids"].shape[1]
    fill = -width % multiple
    if fill == 0:
        return inputs
    for key, value in (("input_ids", pad_id), ("attention_mask", 0), ("token_type_ids", 0)):
        if key in inputs:
            rows = inputs[key]
            inputs[key] = torch.cat([rows.new_full((rows.shape[0], fill), value), rows], dim=1)
    return inputs


def on_model(model: torch.nn.Module, inputs: Any) -> Any:
    """The processor's batch on the model's device, its pixels in the model's dtype (processors return float32)."""
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return inputs


def pad_right(inputs: Any, multiple: int, pad_id: int) -> Any:
    """Moves each row's padding to its end (token ids and mask; the real tokens keep their order), then pads on the
    right to a multiple of `multiple` positions."""
    mask = inputs["attention_mask"]
    order = torch.argsort((mask == 0).int(), dim=1, stable=True)  # per row: real positions first, then padding
    ids, mask = inputs["input_ids"].gather(1, order), mask.gather(1, order)
    fill = -ids.shape[1] % multiple
    inputs["input_ids"] = torch.cat([ids, ids.new_full((ids.shape[0], fill), pad_id)], dim=1)
    inputs["attention_mask"] = torch.cat([mask, mask.new_zeros((mask.shape[0], fill))], dim=1)
    return inputs


def cache_argument(model: torch.nn.Module) -> str:
    """The forward argument that carries the KV cache: `cache` in newer transformers, `past_key_values` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _is_causal_prefill(model: torch.nn.Module, inputs: Any, generation: dict[str, Any]) -> bool:
    """Whether `generate_after_prefill` applies: a causal prompt (PaliGemma's prefix attends both ways), vlx's
    attention function, one sequence per prompt (beams would need the cache expanded) and a known length."""
    return (
        "token_type_ids" not in inputs
        and prefill_aware(model)
        and generation.get("num_beams", 1) == 1
        and generation.get("num_return_sequences", 1) == 1
        and generation.get("max_new_tokens") is not None
    )


def generate_after_prefill(
    model: torch.nn.Module, inputs: Any, pad_id: int, multiple: int, static: bool, **generation: Any
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
    cache = StaticCache(config=text_config, max_cache_len=width + 1 + new_tokens) if static else DynamicCache()
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


@torch.inference_mode()
def generate_texts(
    model: torch.nn.Module,
    processor: Any,
    prompts: list[str],
    images: list[Image.Image],
    ids: Sequence[str] | None = None,
    continuations: Sequence[str] | None = None,
    pad_to_multiple_of: int | None = None,
    inputs: Any | None = None,
    **generation: Any,
) -> Generation:
    """Generates one answer per prompt in a single left-padded batch.

    Args:
        model: a transformers VLM (or a peft model around one).
        processor: its processor, with `tokenizer.padding_side == "left"` so every prompt ends at the same position.
        prompts: fully rendered prompts (chat template or prefix).
        images: RGB images, in the order their image tokens appear in the prompts (several per prompt for
            few-shot prompts).
        ids: item ids, named in errors.
        continuations: text to put in the model's mouth after each prompt (e.g. the chosen label) before it
            generates; appended as tokens, since a processor may add text after the prompt (PaliGemma's newline).
        pad_to_multiple_of: left-pad the batch to a multiple of this many tokens (fewer shapes for a compiled model).
        inputs: `encode(processor, prompts, images)`, when already made (off the GPU loop, by the infer stage).
        **generation: keyword arguments for `generate` (do_sample, max_new_tokens, temperature, ...).

    Returns:
        The decoded new tokens of each item (no prompt, no special tokens) and the prompts' token counts.

    Raises:
        DataError: a prompt plus max_new_tokens does not fit the model's context (checked before generating).
    """
    inputs = encode(processor, prompts, images) if inputs is None else copy.copy(inputs)  # ours to change
    if continuations is not None:
        inputs = append_tokens(inputs, [processor.tokenizer(c, add_special_tokens=False)["input_ids"]
                                        for c in continuations], processor.tokenizer.pad_token_id)  # fmt: skip
    lengths = inputs["attention_mask"].sum(dim=1).tolist()
    image_token_id = getattr(processor.tokenizer, "image_token_id", None)
    image_tokens = (inputs["input_ids"] == image_token_id).sum(dim=1).tolist() if image_token_id is not None else []
    limit = context_length(model)
    if limit is not None:
        needed = [n + int(generation.get("max_new_tokens", 20)) for n in lengths]
        for i, n in enumerate(needed):
            if n > limit:
                name = ids[i] if ids else f"#{i}"
                raise DataError(
                    f"item {name}: the prompt takes {lengths[i]} tokens ({image_tokens[i] if image_tokens else '?'} "
                    f"for images) + {generation.get('max_new_tokens', 20)} new tokens > the model's context of "
                    f"{limit}. Use fewer shots, shots.demo_image_size, or smaller images."
                )
    inputs = on_model(model, inputs)
    tokenizer = processor.tokenizer
    if _is_causal_prefill(model, inputs, generation):
        static = generation.pop("cache_implementation", None) == "static"
        new_tokens = generate_after_prefill(model, inputs, tokenizer.pad_token_id, pad_to_multiple_of or 1, static,
                                            **generation)  # fmt: skip
    else:
        if pad_to_multiple_of:
            inputs = pad_left(inputs, pad_to_multiple_of, tokenizer.pad_token_id)
        out = model.generate(**inputs, pad_token_id=tokenizer.pad_token_id, **generation)  # [B, prompt + new]
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
    texts = [clean_answer(t) for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    return Generation(
        texts=texts,
        prompt_tokens=[int(n) for n in lengths],
        image_tokens=[int(n) for n in image_tokens],
        new_tokens=int(new_tokens.shape[1]),
    )
