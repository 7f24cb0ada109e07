"""What a task yields: its items (`Example`, one item as read from the official files) and a split ready for a model
(`Split`: the items kept and those left out, with the reason)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Example:
    """One item of a task split, as read from the official files.

    Attributes:
        id: the item's id in the official data (e-SNLI-VE `pairID`, Hateful Memes image name stem).
        image: path of the image file.
        text: the hypothesis (e-SNLI-VE) or the meme's text (Hateful Memes).
        label: the gold label name, or None where the split has no labels.
        explanations: reference explanations (several allowed; empty where the data has none).
        source: "file:row" of the item, for error messages.
        fields: the item's other columns (name, value), for prompts that name them (`TableTask`).
        options: the labels this item may take, where they differ per item (a multiple-choice question's letters);
            empty: all of the task's.
        choices: a multiple-choice item's option texts, as the data writes them, one per label of `options`
            (two options may repeat a text: A-OKVQA scores the chosen text, so either copy is right).
        answers: an open question's accepted answers (VQA-X's ten annotators'); `label` is the most common one
            (normalised as VQA's answers are).
    """

    id: str
    image: Path
    text: str
    label: str | None
    explanations: tuple[str, ...] = field(default=())
    source: str = ""
    fields: tuple[tuple[str, str], ...] = field(default=())
    options: tuple[str, ...] = field(default=())
    choices: tuple[str, ...] = field(default=())
    answers: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Split:
    """The items of one split that are ready for a model, and those left out (with the reason)."""

    examples: list[Example]
    skipped: list[dict[str, str]]
