"""Label scores for M-RoPE models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL): one prefill and a cached continuation per label.

Their language model places each token in 3-D (time, height, width): an image's tokens on its grid, the text after
it one step at a time from past the image's largest coordinate. The plain path (`vlx.models.label_scoring.
score_per_answer`) runs the vision tower and the whole prompt once per label, each time at the positions the model's
own rope-index function gives that [prompt + answer] sequence. Here the prompt batch runs once (left-padded under its
mask, the KV cache on) at the prompt's part of those positions, and each answer's tokens run on top of the cache at
the answer's part (the cache cropped back after each answer): one vision-tower pass and one prompt pass for n labels
instead of n of each.

Both parts come from the model's own function over the full sequence (`vlx.compat.rope_index`), never from 2-D
positions: 2-D positions copied into the three planes put every token after an image at the wrong place, and
transformers' forward, left to find a continuation's positions itself, derives them from the mask of cache and new
tokens together, which fails under a mask (5.25). Before the model runs, the positions the function gives the prompt
alone are compared with the prompt's part of every [prompt + answer] sequence: the cache, computed once, equals what
each full forward computes only where they are the same; where they differ, `score_on_a_cache` returns None and the
caller runs the plain path.

For the architectures on `vlx.models.fast.MROPE_SCORING` only (tests/test_mrope_scoring.py backs each entry).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch

from vlx.compat import cache_argument, output_cache, rope_index
from vlx.models.batches import append_tokens, on_model
from vlx.models.fast import MROPE_SCORING, model_architecture

if TYPE_CHECKING:
    from vlx.models.types import LoadedModel


def applies(model: LoadedModel, inputs: Any) -> bool:
    """An architecture on `MROPE_SCORING`, whose model has its rope-index function, and a batch with images or videos
    and the modality row that function reads (`mm_token_type_ids`); a batch without them the model positions as
    plain text, which the plain path does."""
    return (
        model_architecture(model) in MROPE_SCORING
        and "mm_token_type_ids" in inputs
        and any(inputs.get(key) is not None for key in ("image_grid_thw", "video_grid_thw"))
        and rope_index(model) is not None
    )


def positions_per_answer(
    model: LoadedModel, inputs: Any, answer_ids: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, list[torch.Tensor]] | None:
    """The prompts' 3-D positions [3, B, T] and, per answer, those of its tokens but the last [3, B, L - 1], from the
    model's rope-index function over each [prompt + answer] sequence as `score_per_answer` builds it; None where the
    prompt part of one differs from the prompt's own positions."""
    positions = rope_index(model)
    assert positions is not None  # `applies` checked it
    prompt = positions(inputs)  # [3, B, T]
    batch, width = inputs["input_ids"].shape
    follow = []
    for ids in answer_ids:
        # every row gets the same answer, so `append_tokens` pads nothing: the prompt keeps columns 0..T-1
        full = positions(append_tokens(copy.copy(inputs), [ids] * batch, pad_id))  # [3, B, T + L]
        if not torch.equal(full[..., :width], prompt):
            return None
        follow.append(full[..., width : width + len(ids) - 1])
    return prompt, follow


def score_on_a_cache(model: LoadedModel, inputs: Any, answer_ids: list[list[int]], pad_id: int) -> torch.Tensor | None:
    """[B, n_answers] log-likelihoods from one left-padded prefill with the KV cache on and a continuation per answer,
    at the model's own 3-D positions; None where those cannot be shared (`positions_per_answer`).

    Args:
        model: a model whose architecture is on `MROPE_SCORING` (`applies`).
        inputs: the processor's left-padded batch (with `mm_token_type_ids` and the image grid).
        answer_ids: each answer's token ids.
        pad_id: the tokenizer's padding id.
    """
    plan = positions_per_answer(model, inputs, answer_ids, pad_id)  # on the CPU, before the batch moves
    if plan is None:
        return None
    prompt_positions, follow_positions = plan
    device = model.device
    inputs = on_model(model, inputs)
    prompt_mask = inputs["attention_mask"]
    batch = prompt_mask.shape[0]
    out = model(**inputs, position_ids=prompt_positions.to(device), use_cache=True, logits_to_keep=1)
    cache = output_cache(out)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]: the next token after each prompt
    cache_arg = cache_argument(model)
    totals = []
    for ids, positions in zip(answer_ids, follow_positions, strict=True):
        logp = first[:, ids[0]]
        if len(ids) > 1:
            follow = torch.tensor(ids[:-1], device=device).expand(batch, -1)  # [B, L-1]
            mask = torch.cat([prompt_mask, torch.ones_like(follow)], dim=1)
            step = model(
                input_ids=follow,
                attention_mask=mask,
                position_ids=positions.to(device),
                use_cache=True,
                **{cache_arg: cache},
            )
            logps = torch.log_softmax(step.logits.float(), dim=-1)  # [B, L-1, V]
            target = torch.tensor(ids[1:], device=device).expand(batch, -1)
            logp = logp + logps.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(dim=-1)
            cache.crop(-(len(ids) - 1))  # back to the prompt for the next answer
        totals.append(logp)
    return torch.stack(totals, dim=1)
