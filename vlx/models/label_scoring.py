"""Label scoring: the probability of each label's answer after the prompt.

Probabilities are the softmax over labels of the answers' total log-likelihoods. Plain transformers code for every
model: one forward per answer over the prompts with that answer's tokens appended, positions the model's own
(transformers computes them from the mask, Qwen-VL's 3-D M-RoPE included). The architectures on
`vlx.models.fast.ALLOWED` share one prefill instead (`vlx.models.fast.prefill_scoring`: one cache-free forward for
causal prompts, a KV cache and a continuation per answer for PaliGemma's); both equal a full forward per label
(tests/test_families.py, tests/test_fast_paths.py). The M-RoPE architectures on `vlx.models.fast.MROPE_SCORING`
(Qwen2-VL, Qwen2.5-VL, Qwen3-VL) prefill once too, with a cached continuation per answer at the 3-D positions of the
model's own rope-index function (`vlx.models.fast.mrope`; tests/test_mrope_scoring.py): left to itself on a cached
continuation under a mask, their forward fails (transformers 5.24, 5.25: a size mismatch), so the positions are
always passed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from vlx.models import fast
from vlx.models.batches import append_tokens, encode, on_model, pad_left, token_ids
from vlx.models.fast import mrope
from vlx.models.fast import prefill_scoring as shared_prefill

if TYPE_CHECKING:
    from vlx.models.types import LoadedModel


@torch.inference_mode()
def score_answers(
    model: LoadedModel,
    processor: Any,
    prompts: list[str],
    images: list[Image.Image],
    answers: Sequence[str],
    inputs: Any | None = None,
    pad_to_multiple_of: int | None = None,
    answer_token_type: int = 0,
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
        answer_token_type: the `token_type_ids` of answer tokens (`batches.append_tokens`).

    Returns:
        One {answer: probability} per prompt; probabilities sum to 1 over the answers.
    """
    inputs = encode(processor, prompts, images) if inputs is None else copy.copy(inputs)
    tokenizer = processor.tokenizer
    answer_ids = token_ids(tokenizer, list(answers))
    totals: torch.Tensor | None = None
    if shared_prefill.applies(model, inputs):
        totals = shared_prefill.score_in_one_forward(
            model, inputs, answer_ids, pad_to_multiple_of or 1, tokenizer.pad_token_id
        )
    else:
        if pad_to_multiple_of:
            inputs = pad_left(inputs, pad_to_multiple_of, tokenizer.pad_token_id)
        if fast.allowed(model):
            totals = shared_prefill.score_on_a_cache(model, inputs, answer_ids)
        elif mrope.applies(model, inputs):
            totals = mrope.score_on_a_cache(model, inputs, answer_ids, tokenizer.pad_token_id)
        if totals is None:
            totals = score_per_answer(model, inputs, answer_ids, tokenizer.pad_token_id, answer_token_type)
    probs = torch.softmax(totals, dim=1).tolist()  # [B, n_answers]
    return [dict(zip(answers, row, strict=True)) for row in probs]


def score_per_answer(
    model: LoadedModel, inputs: Any, answer_ids: list[list[int]], pad_id: int, token_type: int
) -> torch.Tensor:
    """[B, n_answers] log-likelihoods from one full forward per answer over the left-padded prompts followed by its
    tokens; the logits are kept for the answer's positions only."""
    totals = []
    for ids in answer_ids:
        batch = append_tokens(copy.copy(inputs), [ids] * inputs["input_ids"].shape[0], pad_id, token_type)
        logits = model(**on_model(model, batch), use_cache=False, logits_to_keep=len(ids) + 1).logits
        logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [B, L, V]: position k predicts ids[k]
        target = torch.tensor(ids, device=logps.device).expand(logps.shape[0], -1)
        totals.append(logps.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(dim=-1))
    return torch.stack(totals, dim=1)
