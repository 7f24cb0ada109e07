"""Batches prepared ahead of the GPU: images read and processed while the model works on the batch before.

With `workers=0` one thread prepares the next batch. With `workers>0` a DataLoader's worker processes do (forked, so
the model is not copied, only the prepared batches come back): image processing is Python-heavy and a thread shares
the interpreter lock with the loop that feeds the GPU.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from vlx.errors import VlxError

T = TypeVar("T")
# prepare(start, size): the batch of the items queue[start : start + size]
Prepare = Callable[[int, int], T]


class _BatchPlan(torch.utils.data.Dataset):
    """Batch i is prepare(start + i * size, size)."""

    def __init__(self, prepare: Prepare[Any], start: int, size: int, total: int):
        self.prepare, self.start, self.size, self.total = prepare, start, size, total

    def __len__(self) -> int:
        return math.ceil((self.total - self.start) / self.size)

    def __getitem__(self, i: int):
        try:
            return self.prepare(self.start + i * self.size, self.size)
        except VlxError as err:  # comes back as it is: the DataLoader would wrap it in a worker traceback
            return _Failed(err)


@dataclass(frozen=True)
class _Failed:
    error: VlxError


def _as_is(batch):
    return batch


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int, worker_id: int) -> None:
    """In a loader worker (Linux): the kernel sends it SIGKILL when the process that started it dies, however it
    dies. A worker blocked on a full queue would otherwise outlive a parent killed with SIGKILL."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:  # the parent died before the call above
        os._exit(1)


def prepared_batches(prepare: Prepare[T], start: int, size: int, total: int, workers: int) -> Iterator[T]:
    """prepare(start, size), prepare(start + size, size), ... up to `total` items, in order, made ahead."""
    if workers > 0:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers' threads do not survive a fork
        loader = torch.utils.data.DataLoader(
            _BatchPlan(prepare, start, size, total),
            batch_size=None,
            collate_fn=_as_is,
            num_workers=workers,
            multiprocessing_context="fork",
            prefetch_factor=2,
            worker_init_fn=functools.partial(_die_with_parent, os.getpid()),
        )
        for batch in loader:
            if isinstance(batch, _Failed):
                raise batch.error
            yield batch
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
