"""Run directories: one writer at a time, and the paths users may give for a run (its root or its `infer/`).

A stage that writes into a run directory holds `<run dir>/.vlx.lock` (an OS file lock, released by the OS when the
process ends, however it ends). A second vlx process that wants to write there is refused at once, with a message
naming the process that holds it; a lock file left by a process that died is taken over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from vlx.errors import ConfigError, os_error_message

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock, as before
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"


def _lock_name() -> str:
    # under a launcher every rank writes into the run directory: each holds its own lock, so that a second launched
    # run is refused on every rank (none waits at a barrier for ranks that were refused)
    rank = int(os.environ.get("RANK", "0"))
    return ".vlx.lock" if rank == 0 else f".vlx.rank{rank}.lock"


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, started {info['started']}: {info['command']}"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def exclusive(run_dir: Path) -> Iterator[Path]:
    """Holds `run_dir` for this process while the block runs (creating the folder).

    Raises:
        ConfigError: another live process holds the directory (named in the message), or it cannot be written.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = (run_dir / _lock_name()).open("a+", encoding="utf-8")
    except OSError as err:
        raise ConfigError(os_error_message(err) or f"cannot use the run directory {run_dir}: {err}") from err
    try:
        handle.seek(0)
        previous = handle.read()
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"{run_dir} is being written by another vlx run ({_holder(previous)}); wait for it to finish or "
                    f"stop it, or write into another directory"
                ) from None
        if previous.strip():
            log.info("%s: taking over the lock left by %s, which is no longer running", run_dir, _holder(previous))
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(["vlx", *sys.argv[1:]])}  # fmt: skip
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(info) + "\n")
        handle.flush()
        yield run_dir
        handle.seek(0)
        handle.truncate()  # a clean end leaves nothing to take over (the file stays: see the module docstring)
    finally:
        handle.close()  # releases the lock


def predictions_dir(path: str | Path, key: str) -> Path:
    """The folder holding a run's predictions.jsonl: `path` itself, its `infer/` (a fine-tune or demo run, whose
    adapter inference lands there), or the folder of a predictions.jsonl given directly.

    Args:
        path: what the user gave.
        key: the setting it came from, for the message (`run`, `resume`, `shots.source`, ...).

    Raises:
        ConfigError: no such folder, or no predictions in it or its infer/.
    """
    path = Path(path).expanduser()
    if path.is_file() and path.name == PREDICTIONS:
        return path.parent
    if not path.is_dir():
        raise ConfigError(f"{key}={str(path)!r}: no such directory; pass the directory of an infer run")
    if not (path / PREDICTIONS).is_file() and (path / "infer" / PREDICTIONS).is_file():
        return path / "infer"
    return path


def check_writable(path: Path) -> None:
    """Refuses, before anything is computed, an existing file that this run would append to but cannot."""
    if not path.exists():
        return
    try:
        with path.open("ab"):
            pass
    except OSError as err:
        raise ConfigError(
            f"cannot write {path} ({err.strerror}): make it writable (chmod u+w) or write into another directory"
        ) from err
