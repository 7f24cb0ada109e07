"""Batched generation shared by the adapters: one processor call, one generate call, new tokens decoded."""

from __future__ import annotations

import re
from typing import Any

import torch
from PIL import Image

# PaliGemma's detection/segmentation tokens are not "special" to the tokenizer, so skip_special_tokens keeps them
_LOCATION_TOKENS = re.compile(r"<(?:loc\d{4}|seg\d{3})>")


def clean_answer(text: str) -> str:
    """Strips location/segmentation tokens and surrounding whitespace from a decoded answer."""
    return _LOCATION_TOKENS.sub("", text).strip()


@torch.inference_mode()
def generate_texts(
    model: torch.nn.Module, processor: Any, prompts: list[str], images: list[Image.Image], **generation: Any
) -> list[str]:
    """Generates one answer per (prompt, image) in a single left-padded batch.

    Args:
        model: a transformers VLM (or a peft model around one).
        processor: its processor, with `tokenizer.padding_side == "left"` so every prompt ends at the same position.
        prompts: fully rendered prompts (chat template or prefix), one per image.
        images: RGB images.
        **generation: keyword arguments for `generate` (do_sample, max_new_tokens, temperature, ...).

    Returns:
        The decoded new tokens of each item, without the prompt and special tokens.
    """
    inputs = processor(images=images, text=prompts, padding=True, return_tensors="pt").to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)  # processors return float32
    tokenizer = processor.tokenizer
    out = model.generate(**inputs, pad_token_id=tokenizer.pad_token_id, **generation)  # [B, prompt + new]
    new_tokens = out[:, inputs["input_ids"].shape[1] :]
    return [clean_answer(t) for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
