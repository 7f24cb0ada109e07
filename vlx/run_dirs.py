"""Run directories: one writer at a time, and the paths users may give for a run (its root or its `infer/`).

A stage that writes into a run directory holds `<run dir>/.vlx.lock` (an OS file lock, released by the OS when the
process ends, however it ends). A second vlx process that wants to write there is refused at once, with a message
naming the process that holds it; a lock file left by a process that died is taken over.

A run that vlx refuses (exit 2: a bad setting, missing data, a locked run directory, a resume with other settings)
leaves nothing behind: Hydra makes the run directory, its log and `.hydra/` before vlx can judge the run, so
`RunDirGuard` (a Hydra callback, conf/hydra/default.yaml) notes beforehand whether the directory existed, and
`discard_refused_run` then removes a directory this run made that holds only that (its log, `.hydra/`, the lock), or,
where the directory existed (an earlier run's), puts back the `.hydra/` files the refused command overwrote.

A sweep (`vlx -m ...`) runs every job even when some fail: a failed job writes `<job dir>/error.json` (what went
wrong, whether vlx refused it or it was a bug, its overrides) and the sweep goes on; at the end `vlx` lists the failed
jobs from these records (submitit's jobs run in other processes: the records are what they leave), and
`stage=report` lists them with their error. A sweep whose every job was refused leaves nothing behind, as a refused
run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

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


def writer(run_dir: Path) -> str | None:
    """The vlx process still writing `run_dir` (pid, host, start, command), or None when none is; nothing is written
    there (the lock is tried and let go at once; a folder without a lock file has no writer)."""
    lock = run_dir / _lock_name()
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
        raise ConfigError(f"{run_dir} is being written by another vlx run ({holder}); wait for it to finish, or stop "
                          f"it")  # fmt: skip


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


# --- refused runs leave nothing behind ---------------------------------------------------------------------------

# what Hydra and vlx write into a run directory before a stage can refuse it: the job's log, .hydra/'s three files
# (a sweep's folder: multirun.yaml) and the run lock
_HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def _only_bookkeeping(folder: Path, sweep: bool = False, job: bool = False) -> bool:
    """Whether `folder` holds nothing but a job's log, `.hydra/` and a lock (a sweep's folder: also multirun.yaml,
    submitit's .submitit/ and job folders that hold only that and a refused job's error record)."""
    for entry in folder.iterdir():
        name = entry.name
        if entry.is_dir() and not entry.is_symlink():
            if name == ".hydra" and all(f.name in _HYDRA_FILES and f.is_file() for f in entry.iterdir()):
                continue
            if sweep and (_only_bookkeeping(entry, job=True) or name == ".submitit"):
                continue  # .submitit/: submitit's launcher's own files of the jobs (their pickles and console logs)
            return False
        elif not (name.endswith(".log") or (name.startswith(".vlx") and name.endswith(".lock")) or
                  (sweep and name == "multirun.yaml") or
                  (job and name == ERROR_RECORD and _refused(folder))):  # fmt: skip
            return False
    return True


class RunDirGuard(Callback):
    """Notes, before Hydra makes a run's (or a sweep's) directory, whether it exists and what its `.hydra/` holds,
    for `discard_refused_run`."""

    state: dict[str, Any] = {}

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self._note(Path(str(config.hydra.run.dir)), sweep=False, config=config)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self._note(Path(str(config.hydra.sweep.dir)), sweep=True, config=config)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        # submitit's local launcher makes its folder template itself, `%j` and all, in each job's controller (its
        # files go to .submitit/<job id>/): the empty literal folder is removed, one that holds anything is kept
        folder = str(config.hydra.get("launcher", {}).get("submitit_folder") or "")
        if "%j" in folder:
            literal = Path(folder)
            with contextlib.suppress(OSError):
                if literal.is_dir() and not any(literal.iterdir()):
                    literal.rmdir()

    @classmethod
    def _note(cls, folder: Path, sweep: bool, config: Any) -> None:
        folder = folder.absolute()
        first = next(p for p in (folder, *folder.parents) if p.exists())  # made by this run: those below it
        saved: dict[Path, bytes] = {}
        subdir = config.hydra.get("output_subdir")
        if not sweep and folder.is_dir() and subdir:
            for name in _HYDRA_FILES:
                with contextlib.suppress(OSError):
                    saved[folder / subdir / name] = (folder / subdir / name).read_bytes()
        cls.state.clear()
        cls.state.update(folder=folder, existing=first, sweep=sweep, saved=saved, started=time.time())


def _close_logs_in(folder: Path) -> None:
    """Closes and drops the log handlers writing into `folder` (the job's vlx.log), so nothing writes there again."""
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in list(getattr(logger, "handlers", [])):
            name = getattr(handler, "baseFilename", None)
            if name is not None and Path(name).is_relative_to(folder):
                handler.close()
                logger.removeHandler(handler)


def discard_refused_run() -> bool:
    """After a refused run: removes the run (or sweep) directory it made, where it holds only bookkeeping, and the
    empty folders made above it; in a directory that existed, puts back the `.hydra/` files it overwrote. Never
    removes a directory that existed before, or one that holds anything else.

    Returns:
        Whether the run's directory was removed.
    """
    state = dict(RunDirGuard.state)
    RunDirGuard.state.clear()
    if not state:
        return False
    folder, existing = state["folder"], state["existing"]
    try:
        if existing == folder:
            for path, data in state["saved"].items():
                if not path.is_file() or path.read_bytes() != data:
                    path.write_bytes(data)
            return False
        if not folder.is_dir() or not _only_bookkeeping(folder, sweep=state["sweep"]):
            return False
        _close_logs_in(folder)
        shutil.rmtree(folder)
        for parent in folder.parents:
            if parent == existing or not parent.is_relative_to(existing) or any(parent.iterdir()):
                break
            parent.rmdir()
    except OSError as err:  # tidying up must not hide the refusal's own message
        log.debug("could not remove the refused run's directory %s: %s", folder, err)
    return not folder.exists()


# --- a sweep runs every job ----------------------------------------------------------------------------------------

ERROR_RECORD = "error.json"


class SweepJobFailed(Exception):
    """A sweep job that failed, raised so that Hydra's launcher goes on with the next job (it catches Exception, not
    SystemExit); its record is in the job's folder. `refused`: a problem the user can mend (vlx's exit 2), else a
    bug."""

    def __init__(self, message: str, refused: bool, sweep_dir: str) -> None:
        super().__init__(message)
        self.refused, self.sweep_dir = refused, sweep_dir

    def __reduce__(self) -> tuple[Any, ...]:  # submitit sends it back from the job's process pickled
        return type(self), (str(self), self.refused, self.sweep_dir)


def write_error_record(job_dir: Path, message: str, refused: bool, overrides: list[str], job: int | None) -> None:
    """`<job dir>/error.json`, whole or not at all (a kill mid-write leaves no half record)."""
    record = {"error": message, "kind": "refused" if refused else "error", "job": job, "overrides": overrides,
              "time": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    path = job_dir / ERROR_RECORD
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:  # a full disk or a folder gone: the job's own message, said on the console, comes first
        log.warning("could not write %s: %s", path, os_error_message(err) or err)
        with contextlib.suppress(OSError):
            tmp.unlink()


def clear_error_record(job_dir: Path) -> None:
    """Removes the record of an earlier failure of a job that has now finished (a sweep run again into its folder)."""
    with contextlib.suppress(OSError):
        (job_dir / ERROR_RECORD).unlink()


def read_error_record(job_dir: Path) -> dict[str, Any] | None:
    """A job's error record, or None when it has none; one that cannot be read still says the job failed."""
    path = job_dir / ERROR_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not isinstance(record.get("error"), str):
            raise ValueError("not a record")
    except (OSError, ValueError) as err:
        return {"error": f"{path} cannot be read ({err})", "kind": "error", "overrides": []}
    return record


def _refused(job_dir: Path) -> bool:
    record = read_error_record(job_dir)
    return record is not None and record.get("kind") == "refused"


def job_overrides(job_dir: Path) -> list[str]:
    """The overrides a sweep job ran with: its `.hydra/overrides.yaml`, else its error record's."""
    from omegaconf import OmegaConf

    with contextlib.suppress(Exception):  # absent (hydra.output_subdir=null) or hand-edited: the record's, or none
        overrides = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
        if isinstance(overrides, list):
            return [str(o) for o in overrides]
    record = read_error_record(job_dir) or {}
    return [str(o) for o in record.get("overrides") or []]


def sweep_jobs(sweep: Path) -> list[Path]:
    """The job folders of a sweep (those with `.hydra/`, `summary.json` or an error record), in job order."""
    marks = (".hydra", "summary.json", ERROR_RECORD)
    jobs = [p for p in sweep.iterdir() if p.is_dir() and any((p / m).exists() for m in marks)]
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def distinguishing_overrides(jobs: list[Path]) -> dict[Path, list[str]]:
    """Each job's overrides that not every job of the sweep shares (`task.limit=0` of `task.limit=2,0,3`); all of
    them where the jobs share every one (a sweep of one job)."""
    each = {job: job_overrides(job) for job in jobs}
    shared = set.intersection(*(set(o) for o in each.values())) if each else set()
    return {job: [o for o in overrides if o not in shared] or overrides for job, overrides in each.items()}


def sweep_failures(sweep: Path, since: float | None = None) -> tuple[list[Path], list[tuple[Path, dict[str, Any]]]]:
    """A finished sweep's job folders and its failed jobs with their records (records older than `since`, the
    sweep's start, are an earlier sweep's into the same folder, and left out).

    Returns:
        (every job folder, [(job folder, record), ...] of the failed ones), in job order.
    """
    if not sweep.is_dir():
        return [], []
    jobs = sweep_jobs(sweep)
    failed = []
    for job in jobs:
        record = read_error_record(job)
        with contextlib.suppress(OSError):
            if record is not None and since is not None and (job / ERROR_RECORD).stat().st_mtime < since - 1:
                record = None
        if record is not None:
            failed.append((job, record))
    return jobs, failed
