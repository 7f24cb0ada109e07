"""What fine-tuning feeds the Trainer: (image, input text, target text) items and a collator that batches them
through the model adapter, so that only the target tokens carry loss."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlx.errors import ConfigError
from vlx.tasks.images import load_rgb
from vlx.tasks.items import Example

log = logging.getLogger(__name__)

TARGETS = ("explanation", "label_and_explanation")


@dataclass(frozen=True)
class TrainItem:
    """One training item: an image, the prompt's text and the answer the model learns."""

    id: str
    image: Path
    text: str  # the model's input text: task.prompt for the item (the seed's `explain en {hypothesis}`)
    target: str  # what it learns to write


def training_items(
    examples: Sequence[Example],
    target: str,
    prompt: Callable[[Example], str],
    only_ids: Collection[str] | None = None,
    answer: Callable[[str, str], str] | None = None,
) -> list[TrainItem]:
    """Training items from task examples.

    Args:
        examples: the split's items (each needs a reference explanation; label_and_explanation also a label).
        target: `explanation` (the seed's) or `label_and_explanation`.
        prompt: an item -> the model's input text (`Task.instruction`: task.prompt filled in, as inference asks).
        only_ids: keep only these ids (the seed's filter: items a classifier got right), or None for all.
        answer: (label, explanation) -> the answer in the task's format (`Task.answer`), which label_and_explanation
            learns and the answer parser reads.

    Raises:
        ConfigError: an unknown target, or items without what the target needs.
    """
    if target not in TARGETS:
        raise ConfigError(f"finetune.target={target!r}: use one of {', '.join(TARGETS)}")
    if target == "label_and_explanation" and answer is None:
        raise ConfigError("finetune.target=label_and_explanation needs the task's answer format")
    if only_ids is not None:
        before = len(examples)
        examples = [ex for ex in examples if ex.id in only_ids]
        log.info("kept %d of %d items that the classifier got right", len(examples), before)
    items = []
    for ex in examples:
        if not ex.explanations:
            raise ConfigError(f"{ex.source}: item {ex.id} has no reference explanation to learn (task.references?)")
        learned = ex.explanations[0]
        if target == "label_and_explanation":
            if ex.label is None:
                raise ConfigError(f"{ex.source}: item {ex.id} has no label; use finetune.target=explanation")
            assert answer is not None  # refused above
            learned = answer(ex.label, learned)
        items.append(TrainItem(id=ex.id, image=ex.image, text=prompt(ex), target=learned))
    if not items:
        raise ConfigError("no training items left (check finetune.only_correct_from and task.limit)")
    return items


class Collator:
    """Loads a batch's images and asks the model adapter for a training batch with `labels`.

    Args:
        adapter: the model adapter (its `training_batch` masks everything but the target tokens).
        target_logits_only: compute logits only where the loss needs them. Batches are left-padded, so the targets
            are the last tokens of every row; `logits_to_keep` then skips the output head on the ~1,000 image and
            prompt positions per item. The loss and gradients are the same; the [B, T, vocab] logits (fp32 over
            Gemma's 257k vocabulary: ~1 GiB per PaliGemma-448 item) are not made.
    """

    def __init__(self, adapter: Any, target_logits_only: bool = True):
        self.adapter = adapter
        self.target_logits_only = target_logits_only

    def __call__(self, items: list[TrainItem]) -> Any:
        """A training batch of `items`: their images loaded and the processor's inputs with labels."""
        images = [load_rgb(item.image) for item in items]
        batch = self.adapter.training_batch(images, [i.text for i in items], [i.target for i in items])
        return keep_target_logits(batch) if self.target_logits_only else batch


def keep_target_logits(batch: Any) -> Any:
    """Slices `labels` to the last K positions and asks the model for logits there only (`logits_to_keep=K`).

    K reaches one position before the earliest target token of the batch, because the loss shifts by one (the
    logit at position p predicts the label at p + 1).
    """
    labels = batch["labels"]  # [B, T], -100 outside the targets
    width = labels.shape[1]
    targets = (labels != -100).any(dim=0).nonzero()
    if len(targets) == 0:
        return batch
    keep = width - int(targets.min()) + 1
    if keep >= width:
        return batch
    batch["labels"] = labels[:, -keep:]
    batch["logits_to_keep"] = keep
    return batch
