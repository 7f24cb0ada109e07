"""Batches prepared ahead of the GPU: images read and processed while the model works on the batch before.

With `workers=0` one thread prepares the next batch. With `workers>0` a DataLoader's worker processes do (forked, so
the model is not copied, only the prepared batches come back): image processing is Python-heavy and a thread shares
the interpreter lock with the loop that feeds the GPU.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
# prepare(start, size): the batch of the items queue[start : start + size]
Prepare = Callable[[int, int], T]


class _BatchPlan(torch.utils.data.Dataset):
    """Batch i is prepare(start + i * size, size)."""

    def __init__(self, prepare: Prepare, start: int, size: int, total: int):
        self.prepare, self.start, self.size, self.total = prepare, start, size, total

    def __len__(self) -> int:
        return math.ceil((self.total - self.start) / self.size)

    def __getitem__(self, i: int):
        return self.prepare(self.start + i * self.size, self.size)


def _as_is(batch):
    return batch


def prepared_batches(prepare: Prepare, start: int, size: int, total: int, workers: int) -> Iterator[T]:
    """prepare(start, size), prepare(start + size, size), ... up to `total` items, in order, made ahead."""
    if workers > 0:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers' threads do not survive a fork
        loader = torch.utils.data.DataLoader(
            _BatchPlan(prepare, start, size, total), batch_size=None, collate_fn=_as_is, num_workers=workers,
            multiprocessing_context="fork", prefetch_factor=2,
        )  # fmt: skip
        yield from loader
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlx-prepare") as thread:
        position = start
        ahead = thread.submit(prepare, position, size)
        while position < total:
            batch = ahead.result()
            position += size
            if position < total:
                ahead = thread.submit(prepare, position, size)
            yield batch
