"""What every task shares: the limit, the image checks, the prompt and the answer parser."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from vlx._runtime import usable_cpus
from vlx.errors import ConfigError, DataError
from vlx.images import image_problem
from vlx.records import Example, Split
from vlx.tasks.parsing import parse_label
from vlx.tasks.references import id_key, read_references

log = logging.getLogger(__name__)

BAD_IMAGE_POLICIES = ("fail", "skip")


class Task:
    """A classification-with-explanation task read from its official files.

    Subclasses set `labels` and implement `read_examples` (file parsing with row-exact errors); this class applies
    the limit and checks every image before any model is loaded.
    """

    labels: tuple[str, ...] = ()
    # the positive class of a binary task (AUROC, binary F1); None for multi-class tasks
    positive: str | None = None
    # the seed's demonstration strategy for this task (shots.strategy=auto)
    shot_strategy: str = "balanced_random"
    # columns of the seed's predictions.csv for this task
    csv_columns: tuple[str, ...] = ("img_path", "explanation")

    def __init__(
        self,
        name: str,
        split: str,
        prompt: str = "",
        limit: int | None = None,
        on_bad_image: str = "fail",
        references: str | Path | None = None,
    ):
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ConfigError(f"task.on_bad_image={on_bad_image!r}: use one of {', '.join(BAD_IMAGE_POLICIES)}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"task.limit={limit!r}: use a positive number of items, or null for the whole split")
        self.name = name
        self.split = split
        self.prompt = prompt
        self.limit = limit
        self.on_bad_image = on_bad_image
        self.references = references

    def read_examples(self) -> list[Example]:
        """Reads every item of `self.split` from the official files, raising DataError on a bad file or row."""
        raise NotImplementedError

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
        examples, skipped = _check_images(examples, self.on_bad_image)
        if not examples:
            raise DataError(f"task {self.name!r}, split {self.split!r}: no usable items (all images were skipped)")
        return Split(examples=examples, skipped=skipped)

    def instruction(self, example: Example) -> str:
        """The task's zero-shot prompt filled in for one item: `{text}` (and `{hypothesis}`) is its text, any other
        placeholder one of its fields (a table task's columns)."""
        return self.prompt.format(**{**dict(example.fields), "hypothesis": example.text, "text": example.text})

    def label_answer(self, label: str) -> str:
        """How an answer states a label ("Entailment", "Not offensive"): demonstrations and label scoring use it."""
        return label[:1].upper() + label[1:]

    def demo_answer(self, example: Example) -> str:
        """A demonstration's answer, in the form the model should give: the label, then the explanation (the first
        reference, where there is one)."""
        answer = self.label_answer(example.label or "") + "."
        return f"{answer} {example.explanations[0]}" if example.explanations else answer

    def parse(self, text: str) -> tuple[str | None, str]:
        """The model's free text -> (label or None, explanation)."""
        return parse_label(self.labels, text)


def attach_references(examples: list[Example], refs: dict[str, tuple[str, ...]], source: str | Path) -> list[Example]:
    """Examples with their explanations taken from a references file (items it lacks get none)."""
    with_refs = [replace(ex, explanations=refs.get(id_key(ex.id), ())) for ex in examples]
    found = sum(bool(ex.explanations) for ex in with_refs)
    log.info("references from %s: %d of %d items have at least one", source, found, len(examples))
    return with_refs


def _check_unique_ids(examples: list[Example]) -> None:
    seen: dict[str, str] = {}
    for ex in examples:
        if ex.id in seen:
            raise DataError(f"{ex.source}: id {ex.id!r} already used at {seen[ex.id]}; ids must be unique in a split")
        seen[ex.id] = ex.source


def _image_problems(paths: list[Path]) -> dict[Path, str | None]:
    """Each image decoded once (many items share one: e-SNLI-VE has ~15 hypotheses per image), in threads: PIL's
    decoders release the interpreter lock."""
    workers = min(8, usable_cpus())
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vlx-image-check") as pool:
        results = pool.map(image_problem, paths)
        bar = tqdm(results, total=len(paths), desc="checking images", unit="image", disable=len(paths) < 2000)
        return dict(zip(paths, bar, strict=True))


def _check_images(examples: list[Example], policy: str) -> tuple[list[Example], list[dict[str, str]]]:
    problems = _image_problems(list(dict.fromkeys(ex.image for ex in examples)))
    kept: list[Example] = []
    skipped: list[dict[str, str]] = []
    for ex in examples:
        problem = problems[ex.image]
        if problem is None:
            kept.append(ex)
        elif policy == "fail":
            raise DataError(
                f"{ex.source}: image {ex.image}: {problem}. Fix the path (task.image_dir / task.data_dir) or the "
                f"file, or run with task.on_bad_image=skip to leave such items out (they are listed in the log)."
            )
        else:
            log.warning("skipping %s (%s): image %s: %s", ex.id, ex.source, ex.image, problem)
            skipped.append({"id": ex.id, "image": str(ex.image), "source": ex.source, "reason": problem})
    if skipped:
        log.warning("skipped %d of %d items for bad images", len(skipped), len(examples))
    return kept, skipped
