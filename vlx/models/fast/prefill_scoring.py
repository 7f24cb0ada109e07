"""Label scores from one shared prefill, for the architectures on `vlx.models.fast.ALLOWED`.

Causal prompts (`score_in_one_forward`): one forward without a KV cache.

Every answer's tokens but its last are appended after the prompts as a "tail", each answer attending to its own
prompt and its own earlier tokens (`tail_mask`), with positions continuing each prompt's own length. The prompts are
right-padded: padding at the end cannot reach a real token through causal attention, so the prompt part runs SDPA's
unmasked causal kernel rather than a masked one over ~2,400 x 2,400 scores, and with no cache object the decoder
blocks run compiled (`compile_cache_free`).

Prompts that attend both ways (PaliGemma's prefix; `score_on_a_cache`): the prompt batch runs once with the KV cache
on and each answer's tokens run on top of it (cropped back after each answer), so n labels cost one prefill plus n
short continuations instead of n full forwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from vlx.compat import cache_argument, output_cache
from vlx.models.batches import on_model, pad_right
from vlx.models.fast import allowed
from vlx.models.fast.attention import prefill_aware

if TYPE_CHECKING:
    from vlx.models.types import LoadedModel


def applies(model: LoadedModel, inputs: Any) -> bool:
    """An architecture on the allow-list, a causal prompt (no `token_type_ids`: PaliGemma's prefix attends both
    ways, so its prompt cannot be right-padded without a mask) and vlx's attention function."""
    return allowed(model) and "token_type_ids" not in inputs and prefill_aware(model)


def score_in_one_forward(
    model: LoadedModel, inputs: Any, answer_ids: list[list[int]], multiple: int, pad_id: int
) -> torch.Tensor:
    """[B, n_answers] log-likelihoods from one cache-free forward over the prompts, right-padded to a multiple of
    `multiple` positions, and the answers' tail."""
    inputs = on_model(model, pad_right(inputs, multiple, pad_id))
    device = model.device
    lengths = inputs.pop("attention_mask").sum(dim=1)  # [B]
    batch, width = inputs["input_ids"].shape
    # the tail: each answer's tokens but the last (each predicts the next), at positions after its prompt
    tail = torch.tensor([t for ids in answer_ids for t in ids[:-1]], dtype=torch.long, device=device)
    offsets = torch.tensor([k for ids in answer_ids for k in range(len(ids) - 1)], dtype=torch.long, device=device)
    size = len(tail)
    extra: dict[str, Any] = {}
    if size:
        block = torch.tensor([a for a, ids in enumerate(answer_ids) for _ in ids[:-1]], device=device)
        # a tail position sees its own prompt's real tokens, and the tokens of its own answer up to itself
        own = (block[:, None] == block[None, :]) & torch.ones(size, size, dtype=torch.bool, device=device).tril()
        prompt = torch.arange(width, device=device)[None, :] < lengths[:, None]  # [B, W]
        mask = torch.cat([prompt[:, None, :].expand(batch, size, width), own.expand(batch, size, size)], dim=2)
        positions = torch.arange(width, device=device).expand(batch, width)
        extra = {
            "tail_mask": mask[:, None],  # [B, 1, T, W + T]
            "position_ids": torch.cat([positions, lengths[:, None] + offsets[None, :]], dim=1),
            # all ones: no padding for transformers to mask (and no packed-sequence guess from the positions)
            "attention_mask": torch.ones(batch, width + size, dtype=torch.long, device=device),
        }
        inputs["input_ids"] = torch.cat([inputs["input_ids"], tail.expand(batch, size)], dim=1)
    # only the logits that score something: each prompt's last token, and the tail
    ends = torch.unique(lengths - 1)  # sorted: the distinct last positions in the batch
    keep = torch.cat([ends, width + torch.arange(size, device=device)])
    logits = model(**inputs, **extra, use_cache=False, logits_to_keep=keep).logits  # [B, len(keep), V]
    logps = torch.log_softmax(logits.float(), dim=-1)
    rows = torch.arange(batch, device=device)
    first = logps[rows, torch.searchsorted(ends, lengths - 1)]  # [B, V]: the next token after each prompt
    totals, at = [], len(ends)
    for ids in answer_ids:
        logp = first[:, ids[0]]
        for k, token in enumerate(ids[1:]):  # tail position `at + k` holds ids[k] and predicts ids[k + 1]
            logp = logp + logps[:, at + k, token]
        at += len(ids) - 1
        totals.append(logp)
    return torch.stack(totals, dim=1)


def score_on_a_cache(model: LoadedModel, inputs: Any, answer_ids: list[list[int]]) -> torch.Tensor:
    """[B, n_answers] log-likelihoods from a left-padded prefill with the KV cache on and one continuation per
    answer."""
    inputs = on_model(model, inputs)
    prompt_mask = inputs["attention_mask"]
    batch = prompt_mask.shape[0]
    out = model(**inputs, use_cache=True, logits_to_keep=1)
    cache = output_cache(out)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]: the next token after each prompt
    cache_arg = cache_argument(model)
    totals = []
    for ids in answer_ids:
        logp = first[:, ids[0]]
        if len(ids) > 1:
            follow = torch.tensor(ids[:-1], device=model.device).expand(batch, -1)  # [B, L-1]
            mask = torch.cat([prompt_mask, torch.ones_like(follow)], dim=1)
            step = model(input_ids=follow, attention_mask=mask, use_cache=True, **{cache_arg: cache})
            logps = torch.log_softmax(step.logits.float(), dim=-1)  # [B, L-1, V]
            target = torch.tensor(ids[1:], device=model.device).expand(batch, -1)
            logp = logp + logps.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(dim=-1)
            cache.crop(-(len(ids) - 1))  # back to the prompt for the next answer (negative: works across versions)
        totals.append(logp)
    return torch.stack(totals, dim=1)
