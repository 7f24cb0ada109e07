"""A run that vlx refuses leaves nothing behind.

A run that vlx refuses (exit 2: a bad setting, missing data, a locked run directory, a resume with other settings)
leaves nothing behind: Hydra makes the run directory, its log and `.hydra/` before vlx can judge the run, so
`RunDirGuard` (a Hydra callback, conf/hydra/default.yaml) notes beforehand whether the directory existed, and
`discard_refused_run` then removes a directory this run made that holds only that (its log, `.hydra/`, the lock), or,
where the directory existed (an earlier run's), puts back the `.hydra/` files the refused command overwrote. A sweep
whose every job was refused leaves nothing behind, as a refused run.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from vlx.run.directory import HYDRA_FILES, RunDir
from vlx.run.sweeps import refused

log = logging.getLogger(__name__)


def _only_bookkeeping(folder: Path, sweep: bool = False, job: bool = False) -> bool:
    """Whether `folder` holds nothing but a job's log, `.hydra/` and a lock (a sweep's folder: also multirun.yaml,
    submitit's .submitit/ and job folders that hold only that and a refused job's error record)."""
    run = RunDir(folder)
    for entry in folder.iterdir():
        name = entry.name
        if entry.is_dir() and not entry.is_symlink():
            if entry == run.hydra_dir and all(f.name in HYDRA_FILES and f.is_file() for f in entry.iterdir()):
                continue
            if sweep and (_only_bookkeeping(entry, job=True) or name == ".submitit"):
                continue  # .submitit/: submitit's launcher's own files of the jobs (their pickles and console logs)
            return False
        elif not (
            name.endswith(".log")
            or (name.startswith(".vlx") and name.endswith(".lock"))
            or (sweep and name == "multirun.yaml")
            or (job and entry == run.error_file and refused(folder))
        ):
            return False
    return True


class RunDirGuard(Callback):
    """Notes, before Hydra makes a run's (or a sweep's) directory, whether it exists and what its `.hydra/` holds,
    for `discard_refused_run`."""

    state: dict[str, Any] = {}

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        """Notes a single run's folder before the job starts."""
        self._note(Path(str(config.hydra.run.dir)), sweep=False, config=config)

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        """Notes a sweep's folder before its jobs start."""
        self._note(Path(str(config.hydra.sweep.dir)), sweep=True, config=config)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        """Removes the empty literal `%j` folder submitit's local launcher leaves once every job has ended."""
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
            for name in HYDRA_FILES:
                with contextlib.suppress(OSError):
                    saved[folder / subdir / name] = (folder / subdir / name).read_bytes()
        cls.state.clear()
        cls.state.update(folder=folder, existing=first, sweep=sweep, saved=saved, started=time.time())


def _close_logs_in(folder: Path) -> None:
    """Closes and drops the log handlers writing into `folder` (the job's vlx.log), so nothing writes there again."""
    # (the manager's placeholders, for names only ever seen as a parent, hold no handlers)
    loggers = [v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)]
    for logger in [logging.getLogger(), *loggers]:
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
