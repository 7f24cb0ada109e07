"""Label scoring: the probability of each label's answer after the prompt, from one shared prefill.

The prompt batch is run once with the KV cache on; each label's answer tokens are then run on top of that cache
(cropped back to the prompt after each label), so n labels cost one prefill plus n short continuations instead of n
full forwards. Probabilities are the softmax over labels of the answers' total log-likelihoods.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from vlx.models._generation import encode


def _cache_argument(model: torch.nn.Module) -> str:
    """The forward argument that carries the KV cache: `cache` in newer transformers, `past_key_values` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _output_cache(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


@torch.inference_mode()
def score_answers(
    model: torch.nn.Module,
    processor: Any,
    prompts: list[str],
    images: list[Image.Image],
    answers: Sequence[str],
    inputs: Any | None = None,
) -> list[dict[str, float]]:
    """Per item, the probability of each answer text as the model's continuation of the prompt.

    Args:
        model: a transformers VLM (or a peft model around one).
        processor: its processor, left-padding, so every prompt ends at the last position.
        prompts: rendered prompts (the answer follows them directly).
        images: their images, in prompt order.
        answers: the candidate answer texts (one per label), exactly as they would follow the prompt.
        inputs: `encode(processor, prompts, images)`, when already made.

    Returns:
        One {answer: probability} per prompt; probabilities sum to 1 over the answers.
    """
    inputs = encode(processor, prompts, images) if inputs is None else copy.copy(inputs)
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    cache_arg = _cache_argument(model)
    # the shared prefill; only the last position's logits are needed (not [B, ~2,400, vocabulary] of them)
    out = model(**inputs, use_cache=True, logits_to_keep=1)
    cache = _output_cache(out)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]: the next token after each prompt
    batch = first.shape[0]
    tokenizer = processor.tokenizer
    totals = []
    for answer in answers:
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        logp = first[:, ids[0]]
        if len(ids) > 1:
            follow = torch.tensor(ids[:-1], device=model.device).expand(batch, -1)  # [B, L-1]
            mask = torch.cat([inputs["attention_mask"], torch.ones_like(follow)], dim=1)
            step = model(input_ids=follow, attention_mask=mask, use_cache=True, **{cache_arg: cache})
            logps = torch.log_softmax(step.logits.float(), dim=-1)  # [B, L-1, V]
            target = torch.tensor(ids[1:], device=model.device).expand(batch, -1)
            logp = logp + logps.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(dim=-1)
            cache.crop(-(len(ids) - 1))  # back to the prompt for the next answer (negative: works across versions)
        totals.append(logp)
    probs = torch.softmax(torch.stack(totals, dim=1), dim=1).tolist()  # [B, n_answers]
    return [dict(zip(answers, row, strict=True)) for row in probs]
