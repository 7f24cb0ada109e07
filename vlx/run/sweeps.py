"""A sweep runs every job even when some fail.

A failed job writes `<job dir>/error.json` (what went wrong, whether vlx refused it or it was a bug, its overrides)
and the sweep goes on; at the end `vlx` lists the failed jobs from these records (submitit's jobs run in other
processes: the records are what they leave), and `stage=report` lists them with their error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from vlx.errors import os_error_message
from vlx.run.directory import RunDir

log = logging.getLogger(__name__)


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
    record = {
        "error": message,
        "kind": "refused" if refused else "error",
        "job": job,
        "overrides": overrides,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    path = RunDir(job_dir).error_file
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
        RunDir(job_dir).error_file.unlink()


def read_error_record(job_dir: Path) -> dict[str, Any] | None:
    """A job's error record, or None when it has none; one that cannot be read still says the job failed."""
    path = RunDir(job_dir).error_file
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict) or not isinstance(record.get("error"), str):
            raise ValueError("not a record")
    except (OSError, ValueError) as err:
        return {"error": f"{path} cannot be read ({err})", "kind": "error", "overrides": []}
    return record


def refused(job_dir: Path) -> bool:
    """Whether the job in `job_dir` failed as refused (a problem the user can mend), by its error record."""
    record = read_error_record(job_dir)
    return record is not None and record.get("kind") == "refused"


def job_overrides(job_dir: Path) -> list[str]:
    """The overrides a sweep job ran with: its `.hydra/overrides.yaml`, else its error record's."""
    from omegaconf import OmegaConf

    with contextlib.suppress(Exception):  # absent (hydra.output_subdir=null) or hand-edited: the record's, or none
        overrides = OmegaConf.to_container(OmegaConf.load(RunDir(job_dir).overrides_file))
        if isinstance(overrides, list):
            return [str(o) for o in overrides]
    record = read_error_record(job_dir) or {}
    return [str(o) for o in record.get("overrides") or []]


def sweep_jobs(sweep: Path) -> list[Path]:
    """The job folders of a sweep (those with `.hydra/`, `summary.json` or an error record), in job order."""
    jobs = [p for p in sweep.iterdir() if p.is_dir() and any(m.exists() for m in _marks(RunDir(p)))]
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
            if record is not None and since is not None and RunDir(job).error_file.stat().st_mtime < since - 1:
                record = None
        if record is not None:
            failed.append((job, record))
    return jobs, failed


def _marks(job: RunDir) -> tuple[Path, ...]:
    return job.hydra_dir, job.summary_file, job.error_file
