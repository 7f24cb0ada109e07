"""One writer per run directory.

A stage that writes into a run directory holds `<run dir>/.vlx.lock` (an OS file lock, released by the OS when the
process ends, however it ends). A second vlx process that wants to write there is refused at once, with a message
naming the process that holds it; a lock file left by a process that died is taken over. Readers (report, compare,
review) refuse a directory that a live process still writes (`check_idle`), without writing anything there.
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
from vlx.run.directory import RunDir

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock, as before
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


def _lock_file(run_dir: Path) -> Path:
    return RunDir(run_dir).lock_file(int(os.environ.get("RANK", "0")))


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
        handle = _lock_file(run_dir).open("a+", encoding="utf-8")
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
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(["vlx", *sys.argv[1:]]),
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(info) + "\n")
        handle.flush()
        yield run_dir
        handle.seek(0)
        handle.truncate()  # a clean end leaves nothing to take over (the file stays: see the module docstring)
    finally:
        handle.close()  # releases the lock


def writer(run_dir: Path) -> str | None:
    """The vlx process still writing `run_dir` (pid, host, start, command), or None when none is; nothing is written
    there (the lock is tried and let go at once; a folder without a lock file has no writer)."""
    lock = _lock_file(run_dir)
    if fcntl is None or not lock.is_file():
        return None
    try:
        handle = lock.open("r", encoding="utf-8")
    except OSError:
        return None  # unreadable: nothing to learn from it, and nothing is written there
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(handle.read())
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def check_idle(run_dir: Path) -> None:
    """Refuses to read a run directory another vlx process is still writing, without writing anything there.

    Raises:
        ConfigError: a live process holds the directory (named in the message).
    """
    if (holder := writer(run_dir)) is not None:
        raise ConfigError(
            f"{run_dir} is being written by another vlx run ({holder}); wait for it to finish, or stop it"
        )
