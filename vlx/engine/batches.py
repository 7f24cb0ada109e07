"""Batches ready for the model: demonstrations chosen, prompts rendered, images read and processed.

`prepare_batch` makes the CPU side of a batch (ahead of the GPU: `vlx.engine.prefetch`), `split_prepared` halves one
after an out-of-memory error without reading an image again, and `batching_order` sets the order items are batched in.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vlx.engine.shots import ShotSelector
from vlx.errors import DataError
from vlx.models.hf import VLMAdapter
from vlx.tasks import Task
from vlx.tasks.images import load_rgb
from vlx.tasks.items import Example

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
        prompts.append(render_prompt(model, task, example, shots))
        images += [demo_image(d.image, demo_image_size) for d in shots] + [load_rgb(example.image)]
    return prompts, images


def render_prompt(model: VLMAdapter, task: Task, example: Example, demos: Sequence[Example] = ()) -> str:
    """The prompt the model gets for `example`: each demonstration a user turn (its instruction) and an assistant
    turn (its answer), then the example's instruction (what the batches, the manifest and the faithfulness tests
    render alike)."""
    turns = [(task.instruction(d), task.demo_answer(d)) for d in demos]
    return model.render_prompt(example, task.instruction(example), turns)


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
            skipped.append({"id": example.id, "image": str(example.image), "source": example.source, "reason": problem})
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


def split_prepared(model: VLMAdapter, batch: Prepared, at: int) -> tuple[Prepared, Prepared]:
    """`batch`'s first `at` items and the rest, each encoded anew from the batch's prompts and images (no image is
    read or demonstration chosen again)."""
    per_item = [len(d) + 1 for d in batch.demos]  # build_inputs: each item's demonstrations' images, then its own
    cut = sum(per_item[:at])

    def part(items: slice, images: list[Image.Image]) -> Prepared:
        examples, prompts = batch.examples[items], batch.prompts[items]
        return Prepared(
            batch.start, len(examples), examples, batch.demos[items], prompts, images, model.encode(prompts, images), []
        )

    return part(slice(None, at), batch.images[:cut]), part(slice(at, None), batch.images[cut:])


def prompt_tokens(inputs: Any) -> int:
    """The prompt length of a prepared batch's tensors (tokens, the images' included; 0 without inputs)."""
    return int(inputs["input_ids"].shape[-1]) if inputs is not None and "input_ids" in inputs else 0


def pixel_count(inputs: Any) -> int:
    """The number of pixel values in a prepared batch's tensors (every `pixel_values*` tensor)."""
    return sum(int(v.numel()) for k, v in inputs.items() if k.startswith("pixel_values") and torch.is_tensor(v))


BATCHING = ("length", "dataset")


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
