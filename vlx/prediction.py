"""The prediction engine: a queue of items through a model adapter, batch by batch.

Batches are prepared ahead on the CPU (demonstrations chosen, prompts rendered, images read and processed), decoded
on the model (free generation, label scores, or a label then its explanation), and split in halves after an
out-of-memory error; `batch_size=auto` is probed here before the run (`choose_batch_size`, `vlx.batch_size`). The
infer and judge stages (`vlx.stages.infer`, `vlx.stages.judge`) decide what runs and write what comes out.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vlx.batch_size import (
    CANDIDATES,
    CPU_BATCH_SIZE,
    FREE_KEPT,
    PROBE_LIMIT,
    BatchChoice,
    cuda_devices,
    is_out_of_memory,
    probe,
    release_memory,
)
from vlx.errors import ConfigError, DataError
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
    GPU works on the current one (vlx.prefetch). A batch that runs out of memory is split in halves, each decoded
    the same way (down to single items: one that does not fit alone is a ConfigError naming it), and the batches
    after it are formed at the smaller size: nothing is lost, and nothing the model finished is computed again or
    yielded twice (the batches prepared ahead at the old size are prepared again). Answers do not depend on the
    batch (tests/test_infer.py), so they are those of a run without the error. With sampling, each batch's seed
    comes from its first id, so a resumed run samples what an uninterrupted one would (at the same batch sizes).
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
            fitting = [size]  # the batch size now: lowered by each out-of-memory error inside this batch
            skipped = batch.skipped
            for part, (answers, scores, result) in _decode_fitting(how, model, task, batch, generation, seed, fitting):
                yield Decoded(part.examples, part.demos, answers, scores, result, fitting[0], skipped)
                skipped = []  # the batch's left-out items come with its first part
            position += batch.count
            if fitting[0] < size:
                size = fitting[0]
                break  # the batches prepared ahead are at the old size: the rest is prepared at the new one


def _decode_fitting(
    how: str, model: VLMAdapter, task: Task, batch: Prepared, generation: dict[str, Any], seed: int, size: list[int]
) -> Iterator[tuple[Prepared, tuple[list[str], list[dict[str, float] | None], Generation | None]]]:
    """`decode` of `batch` in order, part by part: a batch larger than `size[0]` is split before it runs, and one
    that runs out of memory halves `size[0]` (a line in the log) and is split in halves, each decoded the same way.

    Raises:
        ConfigError: a single item runs out of memory (the message names it and what to do).
    """
    n = len(batch.examples)
    if n > size[0]:  # a part of a batch that already failed at this size: split without trying
        for part in split_prepared(model, batch, size[0]):
            yield from _decode_fitting(how, model, task, part, generation, seed, size)
        return
    if generation.get("do_sample"):
        torch.manual_seed(batch_seed(seed, batch.examples[0].id))
    try:
        outputs = decode(how, model, task, batch, generation)
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        if n == 1:
            raise ConfigError(_too_large(batch, generation, err)) from err
        outputs = None
    if outputs is not None:
        yield batch, outputs
        return
    release_memory()  # here, not in the except block: its traceback held the failed batch's tensors
    size[0] = (n + 1) // 2
    log.warning("out of memory on a batch of %d items (from %s): retrying it in halves, batch size now %d (nothing "
                "of it was written)", n, batch.examples[0].id, size[0])  # fmt: skip
    for part in split_prepared(model, batch, size[0]):
        yield from _decode_fitting(how, model, task, part, generation, seed, size)


def split_prepared(model: VLMAdapter, batch: Prepared, at: int) -> tuple[Prepared, Prepared]:
    """`batch`'s first `at` items and the rest, each encoded anew from the batch's prompts and images (no image is
    read or demonstration chosen again)."""
    per_item = [len(d) + 1 for d in batch.demos]  # build_inputs: each item's demonstrations' images, then its own
    cut = sum(per_item[:at])

    def part(items: slice, images: list[Image.Image]) -> Prepared:
        examples, prompts = batch.examples[items], batch.prompts[items]
        return Prepared(batch.start, len(examples), examples, batch.demos[items], prompts, images,
                        model.encode(prompts, images), [])  # fmt: skip

    return part(slice(None, at), batch.images[:cut]), part(slice(at, None), batch.images[cut:])


# what to do about an item that does not fit in memory alone
MEMORY_ADVICE = ("Free the memory other processes hold, or use quant=nf4, fewer shots or shots.demo_image_size, a "
                 "lower generation.max_new_tokens, or a larger GPU")  # fmt: skip


def _too_large(batch: Prepared, generation: dict[str, Any], err: BaseException) -> str:
    example = batch.examples[0]
    tokens = _prompt_tokens(batch.inputs)
    where = "GPU" if isinstance(err, torch.OutOfMemoryError) else "memory"
    return (
        f"{example.source}: item {example.id} does not fit in {where} even alone ({tokens} prompt tokens, images "
        f"included, + {generation.get('max_new_tokens', 0)} new tokens; {_allocation_failure(err)}). "
        f"{MEMORY_ADVICE} (finished predictions are kept: run the same command again to continue)"
    )


def _allocation_failure(err: BaseException) -> str:
    """The first sentences of an allocator's message (CUDA's goes on with advice about fragmentation), without the
    CPU allocator's source location."""
    text = re.sub(r"^\[enforce fail at [^\]]*\] [^.]*\.\s*", "", (str(err).strip().splitlines() or [""])[0])
    if len(text) > 160:
        text = text[: text.rfind(". ", 0, 160) + 1 or 160]
    return text.rstrip(".") or type(err).__name__


def _prompt_tokens(inputs: Any) -> int:
    return int(inputs["input_ids"].shape[-1]) if inputs is not None and "input_ids" in inputs else 0


def _pixels(inputs: Any) -> int:
    return sum(int(v.numel()) for k, v in inputs.items() if k.startswith("pixel_values") and torch.is_tensor(v))


def worst_item(
    model: VLMAdapter, task: Task, selector: ShotSelector | None, queue: list[Example], demo_image_size: int | None
) -> tuple[Example, int] | None:
    """The item whose prepared prompt is longest (tokens, the images' included; then pixel values) among
    `CANDIDATES` items spread evenly over the queue and the one with the longest text, with its prompt tokens.
    Items that cannot be prepared are passed over (the run reports them in their place); None if none can."""
    count = min(CANDIDATES, len(queue))
    picks = [round(i * (len(queue) - 1) / max(count - 1, 1)) for i in range(count)]
    picks.append(max(range(len(queue)), key=lambda i: len(queue[i].text or "")))
    best: tuple[tuple[int, int], Example] | None = None
    for i in dict.fromkeys(picks):
        try:
            prepared = prepare_batch(model, task, selector, queue, i, 1, demo_image_size)
        except DataError:
            continue
        key = (_prompt_tokens(prepared.inputs), _pixels(prepared.inputs))
        if best is None or key > best[0]:
            best = (key, queue[i])
    return None if best is None else (best[1], best[0][0])


def choose_batch_size(
    setting: int | str,
    model: VLMAdapter,
    task: Task,
    queue: list[Example],
    how: str,
    generation: dict[str, Any],
    *,
    selector: ShotSelector | None = None,
    demo_image_size: int | None = None,
) -> BatchChoice:
    """The batch size a run starts with: the setting, or for `auto` the largest batch of the queue's worst item that
    fits the GPU's free memory with the run's decoding (`vlx.batch_size`), or on a CPU `CPU_BATCH_SIZE`. Logged."""
    if setting != "auto":
        return BatchChoice(setting, int(setting), f"batch_size={setting} as set")
    devices = cuda_devices(model.model) if isinstance(getattr(model, "model", None), torch.nn.Module) else []
    if not devices:
        line = (f"batch_size=auto: {CPU_BATCH_SIZE} on a CPU, the default (no GPU memory to fill; "
                f"batch_size=N sets another)")  # fmt: skip
        log.info(line)
        return BatchChoice(setting, CPU_BATCH_SIZE, line)
    limit = min(PROBE_LIMIT, len(queue))
    began = time.perf_counter()
    found = worst_item(model, task, selector, queue, demo_image_size) if limit > 1 else None
    if found is None:
        line = (f"batch_size=auto: {limit} (the whole queue)" if limit <= 1 else
                f"batch_size=auto: {CPU_BATCH_SIZE}, the default (no item of the queue could be prepared to probe)")
        size = limit if limit <= 1 else CPU_BATCH_SIZE  # fmt: skip
        log.info(line)
        return BatchChoice(setting, size, line)
    worst, tokens = found
    # the run's decoding, every new token generated: an answer that ends early would use less memory than its batch
    probing = dict(generation)
    if probing.get("max_new_tokens") is not None:
        probing["min_new_tokens"] = probing["max_new_tokens"]

    def attempt(n: int) -> None:
        decode(how, model, task, prepare_batch(model, task, selector, [worst] * n, 0, n, demo_image_size), probing)

    log.info("batch_size=auto: probing with copies of item %s (%d prompt tokens, images included), decode=%s%s",
             worst.id, tokens, how, f", {probing['max_new_tokens']} new tokens" if how != "score" else "")  # fmt: skip
    size, tries = probe(attempt, devices, limit)
    seconds = time.perf_counter() - began
    if size == 0:
        raise ConfigError(
            f"batch_size=auto: item {worst.id} ({tokens} prompt tokens, images included) does not fit in the memory "
            f"left on {', '.join(map(str, devices))} even alone, keeping {FREE_KEPT:.0%} of it free. {MEMORY_ADVICE}"
        )
    cap = " (the most it tries)" if size == limit else ""
    line = (f"batch_size=auto: {size}{cap}, the largest batch of copies of the worst item found ({worst.id}, {tokens} "
            f"prompt tokens) that fits {', '.join(map(str, devices))} leaving {FREE_KEPT:.0%} of the free memory "
            f"free; {len(tries)} tries in {seconds:.1f} s")  # fmt: skip
    log.info(line)
    return BatchChoice(setting, size, line, tries, {"id": worst.id, "prompt_tokens": tokens}, seconds)


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


def batch_seed(seed: int, first_id: str) -> int:
    """The sampling seed of a batch, from the run seed and its first item's id.

    Predictions are appended batch by batch, so a killed run stops at a batch boundary and a resumed run (same
    batch_size) forms the same batches: seeding each batch this way makes a resumed sampling run equal an
    uninterrupted one. Python's hash() is salted per process, hence sha256.
    """
    digest = hashlib.sha256(f"{seed}\x1f{first_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)
