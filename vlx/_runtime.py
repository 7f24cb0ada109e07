"""Process-wide setup: seeds and the number of CPU threads torch uses."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch (all devices), as transformers' set_seed does: importing that one imports the
    Trainer's modules, peft and bitsandbytes, 9 of the 11 s a refused run took to say why on a 2-core machine."""
    import random

    import numpy as np
    import torch

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        from vlx.errors import ConfigError

        raise ConfigError(f"seed={seed!r}: use a whole number from 0 to 2**32 - 1 (numpy's range)")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every device's generator, CUDA's included


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask: what `taskset`, cgroups' cpusets and SLURM allow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_threads(setting: int | str, tiny: bool) -> int | None:
    """The torch thread count for `cpu_threads` (None: leave torch's own choice).

    auto: one thread for vlx's tiny models, whose operations are too small to share between threads (two threads
    made them up to 4x slower on a 2-core machine, and far slower while another process keeps a core busy, since
    each thread waits for the slowest); otherwise torch's default (one per core), but no more than the CPUs this
    process may use. OMP_NUM_THREADS, when set, is the user's choice and is kept.
    """
    if setting != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            from vlx.errors import ConfigError

            raise ConfigError(f"cpu_threads={setting!r}: use auto or a positive number of threads")
        return setting
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    if tiny:
        return 1
    import torch

    return min(torch.get_num_threads(), usable_cpus())


def set_cpu_threads(setting: int | str, tiny: bool) -> None:
    """Applies `cpu_threads` (see `cpu_threads`) to torch's intra-op thread pool."""
    threads = cpu_threads(setting, tiny)
    if threads is None:
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        log.debug("torch uses %d CPU thread(s)", threads)
