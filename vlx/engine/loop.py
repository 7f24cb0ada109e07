"""The batch loop: items through a model adapter batch by batch, each batch's rows appended to a store as it finishes.

`run_batches` is the loop a stage calls (infer, judge, and the stages to come): it leaves out the items already in
the store (a stopped run continues where it stopped), picks the batch size (`vlx.engine.batch_size`), and hands each
answered item to the stage's row function, appending a finished batch's rows before the next batch is decoded, under
a progress bar; Ctrl-C and a full disk end it with one line saying what is saved. `predict_batches` under it yields
the finished batches: prepared ahead on the CPU (`vlx.engine.batches`, `vlx.engine.prefetch`), decoded on the model
(`vlx.engine.decoding`), and split in halves after an out-of-memory error.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from vlx.engine.batch_size import MEMORY_ADVICE, BatchChoice, choose_batch_size, is_out_of_memory, release_memory
from vlx.engine.batches import Prepared, batching_order, prepare_batch, prompt_tokens, split_prepared
from vlx.engine.decoding import decode
from vlx.engine.prefetch import prepared_batches
from vlx.engine.shots import ShotSelector
from vlx.errors import ConfigError, interrupted, os_error_message
from vlx.models.generation import Generation
from vlx.models.hf import VLMAdapter
from vlx.tasks import Task
from vlx.tasks.items import Example

log = logging.getLogger(__name__)


def check_loop_settings(batch_size: Any, batching: Any, loader_workers: Any) -> None:
    """The loop's settings as a stage's config gives them, checked before anything loads.

    Raises:
        ConfigError: a setting out of range; the message names it and the values it takes.
    """
    from vlx.config_schema import check_value

    for key, value in (("batch_size", batch_size), ("batching", batching), ("loader_workers", loader_workers)):
        check_value(key, value)


@dataclass(frozen=True)
class LoopSettings:
    """How `run_batches` runs the model: what a stage's config says about batches and decoding."""

    decode: str  # generate, score or score_then_explain (vlx.engine.decoding.DECODERS)
    generation: dict[str, Any]  # keyword arguments of the adapter's generate(): max_new_tokens, do_sample, ...
    batch_size: int | str = "auto"  # a number, or auto (the probe of vlx.engine.batch_size)
    batching: str = "length"  # the order items are batched in (vlx.engine.batches.BATCHING)
    seed: int = 0  # with sampling, each batch's seed comes from it and the batch's first id
    workers: int = 0  # processes that prepare batches ahead (0: one thread)
    on_bad_image: str = "fail"  # an image that fails mid-run: fail, or skip its item (listed in the result)
    selector: ShotSelector | None = None  # the demonstrations of each item (None: zero-shot)
    demo_image_size: int | None = None  # the longest side demonstrations' images are shrunk to


class RowStore(Protocol):
    """Where the loop appends rows: an append-only file of rows keyed by id (`vlx.run.store.JsonlStore`)."""

    path: Path

    def done_ids(self) -> set[str]:
        """The ids of the rows already written."""
        ...

    def append(self, rows: Iterable[Any]) -> None:
        """Writes rows, on disk when it returns."""
        ...


@dataclass(frozen=True)
class Answer:
    """One item as the model answered it: the item, its demonstrations, the answer, and the label probabilities
    (decode=score and score_then_explain; None otherwise)."""

    example: Example
    demos: list[Example]
    text: str
    scores: dict[str, float] | None


@dataclass
class LoopResult:
    """What a run of the loop did: the items answered and left out, the batch sizes, the time and prompt lengths."""

    answered: int = 0  # items the model answered (their rows are in the store)
    skipped: list[dict[str, str]] = field(default_factory=list)  # items left out mid-run (task.on_bad_image=skip)
    choice: BatchChoice | None = None  # the batch size it started with, and how it was found (None: nothing to run)
    batch_size: int | None = None  # the batch size at the end: lower than chosen after out-of-memory errors
    started: float = 0.0  # time.perf_counter() when the loop began (after the model loaded)
    seconds: float = 0.0  # from then to the last batch's rows: the batch size's choice included, not the loading
    prompt_tokens: list[int] = field(default_factory=list)  # per item generated for, images included
    image_tokens: list[int] = field(default_factory=list)


def run_batches(
    model: VLMAdapter,
    task: Task,
    items: list[Example],
    store: RowStore,
    row: Callable[[Answer], Any],
    settings: LoopSettings,
    *,
    desc: str,
    total: int | None = None,
    done_before: int | None = None,
    in_this_run: str = "in this run",
    rows_name: str = "rows",
) -> LoopResult:
    """Runs `model` over the items of `items` not yet in `store`, appending `row(answer)` for each item answered.

    The rows of a batch are appended, and on disk, before the next batch is decoded: a run stopped any time keeps
    every finished batch, and the same call on the same store goes on with the rest (items whose ids are in the store
    are left out). Each batch's rows follow its items' batching order; answers do not depend on the batch.

    Args:
        model: the loaded adapter that answers.
        task: what is asked: the prompt of each item, its labels (scored with decode=score) and answer format.
        items: the items to answer; those whose id is already in `store` are passed over.
        store: where the rows go, one `append` per batch.
        row: the stored row of an answered item.
        settings: the batch size, batching order, decoding and workers.
        desc: the progress bar's label.
        total: the items of the whole run, for the line an interruption logs (default: the store's and the queue's).
        done_before: of those, the ones done before this call (default: the rows in `store`).
        in_this_run: how that line counts this call's rows ("in this run", "answered by the judge in this run").
        rows_name: what a row is, for the line a full disk logs ("predictions", "verdicts").

    Returns:
        What the loop did: items answered and left out, batch sizes, time, prompt lengths.

    Raises:
        Interrupted: Ctrl-C or SIGTERM; the message says how far the run got and that its rows are saved.
        ConfigError: a file system error the user can mend (a full disk), or an item too large for memory alone.
        DataError: an image that fails mid-run with `on_bad_image=fail`.
    """
    result = LoopResult(started=time.perf_counter())  # items/s counts the predicting and the probe, not the loading
    done = store.done_ids()
    queue = batching_order([ex for ex in items if ex.id not in done], settings.batching)
    if not queue:
        return result
    before = len(done)
    total = before + len(queue) if total is None else total
    done_before = before if done_before is None else done_before
    result.choice = choose_batch_size(
        settings.batch_size,
        model,
        task,
        queue,
        settings.decode,
        settings.generation,
        selector=settings.selector,
        demo_image_size=settings.demo_image_size,
    )
    result.batch_size = result.choice.size
    batches = predict_batches(
        model,
        task,
        queue,
        result.choice.size,
        settings.decode,
        settings.generation,
        selector=settings.selector,
        seed=settings.seed,
        demo_image_size=settings.demo_image_size,
        workers=settings.workers,
        on_bad_image=settings.on_bad_image,
    )
    bar = tqdm(total=len(queue), desc=desc, unit="item", dynamic_ncols=True)
    try:
        for batch in batches:
            store.append(row(answer) for answer in batch.answered())
            result.answered += len(batch.examples)
            result.skipped += batch.skipped
            if batch.generation is not None:
                result.prompt_tokens += batch.generation.prompt_tokens
                result.image_tokens += batch.generation.image_tokens
            result.batch_size = batch.batch_size
            bar.update(len(batch.examples) + len(batch.skipped))
    except KeyboardInterrupt as err:
        # counted from the file, not from `answered`: the signal can land between a batch's write and its count (and
        # a row cut short by it is repaired away, to be redone)
        finished = len(store.done_ids()) - before
        raise interrupted(
            err,
            f"interrupted after {done_before + finished} of {total} items ({finished} {in_this_run}, all saved in "
            f"{store.path}); run the same command again to continue",
        ) from None
    except OSError as err:
        message = os_error_message(err)
        if message is None:
            raise
        raise ConfigError(f"{message}; {result.answered} new {rows_name} are saved in {store.path}") from err
    finally:
        bar.close()
    result.seconds = time.perf_counter() - result.started
    return result


@dataclass(frozen=True)
class Decoded:
    """A finished batch: its items and demonstrations, answers, label probabilities and generation stats."""

    examples: list[Example]
    demos: list[list[Example]]
    answers: list[str]
    scores: Sequence[dict[str, float] | None]
    generation: Generation | None
    batch_size: int  # the batch size now (halved after out-of-memory errors)
    skipped: list[dict[str, str]]  # items left out (task.on_bad_image=skip)

    def answered(self) -> list[Answer]:
        """Each item of the batch with its demonstrations, answer and label probabilities."""
        return [
            Answer(ex, demos, text, scores)
            for ex, demos, text, scores in zip(self.examples, self.demos, self.answers, self.scores, strict=True)
        ]


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
    GPU works on the current one (vlx.engine.prefetch). A batch that runs out of memory is split in halves, each
    decoded the same way (down to single items: one that does not fit alone is a ConfigError naming it), and the batches
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
) -> Iterator[tuple[Prepared, tuple[list[str], Sequence[dict[str, float] | None], Generation | None]]]:
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
    log.warning(
        "out of memory on a batch of %d items (from %s): retrying it in halves, batch size now %d (nothing "
        "of it was written)",
        n,
        batch.examples[0].id,
        size[0],
    )
    for part in split_prepared(model, batch, size[0]):
        yield from _decode_fitting(how, model, task, part, generation, seed, size)


def _too_large(batch: Prepared, generation: dict[str, Any], err: BaseException) -> str:
    example = batch.examples[0]
    tokens = prompt_tokens(batch.inputs)
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


def batch_seed(seed: int, first_id: str) -> int:
    """The sampling seed of a batch, from the run seed and its first item's id.

    Predictions are appended batch by batch, so a killed run stops at a batch boundary and a resumed run (same
    batch_size) forms the same batches: seeding each batch this way makes a resumed sampling run equal an
    uninterrupted one. Python's hash() is salted per process, hence sha256.
    """
    digest = hashlib.sha256(f"{seed}\x1f{first_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)
