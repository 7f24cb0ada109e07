"""Several processes, one run: what vlx needs from torch.distributed under `accelerate launch` or `torchrun`.

The launcher starts one process per GPU and sets RANK, WORLD_SIZE and LOCAL_RANK. Each process runs the whole
`vlx ...` command; these helpers let them agree on one run directory, put each model on its own GPU, split the
inference items, and wait for each other before the merge.
"""

from __future__ import annotations

import atexit
import os
import time
from datetime import timedelta

import torch

# ranks wait this long for each other (the slowest rank's share of a long inference run)
WAIT = timedelta(hours=48)


def world_size() -> int:
    """The number of processes of the launch (WORLD_SIZE; 1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank among all processes (RANK; 0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's rank on its machine (LOCAL_RANK; 0 without a launcher): the GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this process is rank 0, the one that writes the run's shared files and logs."""
    return rank() == 0


def process_group() -> None:
    """Joins the launcher's process group (once): NCCL between GPUs, gloo on CPUs."""
    import torch.distributed as dist

    if world_size() > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
            dist.init_process_group("nccl", timeout=WAIT, device_id=torch.device("cuda", local_rank()))
        else:
            dist.init_process_group("gloo", timeout=WAIT)
        # left to the interpreter's exit, the group's threads can be torn down while still running, and a rank then
        # aborts ("terminate called without an active exception") after its work is done: leave it first
        atexit.register(leave_process_group)


def leave_process_group() -> None:
    """Destroys this process's process group, where it has one (at exit; a no-op otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Waits until every rank gets here (no-op in a single process)."""
    import torch.distributed as dist

    if world_size() > 1:
        process_group()
        dist.barrier()


def shared_run_dir(pattern: str = "outputs/%Y-%m-%d/%H-%M-%S") -> str:
    """One run directory for all ranks: rank 0's clock, sent to the others (each would otherwise stamp its own)."""
    import torch.distributed as dist

    process_group()
    stamp = [time.strftime(pattern) if is_main() else None]
    dist.broadcast_object_list(stamp, src=0)
    return str(stamp[0])


def device_map_for_rank() -> dict[str, int] | None:
    """Under a launcher with GPUs: the whole model on this rank's GPU (data parallel: one copy per GPU)."""
    if world_size() > 1 and torch.cuda.is_available():
        return {"": local_rank()}
    return None
