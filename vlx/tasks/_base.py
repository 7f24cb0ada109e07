"""What every task shares: the limit, the image checks, the prompt and the answer parser."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from vlx.errors import ConfigError, DataError
from vlx.tasks.answers import DEFAULT_ANSWER, AnswerFormat
from vlx.tasks.images import BAD_IMAGE_POLICIES, check_images
from vlx.tasks.items import Example, Split
from vlx.tasks.parsing import parse_label, parse_open, with_aliases
from vlx.tasks.references import check_matches, id_key, read_references

log = logging.getLogger(__name__)

# what to do about an item whose image is missing or undecodable
BAD_IMAGE_REMEDY = (
    "Fix the path (task.image_dir / task.data_dir) or the file, or run with task.on_bad_image=skip "
    "to leave such items out (they are listed in the log)."
)


class Task:
    """A classification-with-explanation task read from its files; what it is (labels, prompt, answer format, few-shot
    strategy) comes from its YAML.

    Subclasses implement `read_examples` (file parsing with row-exact errors); this class applies the limit and checks
    every image before any model is loaded.

    Args:
        name: the task's name (run names, reports).
        split: the split to read.
        labels: the class names, as predictions and metrics name them; empty for open questions (VQA-X), whose
            answer is the text before the answer format's separator, right when it is one of the item's answers.
        prompt: the zero-shot instruction; `{text}` (or `{hypothesis}`) is the item's text, any other placeholder one
            of its fields (a table's columns).
        answer: the answer format (`vlx.tasks.answers.AnswerFormat`), e.g. "{Label}. {explanation}".
        aliases: other surface forms per label that the answer parser accepts (added to vlx's own).
        positive: the positive class of a binary task (AUROC, binary F1); None for multi-class tasks.
        shot_strategy: the demonstration strategy `fewshot.strategy=auto` picks.
        limit: the first N items only (None: all).
        on_bad_image: fail (before any model loads) or skip (listed in the log and summary).
        references: a jsonl of reference explanations to use instead of the data's (`vlx.tasks.references`).
        release: what the official release holds, for `vlx stage=prepare`: `where` (how to get it), `splits`
            (split -> `rows`, the official row count) and `sha256` (file name -> checksum, where known).
    """

    # columns of the seed's predictions.csv for this task
    csv_columns: tuple[str, ...] = ("img_path", "explanation")

    def __init__(
        self,
        name: str,
        split: str,
        labels: Sequence[str],
        prompt: str = "",
        answer: str = DEFAULT_ANSWER,
        aliases: Mapping[str, Sequence[str]] | None = None,
        positive: str | None = None,
        shot_strategy: str = "balanced_random",
        limit: int | None = None,
        on_bad_image: str = "fail",
        references: str | Path | None = None,
        release: Mapping[str, Any] | None = None,
    ):
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ConfigError(f"task.on_bad_image={on_bad_image!r}: use one of {', '.join(BAD_IMAGE_POLICIES)}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"task.limit={limit!r}: use a positive number of items, or null for the whole split")
        self.labels = tuple(str(label) for label in labels or ())
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"task {name!r}: task.labels={list(self.labels)}; list each class name once")
        if positive is not None and positive not in self.labels:
            raise ConfigError(f"task.positive={positive!r} is not one of task.labels ({', '.join(self.labels)})")
        unknown = sorted({k.lower() for k in aliases or {}} - {label.lower() for label in self.labels})
        if unknown:
            raise ConfigError(f"task.aliases names {unknown}, which are not in task.labels ({', '.join(self.labels)})")
        self.name = name
        self.split = split
        self.prompt = prompt
        self.answer_format = AnswerFormat(answer)
        self.aliases = with_aliases(aliases)
        self.positive = positive
        self.shot_strategy = shot_strategy
        self.limit = limit
        self.on_bad_image = on_bad_image
        self.references = references
        self.release = dict(release or {})

    def read_examples(self) -> list[Example]:
        """Reads every item of `self.split` from the official files, raising DataError on a bad file or row."""
        raise NotImplementedError

    def files(self) -> list[Path]:
        """The split's data files (what `vlx stage=prepare` checks and checksums)."""
        return []

    def examples(self) -> list[Example]:
        """The split's items (first `limit`) with their reference explanations; images are not checked (a few-shot
        pool can be a whole training split: only the demonstrations used get their images opened)."""
        examples = self.read_examples()
        if self.limit is not None:
            examples = examples[: self.limit]
        if self.references is not None:
            examples = attach_references(examples, read_references(self.references), self.references)
        return examples

    def load(self) -> Split:
        """The split's items (first `limit`), with every image checked.

        Raises:
            DataError: the split is empty, an id repeats, or an image is missing or undecodable with
                `on_bad_image=fail`.
        """
        examples = self.examples()
        _check_unique_ids(examples)
        examples, skipped = check_images(examples, self.on_bad_image, BAD_IMAGE_REMEDY)
        if not examples:
            raise DataError(f"task {self.name!r}, split {self.split!r}: no usable items (all images were skipped)")
        return Split(examples=examples, skipped=skipped)

    def instruction(self, example: Example) -> str:
        """The task's zero-shot prompt filled in for one item: `{text}` (and `{hypothesis}`) is its text, any other
        placeholder one of its fields (a table task's columns)."""
        return self.prompt.format(**{**dict(example.fields), "hypothesis": example.text, "text": example.text})

    @property
    def open_answers(self) -> bool:
        """Whether answers are open text (no label set: VQA-X) rather than one of `labels`."""
        return not self.labels

    def options(self, example: Example) -> tuple[str, ...]:
        """The labels an item may take: its own options (a multiple-choice item's letters), else all the task's."""
        return example.options or self.labels

    def label_text(self, label: str) -> str:
        """How an answer states a label ("Entailment", "Not offensive"): label scoring compares these texts."""
        return self.answer_format.label_text(label)

    def stated(self, label: str) -> str:
        """The answer up to its explanation ("Entailment."): a scored label's answer."""
        return self.answer_format.stated(label)

    def answer(self, label: str, explanation: str) -> str:
        """The whole answer in the task's format: demonstrations and training targets."""
        return self.answer_format.answer(label, explanation)

    def demo_answer(self, example: Example) -> str:
        """A demonstration's answer, in the form the model should give: the label, then the explanation (the first
        reference, where there is one); the explanation alone for an item without a label."""
        explanation = example.explanations[0] if example.explanations else ""
        if example.label is None:  # a task without gold labels (HatReD) shows and learns the explanation alone
            return explanation
        return self.answer(example.label, explanation)

    def parse(self, text: str, example: Example | None = None) -> tuple[str | None, str]:
        """The model's free text -> (label or None, explanation); with `example`, only its options count."""
        if self.open_answers:
            return parse_open(text, self.answer_format.separator)
        labels = self.options(example) if example is not None else self.labels
        label, explanation = parse_label(labels, text, aliases=self.aliases)
        if label is not None:  # a format of the task's own ("neutral -- ..."): its statement of the label removed
            stated = self.stated(label).lower()
            if stated and explanation.lower().startswith(stated):
                explanation = explanation[len(stated) :].strip()
        return label, explanation


def attach_references(examples: list[Example], refs: dict[str, tuple[str, ...]], source: str | Path) -> list[Example]:
    """Examples with their explanations taken from a references file (items it lacks get none)."""
    with_refs = [replace(ex, explanations=refs.get(id_key(ex.id), ())) for ex in examples]
    found = sum(bool(ex.explanations) for ex in with_refs)
    if not found:  # a warning, not a refusal: the file may be meant for the few-shot pool's split
        check_matches([ex.id for ex in examples], refs, source, f"the {len(examples)} items", refuse=False)
    log.info("references from %s: %d of %d items have at least one", source, found, len(examples))
    return with_refs


def _check_unique_ids(examples: list[Example]) -> None:
    seen: dict[str, str] = {}
    for ex in examples:
        if ex.id in seen:
            raise DataError(f"{ex.source}: id {ex.id!r} already used at {seen[ex.id]}; ids must be unique in a split")
        seen[ex.id] = ex.source
