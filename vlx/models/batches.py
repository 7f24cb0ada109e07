"""A processor's batch as the models take it: made, padded on either side, extended by answer tokens, moved.

Besides `input_ids` and `attention_mask`, processors return other per-token rows: `token_type_ids` (PaliGemma's
prefix vs suffix, Gemma 3's image tokens), `mm_token_type_ids` (Qwen-VL's modality per token). Every [B, T] tensor
of the batch is such a row, and each operation here moves all of them together, so no family's row is dropped or
left misaligned.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

if TYPE_CHECKING:
    from vlx.models.types import LoadedModel

_THREAD = threading.local()


def token_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Each text's token ids, without special tokens (answers and continuations after a prompt).

    A fast tokenizer's padding setting is state of its Rust object, set before each call; while the loader thread
    encodes the next batch (padded), a call here on the same object (not padded) could switch it under that batch
    (seen: "expected sequence of length 76 at dim 1 (got 85)"). So each thread tokenizes with its own copy.
    """
    copies = _THREAD.__dict__.setdefault("tokenizers", {})
    if id(tokenizer) not in copies:
        copies[id(tokenizer)] = (tokenizer, copy.deepcopy(tokenizer))  # the original held: its id stays its own
    own = copies[id(tokenizer)][1]
    return [own(text, add_special_tokens=False)["input_ids"] for text in texts]


def encode(processor: Any, prompts: list[str], images: list[Image.Image]) -> Any:
    """The processor's left-padded batch (no labels: PaliGemma's processor adds them with token_type_ids)."""
    inputs = process(processor, prompts, images)
    inputs.pop("labels", None)
    return inputs


def process(processor: Any, texts: list[str], images: list[Image.Image], **options: Any) -> Any:
    """`processor(...)` on rendered prompts and their images, in the form every processor takes:

    - the images nested per prompt, counted by the image places each prompt holds (Gemma 3's processor refuses a
      flat list; the others take either);
    - no second BOS where the chat template already wrote one (Gemma 3's and Idefics3's do, and the tokenizer would
      add another, which the models never saw in training).
    """
    nested: list[Any] = images
    token = getattr(processor, "image_token", None)
    counts = [t.count(token) for t in texts] if isinstance(token, str) else []
    if counts and sum(counts) == len(images):
        starts = [sum(counts[:i]) for i in range(len(counts))]
        nested = [images[start : start + n] for start, n in zip(starts, counts, strict=True)]
    bos = getattr(processor.tokenizer, "bos_token", None)
    if bos and all(t.startswith(bos) for t in texts):
        options.setdefault("add_special_tokens", False)
    return processor(images=nested, text=texts, padding=True, return_tensors="pt", **options)


def token_rows(inputs: Any) -> list[str]:
    """The batch's per-token rows: input_ids and every other tensor of its [B, T] shape."""
    shape = inputs["input_ids"].shape
    return [k for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.dim() == 2 and v.shape == shape]


def _fill(key: str, pad_id: int) -> int:
    return pad_id if key == "input_ids" else 0  # padding: not attended, text type


def pad_left(inputs: Any, multiple: int, pad_id: int) -> Any:
    """Left-pads a batch's token rows to a multiple of `multiple` positions."""
    fill = -inputs["input_ids"].shape[1] % multiple
    if fill == 0:
        return inputs
    for key in token_rows(inputs):
        rows = inputs[key]
        inputs[key] = torch.cat([rows.new_full((rows.shape[0], fill), _fill(key, pad_id)), rows], dim=1)
    return inputs


def pad_right(inputs: Any, multiple: int, pad_id: int) -> Any:
    """Moves each row's padding to its end (the real tokens keep their order), then pads on the right to a multiple
    of `multiple` positions."""
    mask = inputs["attention_mask"]
    order = torch.argsort((mask == 0).int(), dim=1, stable=True)  # per row: real positions first, then padding
    fill = -mask.shape[1] % multiple
    for key in token_rows(inputs):
        rows = inputs[key].gather(1, order)
        inputs[key] = torch.cat([rows, rows.new_full((rows.shape[0], fill), _fill(key, pad_id))], dim=1)
    return inputs


def append_tokens(inputs: Any, extra: list[list[int]], pad_id: int, token_type: int = 0) -> Any:
    """Appends token ids to each row of a left-padded batch and pads on the left again.

    The appended tokens are answer tokens: attended, `token_type_ids` = `token_type` (1 for PaliGemma's prefix-LM,
    where the suffix is causal, as the tokens the model writes itself; 0, text, for Gemma 3), other rows 0.
    """
    width = max(len(e) for e in extra)
    keys = token_rows(inputs)
    added_value = {"input_ids": None, "attention_mask": 1, "token_type_ids": token_type}
    rows: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    for i, tokens in enumerate(extra):
        for key in keys:
            row = inputs[key][i]
            left = row.new_full((width - len(tokens),), _fill(key, pad_id))
            value = added_value.get(key, 0)
            added = torch.tensor(tokens, dtype=row.dtype) if value is None else row.new_full((len(tokens),), value)
            rows[key].append(torch.cat([left, row, added]))
    for key, values in rows.items():
        inputs[key] = torch.stack(values)
    return inputs


def on_model(model: LoadedModel, inputs: Any) -> Any:
    """The processor's batch on the model's device, its pixels in the model's dtype (processors return float32)."""
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return inputs


# a static KV cache is this many tokens long, or a multiple of it: the prompt widths of a run (padded to 64 when
# compiled) share one cache and one compiled decode step, where a cache sized to each width would compile once per
# width (what recompiling costs: docs/PERFORMANCE.md, "The families off the allow-list on a GPU")
STATIC_CACHE_MULTIPLE = 512


def static_cache_length(width: int, generation: dict[str, Any]) -> int:
    """The static cache's length for a batch `width` tokens wide: prompt + new tokens, rounded up to a multiple of
    `STATIC_CACHE_MULTIPLE` (transformers' `generate` and vlx's own prefill size theirs with it)."""
    needed = width + int(generation.get("max_new_tokens", 20))
    return -(-needed // STATIC_CACHE_MULTIPLE) * STATIC_CACHE_MULTIPLE
