"""The prediction engine: a queue of items through a model adapter, batch by batch.

Batches are prepared ahead on the CPU (demonstrations chosen, prompts rendered, images read and processed), decoded
on the model (free generation, label scores, or a label then its explanation), and halved after an out-of-memory
error; the infer stage (`vlx.stages.infer`) decides what runs and writes what comes out.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vlx.errors import DataError
from vlx.fewshot import ShotSelector
from vlx.images import load_rgb
from vlx.models.generation import Generation
from vlx.models.hf import VLMAdapter
from vlx.prefetch import prepared_batches
from vlx.records import Example
from vlx.tasks import Task
from vlx.tasks.answers import most_probable

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=512)
def demo_image(path: Path, longest_side: int | None) -> Image.Image:
    """A demonstration's image, downscaled to `longest_side` (fewer LLaVA-NeXT tiles); cached, since the same
    demonstrations recur across queries."""
    image = load_rgb(path)
    if longest_side is not None:
        image.thumbnail((longest_side, longest_side))
    return image


def build_inputs(
    model: VLMAdapter, task: Task, batch: list[Example], demos: list[list[Example]], demo_image_size: int | None
) -> tuple[list[str], list[Image.Image]]:
    """The rendered prompts of a batch and its images, in the order of the prompts' image places: each item's
    demonstrations first (a user turn with image and instruction, an assistant turn with the answer), the query last."""
    prompts, images = [], []
    for example, shots in zip(batch, demos, strict=True):
        turns = [(task.instruction(d), task.demo_answer(d)) for d in shots]
        prompts.append(model.render_prompt(example, task.instruction(example), turns))
        images += [demo_image(d.image, demo_image_size) for d in shots] + [load_rgb(example.image)]
    return prompts, images


@dataclass(frozen=True)
class Prepared:
    """A batch ready for the model: its items, their demonstrations, prompts, images and the processor's tensors."""

    start: int  # position of the first item in the batching order
    count: int  # items of the queue this batch covers (its examples, and those skipped)
    examples: list[Example]
    demos: list[list[Example]]
    prompts: list[str]
    images: list[Image.Image]
    inputs: Any
    skipped: list[dict[str, str]]  # items that could not be prepared (task.on_bad_image=skip)


def prepare_batch(
    model: VLMAdapter,
    task: Task,
    selector: ShotSelector | None,
    queue: list[Example],
    start: int,
    size: int,
    demo_image_size: int | None,
    on_bad_image: str = "fail",
) -> Prepared:
    """The CPU side of a batch (demonstrations, prompts, images read and processed), made ahead of the GPU.

    An item that cannot be prepared (its image fails to decode now, or the processor refuses it) is found by
    preparing the items one by one; it is left out with `on_bad_image=skip` and is a DataError naming it otherwise.
    """
    examples = queue[start : start + size]
    count = len(examples)
    demos = [selector.select(ex) if selector else [] for ex in examples]
    try:
        prompts, images = build_inputs(model, task, examples, demos, demo_image_size)
        return Prepared(start, count, examples, demos, prompts, images, model.encode(prompts, images), [])
    except Exception as err:
        failure = err
    kept, skipped = [], []
    for example, shots in zip(examples, demos, strict=True):
        try:
            model.encode(*build_inputs(model, task, [example], [shots], demo_image_size))
        except Exception as err:  # noqa: BLE001 - named in the message or the skipped list
            problem = str(err) if isinstance(err, DataError) else f"{type(err).__name__}: {err}"
            skipped.append({"id": example.id, "image": str(example.image), "source": example.source,
                            "reason": problem})  # fmt: skip
        else:
            kept.append((example, shots))
    if not skipped:
        raise failure  # not one item's fault
    if on_bad_image == "fail":
        bad = skipped[0]
        raise DataError(
            f"{bad['source']}: item {bad['id']} cannot be prepared for the model ({bad['reason']}). Fix or remove "
            f"it, or run with task.on_bad_image=skip to leave such items out (finished predictions are kept)"
        ) from failure
    for bad in skipped:
        log.warning("skipping %s (%s): %s", bad["id"], bad["source"], bad["reason"])
    examples, demos = [e for e, _ in kept], [d for _, d in kept]
    prompts, images = build_inputs(model, task, examples, demos, demo_image_size) if kept else ([], [])
    inputs = model.encode(prompts, images) if kept else None
    return Prepared(start, count, examples, demos, prompts, images, inputs, skipped)


DECODERS = ("generate", "score", "score_then_explain")


def decode(
    how: str, model: VLMAdapter, task: Task, batch: Prepared, generation: dict[str, Any]
) -> tuple[list[str], list[dict[str, float] | None], Generation | None]:
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
    scored = model.score(batch.prompts, batch.images, [task.label_text(label) for label in labels],
                         inputs=batch.inputs)  # fmt: skip
    scores = [_over(row, [task.label_text(label) for label in item], item) for row, item in zip(scored, options,
              strict=True)]  # fmt: skip
    # an option repeated under two letters is one answer: its copies' probabilities are summed (A-OKVQA)
    chosen = [task.stated(most_probable(s, dict(zip(ex.options, ex.choices, strict=True)) if ex.choices else None))
              for s, ex in zip(scores, batch.examples, strict=True)]  # fmt: skip
    if how == "score":
        return chosen, scores, None
    forced = [model.answer_prefix + c for c in chosen]
    result = model.generate(batch.prompts, batch.images, ids=ids, continuations=forced, inputs=batch.inputs,
                            **generation)  # fmt: skip
    return [f"{c} {t}".strip() for c, t in zip(chosen, result.texts, strict=True)], scores, result


def _over(row: dict[str, float], answers: list[str], labels: tuple[str, ...]) -> dict[str, float]:
    """An item's label probabilities over its own options: the softmax over those answers alone (the scores are a
    softmax over every answer scored, so dividing by the options' sum is the same)."""
    if len(answers) == len(row):
        return {label: row[a] for label, a in zip(labels, answers, strict=True)}
    total = sum(row[a] for a in answers)
    return {label: row[a] / total for label, a in zip(labels, answers, strict=True)}


@dataclass(frozen=True)
class Decoded:
    """A finished batch: its items and demonstrations, answers, label probabilities and generation stats."""

    examples: list[Example]
    demos: list[list[Example]]
    answers: list[str]
    scores: list[dict[str, float] | None]
    generation: Generation | None
    batch_size: int  # the batch size now (halved after out-of-memory errors)
    skipped: list[dict[str, str]]  # items left out (task.on_bad_image=skip)


def predict_batches(
    model: VLMAdapter,
    task: Task,
    queue: list[Example],
    batch_size: int,
    how: str,
    generation: dict[str, Any],
    *,
    selector: ShotSelector | None = None,
    seed: int = 0,
    demo_image_size: int | None = None,
    workers: int = 0,
    on_bad_image: str = "fail",
) -> Iterator[Decoded]:
    """Runs `queue` through the model batch by batch, yielding each finished batch in order.

    Batches are prepared ahead (images read and processed) by `workers` processes, or a thread when 0, while the
    GPU works on the current one (vlx.prefetch). A batch that runs out of CUDA memory is retried at half the size
    (nothing of it was yielded). With sampling, each batch's seed comes from its first id, so a resumed run samples
    what an uninterrupted one would.
    """
    size = batch_size
    position = 0

    def prepare(begin: int, n: int) -> Prepared:
        return prepare_batch(model, task, selector, queue, begin, n, demo_image_size, on_bad_image)

    while position < len(queue):
        for batch in prepared_batches(prepare, position, size, len(queue), workers):
            if not batch.examples:  # every item of it was left out
                position += batch.count
                yield Decoded([], [], [], [], None, size, batch.skipped)
                continue
            if generation.get("do_sample"):
                torch.manual_seed(batch_seed(seed, batch.examples[0].id))
            try:
                answers, scores, result = decode(how, model, task, batch, generation)
            except torch.OutOfMemoryError:
                if size == 1:
                    raise
                size //= 2  # nothing of this batch was yielded: retry from it, smaller
                torch.cuda.empty_cache()
                log.warning("out of GPU memory: batch size now %d (finished items are kept)", size)
                break
            position += batch.count
            yield Decoded(batch.examples, batch.demos, answers, scores, result, size, batch.skipped)


BATCHING = ("length", "dataset")
# batch_size=auto starts here on a GPU and halves on out-of-memory errors; on a CPU larger batches gain nothing
AUTO_BATCH_SIZE = {"cuda": 64, "cpu": 8}


def batching_order(examples: list[Example], how: str) -> list[Example]:
    """The order items are batched in. `length` puts items with similar images (aspect ratio: LLaVA-NeXT's tile
    count) and similar text lengths next to each other, so batches pad less; outputs do not depend on batching.
    `dataset` keeps the file order. The sort is stable, so a resumed run forms the same batches as an uninterrupted
    one."""
    if how == "dataset":
        return examples

    def key(example: Example) -> tuple[float, int]:
        with Image.open(example.image) as image:  # the header only
            width, height = image.size
        return (round(width / height, 1), len(example.text))

    return sorted(examples, key=key)


def initial_batch_size(setting: int | str) -> int:
    if setting != "auto":
        return int(setting)
    return AUTO_BATCH_SIZE["cuda" if torch.cuda.is_available() else "cpu"]


def batch_seed(seed: int, first_id: str) -> int:
    """The sampling seed of a batch, from the run seed and its first item's id.

    Predictions are appended batch by batch, so a killed run stops at a batch boundary and a resumed run (same
    batch_size) forms the same batches: seeding each batch this way makes a resumed sampling run equal an
    uninterrupted one. Python's hash() is salted per process, hence sha256.
    """
    digest = hashlib.sha256(f"{seed}\x1f{first_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)
