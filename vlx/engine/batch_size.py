"""The batch size a run starts with (`choose_batch_size`): the setting, or for `batch_size=auto` the largest batch
that fits the GPU's free memory, found by a short probe before the run.

The probe runs the queue's worst item (the most prompt tokens, images included, among a spread of the queue's items)
as batches of copies of itself, with the run's own decoding (`max_new_tokens` all generated: no answer ends early),
and measures each try's peak memory on every GPU that holds the model:

- 1, then 2 items: their peaks give the memory an item adds;
- then the size that this slope says fills the free memory (less `FREE_KEPT` of it), at most `PROBE_LIMIT` or the
  number of items, tried for real; a try that runs out of memory or peaks above that budget narrows the range and
  the next try is in between, until the range is within an eighth of its low end (at most `MAX_TRIES` tries).

A real batch of items at most as long as the worst one needs no more memory than its copies did, so the size chosen
fits; an out-of-memory error that still happens (a longer item outside the spread the probe looked at, memory taken
by another process) halves that batch (`vlx.engine.loop.predict_batches`). Few tries, and sizes that are not all
powers of two: each new batch size costs a compiled decode step one more compilation. Nothing the probe computes is
written: its batches are copies of one item, whose real answer comes in its batch of the run.

On a CPU (no CUDA GPU holds the model) there is no memory to fill: `auto` is `CPU_BATCH_SIZE`, the config's default.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from vlx.engine.batches import pixel_count, prepare_batch, prompt_tokens
from vlx.engine.decoding import decode
from vlx.engine.shots import ShotSelector
from vlx.errors import ConfigError, DataError
from vlx.models.hf import VLMAdapter
from vlx.tasks import Task
from vlx.tasks.items import Example

log = logging.getLogger(__name__)

# batch_size=auto on a CPU: conf/config.yaml's default batch size (larger CPU batches gain nothing)
CPU_BATCH_SIZE = 8
# the largest batch the probe tries (decode steps gain little beyond it; a queue shorter than it caps it lower)
PROBE_LIMIT = 256
# the share of the GPU's free memory (after loading) that the chosen batch leaves free: batches of other shapes than
# the probe's fragment the allocator's cache
FREE_KEPT = 0.10
# probe tries at most (each is a batch of the worst item with the run's decoding)
MAX_TRIES = 8
# items whose prompts are built and measured to find the worst one, spread evenly over the queue
CANDIDATES = 16

GIB = 1024**3

# what to do about an item that does not fit in memory alone
MEMORY_ADVICE = (
    "Free the memory other processes hold, or use quant=nf4, fewer shots or fewshot.demo_image_size, a "
    "lower generation.max_new_tokens, or a larger GPU"
)

# how a failed allocation reads where it is not a torch.OutOfMemoryError: the CPU allocator (Linux and Windows), a
# cuBLAS workspace, the CUDA runtime
_OOM_MESSAGES = (
    "DefaultCPUAllocator: can't allocate memory",
    "DefaultCPUAllocator: not enough memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDA error: out of memory",
    "CUDA out of memory",
)


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` is a failed allocation: torch's OutOfMemoryError (CUDA), the CPU allocator's RuntimeError, a
    cuBLAS or CUDA allocation failure, or Python's MemoryError."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err) for m in _OOM_MESSAGES)


def release_memory() -> None:
    """Frees what a failed or finished try left: objects in reference cycles, then the CUDA allocator's cached
    blocks. Call it outside the `except` block: the exception's traceback holds the failed batch's tensors."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def cuda_devices(module: torch.nn.Module) -> list[torch.device]:
    """The CUDA devices holding `module`'s parameters (several under device_map=auto on several GPUs)."""
    return sorted({p.device for p in module.parameters() if p.device.type == "cuda"}, key=lambda d: d.index or 0)


@dataclass
class BatchChoice:
    """The batch size a run starts with, and how it was found (summary.json's `batch`)."""

    setting: int | str  # batch_size as configured
    size: int  # the batch size chosen
    how: str  # one line: the setting, the CPU default, or the probe's result
    tries: list[dict[str, Any]] = field(default_factory=list)  # the probe's: size, fits, peak GiB per device
    worst: dict[str, Any] | None = None  # the item the probe ran: id, prompt tokens
    seconds: float = 0.0  # the probe's time

    def record(self) -> dict[str, Any]:
        """The choice as summary.json records it: the setting, the size chosen and how it was found."""
        record: dict[str, Any] = {"setting": self.setting, "chosen": self.size, "how": self.how}
        if self.tries:
            record.update(probe=self.tries, worst_item=self.worst, probe_seconds=round(self.seconds, 2))
        return record


@dataclass(frozen=True)
class _Budget:
    """What one GPU may hold: its allocations before the probe, and their ceiling (free memory, less FREE_KEPT)."""

    device: torch.device
    base: int
    ceiling: int


def _budgets(devices: list[torch.device]) -> list[_Budget]:
    budgets = []
    for device in devices:
        free, _ = torch.cuda.mem_get_info(device)
        allocated = torch.cuda.memory_allocated(device)
        cached = torch.cuda.memory_reserved(device) - allocated  # torch's own, free to reuse
        budgets.append(_Budget(device, allocated, allocated + int((free + cached) * (1 - FREE_KEPT))))
    return budgets


def probe(attempt: Callable[[int], None], devices: list[torch.device], limit: int) -> tuple[int, list[dict[str, Any]]]:
    """The largest batch size up to `limit` whose try fits every device's budget (0: not even 1).

    Args:
        attempt: runs one batch of this many copies of the worst item (raises an out-of-memory error if it fails).
        devices: the CUDA devices holding the model.
        limit: the largest size worth trying.

    Returns:
        The size, and each try: its size, whether it fitted, whether it ran out of memory, its peak GiB per device.
    """
    release_memory()
    budgets = _budgets(devices)
    tries: list[dict[str, Any]] = []

    def measure(size: int) -> float | None:
        for b in budgets:
            torch.cuda.reset_peak_memory_stats(b.device)
        failed = False
        try:
            attempt(size)
            torch.cuda.synchronize()
        except Exception as err:  # noqa: BLE001 - only an out-of-memory error is a probe's answer
            if not is_out_of_memory(err):
                raise
            failed = True
        release_memory()  # here, not in the except block: its traceback held the try's tensors
        peaks = [torch.cuda.max_memory_allocated(b.device) for b in budgets]
        # the share of its device's budget the batch took (the fullest device's): above 1 it does not fit
        share = (
            None
            if failed
            else max((p - b.base) / max(b.ceiling - b.base, 1) for p, b in zip(peaks, budgets, strict=True))
        )
        fits = share is not None and share <= 1
        tries.append(
            {"size": size, "fits": fits, "out_of_memory": failed, "peak_gib": [round(p / GIB, 2) for p in peaks]}
        )
        log.info(
            "batch_size=auto: %d x the worst item %s (peak GiB %s)",
            size,
            "fits" if fits else "runs out of memory" if failed else "is over the budget",
            ", ".join(f"{p / GIB:.1f} of {b.ceiling / GIB:.1f}" for p, b in zip(peaks, budgets, strict=True)),
        )
        return share

    return search(measure, limit), tries


def search(measure: Callable[[int], float | None], limit: int) -> int:
    """The largest size up to `limit` whose batch fits, in few tries (0: not even 1).

    Args:
        measure: runs a batch of this size; returns the share of the memory budget it took (above 1: it does not
            fit), or None when it ran out of memory.
        limit: the largest size worth trying.
    """
    used: dict[int, float] = {}  # size -> share of the budget, for the tries that finished

    def fits(size: int) -> bool:
        share = measure(size)
        if share is not None:
            used[size] = share
        return share is not None and share <= 1

    if not fits(1):
        return 0
    low, high = 1, None  # the largest size known to fit, the smallest known not to
    tries = 1
    while low < limit and tries < MAX_TRIES:
        if high is not None and high - low <= max(1, low // 8):  # within an eighth: close enough
            break
        size = _next_try(low, high, limit, used)
        if size is None:
            break
        tries += 1
        if fits(size):
            low = size
        else:
            high = size
    return low


def _next_try(low: int, high: int | None, limit: int, used: dict[int, float]) -> int | None:
    """The next size to try (None: `low` is the answer).

    2 after 1. Below a size that failed: where the line through the tries at `low` and `high` crosses the budget, when
    `high` finished over the budget, else the middle; kept inside the middle half of (low, high), so that every try
    narrows the range by a quarter at least. With no failure yet: where the line through the smallest and the largest
    try crosses the budget, at most `limit` (None when that is `low` itself).
    """
    if high is not None:
        quarter = max(1, (high - low) // 4)
        estimate = (low + high) // 2
        if high in used and used[high] > used[low]:
            estimate = low + int((1 - used[low]) / ((used[high] - used[low]) / (high - low)))
        return min(max(estimate, low + quarter), high - quarter)
    if low == 1:
        return min(2, limit)
    first, last = min(used), max(used)
    slope = (used[last] - used[first]) / (last - first)
    estimate = min(limit, last + int((1 - used[last]) / slope)) if slope > 0 else limit
    return estimate if estimate > low else None


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
        key = (prompt_tokens(prepared.inputs), pixel_count(prepared.inputs))
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
    fits the GPU's free memory with the run's decoding (the probe above), or on a CPU `CPU_BATCH_SIZE`. Logged."""
    if setting != "auto":
        return BatchChoice(setting, int(setting), f"batch_size={setting} as set")
    devices = cuda_devices(model.model) if isinstance(getattr(model, "model", None), torch.nn.Module) else []
    if not devices:
        line = (
            f"batch_size=auto: {CPU_BATCH_SIZE} on a CPU, the default (no GPU memory to fill; "
            f"batch_size=N sets another)"
        )
        log.info(line)
        return BatchChoice(setting, CPU_BATCH_SIZE, line)
    limit = min(PROBE_LIMIT, len(queue))
    began = time.perf_counter()
    found = worst_item(model, task, selector, queue, demo_image_size) if limit > 1 else None
    if found is None:
        line = (
            f"batch_size=auto: {limit} (the whole queue)"
            if limit <= 1
            else f"batch_size=auto: {CPU_BATCH_SIZE}, the default (no item of the queue could be prepared to probe)"
        )
        size = limit if limit <= 1 else CPU_BATCH_SIZE
        log.info(line)
        return BatchChoice(setting, size, line)
    worst, tokens = found
    # the run's decoding, every new token generated: an answer that ends early would use less memory than its batch
    probing = dict(generation)
    if probing.get("max_new_tokens") is not None:
        probing["min_new_tokens"] = probing["max_new_tokens"]

    def attempt(n: int) -> None:
        decode(how, model, task, prepare_batch(model, task, selector, [worst] * n, 0, n, demo_image_size), probing)

    log.info(
        "batch_size=auto: probing with copies of item %s (%d prompt tokens, images included), decode=%s%s",
        worst.id,
        tokens,
        how,
        f", {probing['max_new_tokens']} new tokens" if how != "score" else "",
    )
    size, tries = probe(attempt, devices, limit)
    seconds = time.perf_counter() - began
    if size == 0:
        raise ConfigError(
            f"batch_size=auto: item {worst.id} ({tokens} prompt tokens, images included) does not fit in the memory "
            f"left on {', '.join(map(str, devices))} even alone, keeping {FREE_KEPT:.0%} of it free. {MEMORY_ADVICE}"
        )
    cap = " (the most it tries)" if size == limit else ""
    line = (
        f"batch_size=auto: {size}{cap}, the largest batch of copies of the worst item found ({worst.id}, {tokens} "
        f"prompt tokens) that fits {', '.join(map(str, devices))} leaving {FREE_KEPT:.0%} of the free memory "
        f"free; {len(tries)} tries in {seconds:.1f} s"
    )
    log.info(line)
    return BatchChoice(setting, size, line, tries, {"id": worst.id, "prompt_tokens": tokens}, seconds)
