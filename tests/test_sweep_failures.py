"""A sweep runs every job: a job that vlx refuses (or that hits a bug) is recorded in its folder, the others run, the
end of the sweep lists the failed ones, and `stage=report` shows them with their error."""

from __future__ import annotations

import json
import os

import pytest
from helpers import run_vlx as vlx

from vlx.__main__ import run_stage
from vlx.run.guard import RunDirGuard
from vlx.run.lock import exclusive

ERROR_RECORD = "error.json"  # a failed job's record in its folder
LIMIT_0 = "task.limit=0: use a positive number of items, or null for the whole split"


def test_a_refused_job_does_not_stop_the_sweep_and_the_report_lists_it(tmp_path, make_cfg):
    sweep = tmp_path / "sweep"
    res = vlx(
        "-m",
        "model=tiny_llava",
        "task=shapes",
        "task.limit=2,0,3",
        "generation.max_new_tokens=2",
        "eval_after_infer=false",
        f"hydra.sweep.dir={sweep}",
    )
    assert res.returncode == 2, res.stderr[-3000:]
    for job, n in (("0", 2), ("2", 3)):  # the jobs before and after the refused one both ran
        assert len((sweep / job / "predictions.jsonl").read_text().splitlines()) == n
        assert not (sweep / job / ERROR_RECORD).exists()
    record = json.loads((sweep / "1" / ERROR_RECORD).read_text())
    assert record["error"] == LIMIT_0 and record["kind"] == "refused" and record["job"] == 1
    assert "task.limit=0" in record["overrides"] and "model=tiny_llava" in record["overrides"]
    assert not (sweep / "1" / "predictions.jsonl").exists()
    errors = [line for line in res.stderr.splitlines() if line.startswith("vlx: error:")]
    assert errors == [
        f"vlx: error: job 1 (task.limit=0): {LIMIT_0}",
        f"vlx: error: 1 of 3 sweep jobs failed; the others finished: vlx stage=report stage.sweep={sweep}",
    ]
    assert "Traceback" not in res.stderr + res.stdout

    # the report: three rows, the failed one with its setting and its error
    metrics = run_stage(make_cfg("stage=report", f"stage.sweep={sweep}", run_dir=tmp_path / "report"))
    assert metrics == {"runs": 3, "complete": 0, "failed": 1}
    table = (sweep / "results.md").read_text().splitlines()
    assert len(table) == 5 and table[0].endswith("| Status | Run |")
    assert f"| failed (task.limit=0): {LIMIT_0} | {sweep / '1'} |" in table[3]
    assert "| shapes | test | tiny_llava |" in table[2] and "| shapes | test | tiny_llava |" in table[4]
    assert "failed" not in table[2] + table[4]

    # a job still being written by a vlx run is listed as such, not read half-written
    with exclusive(sweep / "2"):
        run_stage(make_cfg("stage=report", f"stage.sweep={sweep}", run_dir=tmp_path / "report2"))
        row = (sweep / "results.md").read_text().splitlines()[4]
    assert f"| being written by another vlx run (pid {os.getpid()} on " in row and "tiny_llava" not in row


def test_a_sweep_whose_every_job_is_refused_leaves_nothing(tmp_path):
    sweep = tmp_path / "multirun" / "day" / "time"
    res = vlx("-m", "model=tiny_llava", "task=shapes", "task.limit=0,-1", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("vlx: error:")]
    assert errors == [
        f"vlx: error: job 0 (task.limit=0): {LIMIT_0}",
        f"vlx: error: job 1 (task.limit=-1): {LIMIT_0.replace('=0', '=-1')}",
        "vlx: error: 2 of 2 sweep jobs failed; nothing was kept",
    ]
    assert not (tmp_path / "multirun").exists()


def test_a_failed_job_that_was_a_bug_makes_the_sweep_exit_1_and_keeps_its_folder(tmp_path, capsys):
    """The end of a sweep, from the records its jobs left (a refused job and one that hit a bug): exit 1, and the
    folder, whose bug's traceback is in the job's vlx.log, is kept."""
    from vlx.__main__ import _sweep_failed
    from vlx.run.sweeps import SweepJobFailed, write_error_record

    sweep = tmp_path / "sweep"
    for job, (limit, message, refused) in enumerate([("0", LIMIT_0, True), ("4", "ZeroDivisionError: oops", False)]):
        (sweep / str(job) / ".hydra").mkdir(parents=True)
        overrides = ["model=tiny_llava", f"task.limit={limit}"]
        (sweep / str(job) / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        (sweep / str(job) / "vlx.log").write_text("")
        write_error_record(sweep / str(job), message, refused=refused, overrides=overrides, job=job)
    RunDirGuard.state.clear()
    RunDirGuard.state.update(folder=sweep, existing=tmp_path, sweep=True, saved={}, started=0.0)
    with pytest.raises(SystemExit) as exit_:
        _sweep_failed(SweepJobFailed(LIMIT_0, refused=True, sweep_dir=str(sweep)))
    assert exit_.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"vlx: error: job 0 (task.limit=0): {LIMIT_0}",
        "vlx: error: job 1 (task.limit=4): ZeroDivisionError: oops",
        f"vlx: error: 2 of 2 sweep jobs failed; each job's vlx.log under {sweep} says more",
    ]
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1"]
    RunDirGuard.state.clear()
