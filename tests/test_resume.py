"""Resuming inference: a killed run continues where it stopped, only with the same settings, and sampling too."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from conftest import REPO, cli_env
from helpers import HANG_GUARD_S, wait_for

from vlx.__main__ import run_stage
from vlx.errors import ConfigError


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_then_rerun_gives_every_id_once_and_keeps_earlier_rows(make_cfg, tmp_path):
    out, reference = tmp_path / "run", tmp_path / "uninterrupted"
    args = [
        "model=tiny_llava",
        "task=shapes",
        "task.limit=60",
        "batch_size=2",
        "generation.max_new_tokens=48",
        "eval_after_infer=false",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlx", *args, f"hydra.run.dir={out}"],
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    predictions = out / "predictions.jsonl"
    try:
        wait_for(lambda: predictions.is_file() and len(predictions.read_bytes().splitlines()) >= 6, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = predictions.read_bytes()
    n_before = len(before.splitlines())
    assert 6 <= n_before < 60, "the run was not stopped midway"

    again = subprocess.run(
        [sys.executable, "-m", "vlx", *args, f"hydra.run.dir={out}"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    whole = before[: before.rfind(b"\n") + 1]  # a line cut by the kill is the only thing dropped
    earlier = [json.loads(line) for line in whole.decode().splitlines()]
    final = {r["id"]: r for r in rows(out)}
    assert all(final[r["id"]] == r for r in earlier)  # rows written before the kill are kept as they were
    ids = [r["id"] for r in rows(out)]
    assert len(ids) == 60 and len(set(ids)) == 60

    run_stage(make_cfg(*args, run_dir=reference))  # in this process: the command line was tested above
    by_id = {r["id"]: r["raw"] for r in rows(reference)}
    assert [by_id[r["id"]] for r in rows(out)] == [r["raw"] for r in rows(out)]  # as if never interrupted


def test_resume_refuses_other_settings(make_cfg, tmp_path):
    base = ["model=tiny_llava", "task=shapes", "task.limit=2", "generation.max_new_tokens=4"]
    run_stage(make_cfg(*base))
    with pytest.raises(ConfigError, match=r"generation.max_new_tokens: 4 \(saved\) vs 8 \(now\)"):
        run_stage(make_cfg(*base[:-1], "generation.max_new_tokens=8"))
    with pytest.raises(ConfigError, match=r"model.checkpoint"):
        run_stage(make_cfg("model=tiny_paligemma", *base[1:]))
    # batch size and limit change no prediction: allowed
    run_stage(make_cfg(*base[:2], "task.limit=3", "generation.max_new_tokens=4", "batch_size=1"))
    assert len(rows(tmp_path / "run")) == 3


def test_resume_key_continues_a_given_directory(make_cfg, tmp_path):
    first = tmp_path / "first"
    run_stage(make_cfg("model=tiny_llava", "task=shapes", "task.limit=2", "generation.max_new_tokens=4", run_dir=first))
    summary = run_stage(
        make_cfg(
            "model=tiny_llava",
            "task=shapes",
            "task.limit=4",
            "generation.max_new_tokens=4",
            f"stage.resume={first}",
            run_dir=tmp_path / "elsewhere",
        )
    )
    assert summary["new_items"] == 2 and len(rows(first)) == 4


def test_sampling_resumes_as_if_uninterrupted(make_cfg, tmp_path, monkeypatch):
    from vlx.models import PaliGemmaAdapter

    args = ["model=tiny_paligemma", "task=shapes", "task.limit=6", "generation=seed_sampling", "batch_size=2"]
    run_stage(make_cfg(*args, run_dir=tmp_path / "whole"))

    real, calls = PaliGemmaAdapter.generate, []

    def generate(self, *a, **kw):  # the run is killed during its second batch
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(PaliGemmaAdapter, "generate", generate)
    with pytest.raises(KeyboardInterrupt):
        run_stage(make_cfg(*args, run_dir=tmp_path / "parts"))
    monkeypatch.setattr(PaliGemmaAdapter, "generate", real)
    assert len(rows(tmp_path / "parts")) == 2
    run_stage(make_cfg(*args, run_dir=tmp_path / "parts"))
    whole, parts = rows(tmp_path / "whole"), rows(tmp_path / "parts")
    assert [r["raw"] for r in parts] == [r["raw"] for r in whole]
    assert len({r["raw"] for r in whole}) > 1  # it did sample


def _table(folder, rows):
    """A table task's data: two images and test.csv with `rows`, its modification time moved on (a rewrite within
    the same clock tick must still read as changed)."""
    import csv
    import os

    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (220, 30, 30)).save(folder / "red.png")
    Image.new("RGB", (30, 40), (30, 30, 220)).save(folder / "blue.png")
    path = folder / "test.csv"
    stamp = path.stat().st_mtime_ns + 10**9 if path.exists() else None
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["img", "hypothesis", "gold"])
        writer.writeheader()
        writer.writerows(rows)
    if stamp is not None:
        os.utime(path, ns=(stamp, stamp))


TABLE_ROWS = [
    {"img": "red.png", "hypothesis": "There is a red circle.", "gold": "entailment"},
    {"img": "blue.png", "hypothesis": "There is a green square.", "gold": "contradiction"},
    {"img": "red.png", "hypothesis": "It is made of wood.", "gold": "neutral"},
]


def _table_args(folder, *extra):
    # no id column: the ids are row numbers, so an inserted row shifts which item each id means
    return [
        "model=tiny_llava",
        "task=table",
        f"task.source={folder}",
        "task.columns.image=img",
        "task.columns.text=hypothesis",
        "task.columns.label=gold",
        "task.columns.id=null",
        "task.columns.explanations=[]",
        "decode=score",
        "batch_size=2",
        "eval_after_infer=false",
        *extra,
    ]


def test_resume_refuses_finished_rows_whose_item_changed_in_the_data(make_cfg, tmp_path):
    data, out = tmp_path / "data", tmp_path / "run"
    _table(data, TABLE_ROWS)
    run_stage(make_cfg(*_table_args(data, "task.limit=2"), run_dir=out))
    run_stage(make_cfg(*_table_args(data), run_dir=out))  # the same data, a higher limit: continued
    before = (out / "predictions.jsonl").read_bytes()
    assert [r["id"] for r in rows(out)] == ["1", "2", "3"]

    _table(data, [TABLE_ROWS[0], {**TABLE_ROWS[1], "gold": "neutral"}, TABLE_ROWS[2]])  # a corrected label
    with pytest.raises(
        ConfigError,
        match=r"run holds finished predictions for 1 item \(2: gold\) .*the data "
        r"changed.*Run into a new directory, or restore the data",
    ):
        run_stage(make_cfg(*_table_args(data), run_dir=out))
    assert (out / "predictions.jsonl").read_bytes() == before

    inserted = {"img": "blue.png", "hypothesis": "A new first row.", "gold": "neutral"}
    _table(data, [inserted, *TABLE_ROWS])  # every id now means the row before it
    with pytest.raises(
        ConfigError,
        match=r"for 3 items \(1: image, text, gold; 2: image, text, gold; 3: image, "
        r"text, gold\)",
    ):
        run_stage(make_cfg(*_table_args(data), run_dir=out))
    assert (out / "predictions.jsonl").read_bytes() == before

    _table(data, TABLE_ROWS)  # the data restored: the run continues as it was
    run_stage(make_cfg(*_table_args(data), run_dir=out))
    assert (out / "predictions.jsonl").read_bytes() == before
