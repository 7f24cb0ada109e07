"""Label scoring: the probability of each label's answer after the prompt, from one shared prefill.

The prompt batch is run once with the KV cache on; each label's answer tokens are then run on top of that cache
(cropped back to the prompt after each label), so n labels cost one prefill plus n short continuations instead of n
full forwards. Probabilities are the softmax over labels of the answers' total log-likelihoods.

For a causal model (LLaVA-NeXT; not PaliGemma, whose prompt attends both ways) the prefill is right-padded and runs
without an attention mask: padding at the end cannot reach a real token through causal attention, and without a mask
SDPA runs its causal flash kernel rather than a masked one over the ~2,400 x 2,400 scores. The padded tail stays in
the cache, masked out for the answer tokens, which get their positions from each prompt's own length.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from vlx.models._generation import encode, pad_left

# causal models get the right-padded, maskless prefill (scripts/bench_infer.py turns it off to measure the gain)
RIGHT_PADDED_PREFILL = True


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
    pad_to_multiple_of: int | None = None,
) -> list[dict[str, float]]:
    """Per item, the probability of each answer text as the model's continuation of the prompt.

    Args:
        model: a transformers VLM (or a peft model around one).
        processor: its processor, left-padding, so every prompt ends at the last position.
        prompts: rendered prompts (the answer follows them directly).
        images: their images, in prompt order.
        answers: the candidate answer texts (one per label), exactly as they would follow the prompt.
        inputs: `encode(processor, prompts, images)`, when already made.
        pad_to_multiple_of: pad the batch to a multiple of this many tokens (fewer shapes for compiled modules and
            cuDNN's attention plans, which are built per sequence length).

    Returns:
        One {answer: probability} per prompt; probabilities sum to 1 over the answers.
    """
    inputs = encode(processor, prompts, images) if inputs is None else copy.copy(inputs)
    causal = RIGHT_PADDED_PREFILL and "token_type_ids" not in inputs  # PaliGemma's prefix attends both ways
    if causal:
        inputs = pad_right(inputs, pad_to_multiple_of or 1, processor.tokenizer.pad_token_id)
    elif pad_to_multiple_of:
        inputs = pad_left(inputs, pad_to_multiple_of, processor.tokenizer.pad_token_id)
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    cache_arg = _cache_argument(model)
    prompt_mask = inputs["attention_mask"]
    lengths = prompt_mask.sum(dim=1)  # [B]
    batch = lengths.shape[0]
    if causal:
        # only the logits at each prompt's last token are needed (not [B, ~2,400, vocabulary] of them)
        ends = torch.unique(lengths - 1)  # sorted: the distinct last positions in the batch
        out = model(**{k: v for k, v in inputs.items() if k != "attention_mask"}, use_cache=True, logits_to_keep=ends)
        last = out.logits[torch.arange(batch, device=ends.device), torch.searchsorted(ends, lengths - 1)]
    else:
        out = model(**inputs, use_cache=True, logits_to_keep=1)
        last = out.logits[:, -1]
    cache = _output_cache(out)
    first = torch.log_softmax(last.float(), dim=-1)  # [B, V]: the next token after each prompt
    tokenizer = processor.tokenizer
    totals = []
    for answer in answers:
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        logp = first[:, ids[0]]
        if len(ids) > 1:
            follow = torch.tensor(ids[:-1], device=model.device).expand(batch, -1)  # [B, L-1]
            mask = torch.cat([prompt_mask, torch.ones_like(follow)], dim=1)
            extra = {}
            if causal:  # right after each prompt's own last token, not after the batch's padded width
                extra["position_ids"] = lengths[:, None] + torch.arange(len(ids) - 1, device=model.device)
            step = model(input_ids=follow, attention_mask=mask, use_cache=True, **{cache_arg: cache}, **extra)
            logps = torch.log_softmax(step.logits.float(), dim=-1)  # [B, L-1, V]
            target = torch.tensor(ids[1:], device=model.device).expand(batch, -1)
            logp = logp + logps.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(dim=-1)
            cache.crop(-(len(ids) - 1))  # back to the prompt for the next answer (negative: works across versions)
        totals.append(logp)
    probs = torch.softmax(torch.stack(totals, dim=1), dim=1).tolist()  # [B, n_answers]
    return [dict(zip(answers, row, strict=True)) for row in probs]


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
