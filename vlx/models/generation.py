"""Batched generation: one processor call, one `generate` call, the new tokens decoded.

Plain transformers code for every model; the architectures on `vlx.models.fast.ALLOWED` prefill through
`vlx.models.fast.prefill` instead."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from vlx import compat
from vlx.errors import DataError
from vlx.models.batches import append_tokens, encode, on_model, pad_left, static_cache_length, token_ids
from vlx.models.fast import prefill

if TYPE_CHECKING:
    from vlx.models.types import LoadedModel

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


def image_token(processor: Any, model: LoadedModel) -> int | None:
    """The id of the token that holds image features (the processor's, else the model config's), or None."""
    for owner in (processor, processor.tokenizer):
        if isinstance(getattr(owner, "image_token_id", None), int):
            return owner.image_token_id
    config = model.config
    for key in ("image_token_id", "image_token_index"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    return None


def context_length(model: LoadedModel) -> int | None:
    """The language model's context window in tokens (max_position_embeddings), where the config gives one."""
    config = model.config
    text_config = getattr(config, "text_config", None) or config
    return getattr(text_config, "max_position_embeddings", None)


@torch.inference_mode()
def generate_texts(
    model: LoadedModel,
    processor: Any,
    prompts: list[str],
    images: list[Image.Image],
    ids: Sequence[str] | None = None,
    continuations: Sequence[str] | None = None,
    pad_to_multiple_of: int | None = None,
    inputs: Any | None = None,
    answer_token_type: int = 0,
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
        answer_token_type: the `token_type_ids` of continuation tokens (`batches.append_tokens`).
        **generation: keyword arguments for `generate` (do_sample, max_new_tokens, temperature, ...).

    Returns:
        The decoded new tokens of each item (no prompt, no special tokens) and the prompts' token counts.

    Raises:
        DataError: a prompt plus max_new_tokens does not fit the model's context (checked before generating).
    """
    inputs = encode(processor, prompts, images) if inputs is None else copy.copy(inputs)  # ours to change
    if continuations is not None:
        inputs = append_tokens(
            inputs, token_ids(processor.tokenizer, continuations), processor.tokenizer.pad_token_id, answer_token_type
        )
    lengths = inputs["attention_mask"].sum(dim=1).tolist()
    image_token_id = image_token(processor, model)
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
                    f"{limit}. Use fewer shots, fewshot.demo_image_size, or smaller images."
                )
    inputs = on_model(model, inputs)
    tokenizer = processor.tokenizer
    if prefill.applies(model, inputs, generation):
        static = generation.pop("cache_implementation", None) == "static"
        multiple = pad_to_multiple_of or 1
        new_tokens = prefill.generate_after_prefill(
            model, inputs, tokenizer.pad_token_id, multiple, static, **generation
        )
    else:
        if pad_to_multiple_of:
            inputs = pad_left(inputs, pad_to_multiple_of, tokenizer.pad_token_id)
        if generation.get("cache_implementation") == "static" and compat.static_cache_ceiling():
            generation = {"max_cache_len": static_cache_length(inputs["input_ids"].shape[1], generation), **generation}
        out = model.generate(**inputs, pad_token_id=tokenizer.pad_token_id, **generation)  # [B, prompt + new]
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
    texts = [clean_answer(t) for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    return Generation(
        texts=texts,
        prompt_tokens=[int(n) for n in lengths],
        image_tokens=[int(n) for n in image_tokens],
        new_tokens=int(new_tokens.shape[1]),
    )
