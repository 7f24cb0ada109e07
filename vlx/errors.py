"""Errors a user can fix: reported as one clear message and a non-zero exit, without a traceback."""

from __future__ import annotations

import contextlib
import errno
import signal
from collections.abc import Iterator
from os import PathLike


class VlxError(Exception):
    """A problem in the config or the inputs. The message names the file, row or key and what to do."""


class DataError(VlxError):
    """A data file, row or image that cannot be used as it is."""


class ConfigError(VlxError):
    """A config value that cannot work, found before any weights load."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the run stops, and the message says how far it got and how to continue.

    A KeyboardInterrupt, so that nothing that catches Exception swallows it.

    Args:
        message: what was done and how to continue, or "" for the generic line.
        signum: the signal (SIGINT for Ctrl-C, SIGTERM from `kill` or a cluster's scheduler); the exit code is
            128 + signum, as a shell reports a process ended by it.
    """

    def __init__(self, message: str = "", signum: int = signal.SIGINT):
        super().__init__(message)
        self.message = message
        self.signum = signum


def interrupted(err: KeyboardInterrupt, message: str) -> Interrupted:
    """`err` (Ctrl-C, or SIGTERM through vlx's handler) again, with the stage's own message."""
    return Interrupted(message, getattr(err, "signum", signal.SIGINT))


# errors of the file system that the user can mend: the message names the path
_FIXABLE_OS_ERRORS = {
    errno.ENOSPC: "the disk is full: free some space, then run the same command again (finished work is kept)",
    errno.EDQUOT: "the disk quota is used up: free some space, then run the same command again (finished work is kept)",
    errno.EACCES: "permission denied: choose a folder you can write (hydra.run.dir=...) or fix its permissions",
    errno.EPERM: "permission denied: choose a folder you can write (hydra.run.dir=...) or fix its permissions",
    errno.EROFS: "the file system is read-only: choose a folder you can write (hydra.run.dir=...)",
}


@contextlib.contextmanager
def writing(path: str | PathLike[str]) -> Iterator[None]:
    """Names `path` in an OSError of the block that names no file, so that `os_error_message` can say which file
    could not be written: a write() or flush on a file already open (the disk fills up mid-file) raises one without
    a file name. Wrap every write of a file a stage leaves behind in it."""
    try:
        yield
    except OSError as err:
        if err.filename is None:
            err.filename = str(path)
        raise


def os_error_message(err: OSError) -> str | None:
    """One line for a full disk or a path that cannot be written (naming the path), or None for other errors."""
    advice = _FIXABLE_OS_ERRORS.get(err.errno or -1)
    if advice is None:
        return None
    path = err.filename if err.filename is not None else "a file"
    return f"cannot write {path}: {advice}"


def user_error(err: BaseException) -> VlxError | None:
    """The VlxError behind `err`, if there is one: Hydra's `instantiate` wraps what a constructor raised."""
    seen = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, VlxError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
