"""A prepared batch through the model: free generation, label scores, or a label then its explanation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vlx.engine.batches import Prepared
from vlx.models.generation import Generation
from vlx.models.hf import VLMAdapter
from vlx.tasks import Task
from vlx.tasks.answers import most_probable

DECODERS = ("generate", "score", "score_then_explain")


def decode(
    how: str, model: VLMAdapter, task: Task, batch: Prepared, generation: dict[str, Any]
) -> tuple[list[str], Sequence[dict[str, float] | None], Generation | None]:
    """The batch's answers, label probabilities (or None per item) and generation stats.

    generate: free text, parsed afterwards. score: the probability of each label's answer after the prompt (over the
    item's own options, where they differ per item: a multiple-choice question's letters); the answer is the most
    probable label. score_then_explain: that label, then the model's explanation generated after it (the label's
    answer is put in the model's mouth).
    """
    ids = [ex.id for ex in batch.examples]
    if how == "generate":
        result = model.generate(batch.prompts, batch.images, ids=ids, inputs=batch.inputs, **generation)
        return result.texts, [None] * len(ids), result
    options = [task.options(ex) for ex in batch.examples]
    labels = list(dict.fromkeys(label for item in options for label in item))  # every label an item of it may take
    scored = model.score(batch.prompts, batch.images, [task.label_text(label) for label in labels], inputs=batch.inputs)
    scores = [
        _over(row, [task.label_text(label) for label in item], item) for row, item in zip(scored, options, strict=True)
    ]
    # an option repeated under two letters is one answer: its copies' probabilities are summed (A-OKVQA)
    chosen = [
        task.stated(most_probable(s, dict(zip(ex.options, ex.choices, strict=True)) if ex.choices else None))
        for s, ex in zip(scores, batch.examples, strict=True)
    ]
    if how == "score":
        return chosen, scores, None
    forced = [model.answer_prefix + c for c in chosen]
    result = model.generate(
        batch.prompts, batch.images, ids=ids, continuations=forced, inputs=batch.inputs, **generation
    )
    return [f"{c} {t}".strip() for c, t in zip(chosen, result.texts, strict=True)], scores, result


def _over(row: dict[str, float], answers: list[str], labels: tuple[str, ...]) -> dict[str, float]:
    """An item's label probabilities over its own options: the softmax over those answers alone (the scores are a
    softmax over every answer scored, so dividing by the options' sum is the same)."""
    if len(answers) == len(row):
        return {label: row[a] for label, a in zip(labels, answers, strict=True)}
    total = sum(row[a] for a in answers)
    return {label: row[a] / total for label, a in zip(labels, answers, strict=True)}
