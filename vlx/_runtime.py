"""Process-wide setup: seeds, the number of CPU threads torch uses, and what the libraries print."""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch (all devices), as transformers' set_seed does: importing that one imports the
    Trainer's modules, peft and bitsandbytes, most of the time a refused run took to say why (docs/PERFORMANCE.md,
    "A refusal before the heavy imports")."""
    import random

    import numpy as np
    import torch

    from vlx.config_schema import check_value

    check_value("seed", seed)
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
    make them slower, and far slower while another process keeps a core busy, since each thread waits for the
    slowest: docs/PERFORMANCE.md, "The demo on a CPU"); otherwise torch's default (one per core), but no more than
    the CPUs this process may use. OMP_NUM_THREADS, when set, is the user's choice and is kept.
    """
    if setting != "auto":
        from vlx.config_schema import check_value

        check_value("cpu_threads", setting)
        return int(setting)
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


# Libraries that add a StreamHandler of their own to their top logger when imported. huggingface_hub and datasets
# also let records propagate, so each of their warnings (the hub's retry messages among them) came out twice: bare
# on stderr, then in Hydra's format; transformers propagates under CI=1 only, and otherwise never reaches vlx.log.
OWN_HANDLER_LIBRARIES = ("transformers", "huggingface_hub", "datasets")
# their progress bars' switches, read when each library is imported
PROGRESS_BAR_SWITCHES = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


def route_library_logs() -> None:
    """Sends the records of `OWN_HANDLER_LIBRARIES` through the root logger's handlers only (Hydra's console and
    vlx.log), once each, whenever the library is imported.

    The libraries are imported late (by the stage, or never), and each adds its handler at import, so the handler
    is taken off when the library's first record is made: a log record factory checks each record's logger name
    (one string comparison) and, for these libraries, removes their plain stderr StreamHandler and lets the record
    propagate. Handlers of another class (a user's FileHandler) are kept. Calling it again does nothing.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "vlx_routes_libraries", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        top = record.name.partition(".")[0]
        if top in OWN_HANDLER_LIBRARIES:
            _adopt(top)
        return record

    factory.vlx_routes_libraries = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
    for name in OWN_HANDLER_LIBRARIES:  # the ones already imported
        _adopt(name)


def _adopt(name: str) -> None:
    """Takes the library's own stderr handler off its top logger and lets its records reach the root logger."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler:  # exactly the class the libraries add, no subclass
            logger.removeHandler(handler)
    logger.propagate = True


def quiet_progress_bars() -> None:
    """Turns the libraries' progress bars off (weights loading, shards written, datasets' splits) when stderr is
    not a terminal: in a log file or a CI log each bar is a line of carriage returns that says nothing. vlx's own
    bars (infer, judge) stay. A switch the user set (e.g. HF_HUB_DISABLE_PROGRESS_BARS=0) is kept."""
    if sys.stderr is None or sys.stderr.isatty():
        return
    for switch in PROGRESS_BAR_SWITCHES:
        os.environ.setdefault(switch, "1")
    # a library already imported has read its switch: tell it directly (transformers follows huggingface_hub's)
    hub, datasets = (os.environ[switch] == "1" for switch in PROGRESS_BAR_SWITCHES)
    if hub and "huggingface_hub.utils" in sys.modules:
        sys.modules["huggingface_hub.utils"].disable_progress_bars()
    if hub and "transformers.utils.logging" in sys.modules:
        sys.modules["transformers.utils.logging"].disable_progress_bar()
    if datasets and "datasets.utils.tqdm" in sys.modules:
        sys.modules["datasets.utils.tqdm"].disable_progress_bars()
