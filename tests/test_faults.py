"""Every way a user can break a run: one clear line and exit 2 (130/143 for Ctrl-C/SIGTERM), before the model loads
where that can be known; nothing finished is lost, nothing the user made is overwritten.

The cases, by what a user does:
- the command line: a mistyped key, a group option that does not exist, an override Hydra cannot parse, a group given
  a number, a negative or impossible number of shots, a required key left unset, `task.limit=0` or `abc`, a seed
  numpy refuses, `lora.r=0`, a `fewshot.source` its strategy would ignore, `stage.resume=` or `stage.run=` naming a
  missing directory;
- the data: images cut short, corrupt, over PIL's pixel limit, missing, changed while the run goes, in any PIL mode;
  CSV and jsonl files that are not UTF-8, a CSV that is empty or has rows with more or fewer fields than its header;
- the run directory: two runs writing into one, a stale lock of a killed run, a read-only predictions file, a run
  directory that cannot be made, a full disk (the one line names the file: every write helper, eval's plot and
  metrics.json, infer's predictions.csv, the judge's prompt.txt), predictions with repeated ids, a resume with a
  lower limit, a broken summary.json / metrics.json (the report lists the run with the reason), a broken shapes
  manifest; a refused run (its directory is removed, never one that existed; an existing run's .hydra/ is put back),
  stage=select_correct reading a run another process still writes (it writes only into its own directory; compare,
  eval, judge and review refuse such a run too: tests/test_compare.py);
- the machine: no Java for the explanation metrics (refused before the model loads, with what to install and
  eval.java=false, whose scores are named `<protocol>_no_java`);
- signals: Ctrl-C, SIGTERM, SIGKILL with loader worker processes;
- models and fine-tunes: a checkpoint folder of the user's given to a tiny model config (never rebuilt), a missing
  one, a half-written checkpoint, a resume with other settings, a finished fine-tune run again, a merged model
  (infers as its adapter did), a broken vlx_adapter.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    HANG_GUARD_S,
    cli_env,
    lines,
    listed_options,
    model_options,
    one_error_line,
    placeholder_image,
    run_vlx,
    start_vlx,
    unwritable,
    wait_for,
    write_esnli_csv,
    write_memes,
)
from PIL import Image

from vlx.__main__ import _user_problem, run_stage
from vlx.errors import ConfigError, DataError, Interrupted, VlxError
from vlx.tasks.images import load_rgb

TINY_RUN = ["model=tiny_llava", "task=shapes", "generation.max_new_tokens=4", "eval_after_infer=false"]
# what a run logs as it loads the weights: absent from a run refused before that, present where one loads
LOADING = "loading AutoModelForImageTextToText"


# --- the command line ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["modle=llava"], "modle=llava: vlx has no setting 'modle' (did you mean model?)"),
        (["task=shapes", "task.limitt=3"], "task.limitt=3: vlx has no setting 'task.limitt' (did you mean task.limit"),
        (
            ["task=esnl"],
            "task=esnl: no such option (did you mean esnli?); choose one of " + ", ".join(listed_options("task")),
        ),
        (["experiment=demos"], "experiment=demos: there is no experiment 'demos' (did you mean demo?)"),
        (["task.limit=["], "cannot read the command line"),
        (
            ["model=3"],
            "model=3: model takes the name of an option: " + ", ".join(model_options()),
        ),
    ],
)
def test_command_line_mistakes_are_one_line(args, message):
    res = run_vlx(*args, "--cfg", "job")
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in one_error_line(res)


def test_an_impossible_setting_on_the_command_line_is_vlxs_one_line(tmp_path):
    """`shots=-1` went through Hydra's error wrapping (exit 1, a traceback); now it is vlx's line and exit 2."""
    res = run_vlx(*TINY_RUN, "task.limit=2", "shots=-1", f"hydra.run.dir={tmp_path / 'run'}")
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "shots=-1: use a number of demonstrations >= 0" in one_error_line(res)
    assert LOADING not in res.stdout + res.stderr  # refused before any weights load


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["shots=-1"], "shots=-1: use a number of demonstrations >= 0"),
        (["task.limit=0"], "task.limit=0: use a positive number of items"),
        (["task=explainer_csv", "shots=0"], "task.path is not set (task=explainer_csv needs it): add task.path=..."),
        (["stage.resume=/nonexistent/run"], "stage.resume='/nonexistent/run': no such directory"),
        (["stage=eval", "stage.run=/nonexistent/run"], "stage.run='/nonexistent/run': no such directory"),
        (["shots=1000"], "few-shot k=1000 is larger than the pool"),
        (["seed=-1"], "seed=-1: use a whole number from 0 to 2**32 - 1"),
        (["seed=abc"], "seed='abc': use a whole number"),
        (["task.limit=abc"], "task.limit='abc': use a positive number of items"),
        (["shots=2", "fewshot.source=/tmp"], "fewshot.source is read by fewshot.strategy=from_correct only"),
        (["stage=finetune", "task.split=train", "lora=r64", "lora.r=0"], "lora.r=0: use a positive rank"),
        # the inference after training: refused before the training, not after it
        (["stage=finetune", "task.split=train", "lora=r64", "finetune.infer_split=tset"], "esnlive_tset.csv not found"),
        (
            ["stage=finetune", "task.split=train", "lora=r64", "finetune.infer_split=test", "finetune.infer_limit=0"],
            "finetune.infer_limit=0: use a positive number of items",
        ),
    ],
)
def test_impossible_settings_stop_before_the_model_loads(make_cfg, no_model_loads, args, message):
    # in-process, read as the command line reads it (the test above checks that this becomes one line and exit 2)
    with pytest.raises(Exception) as raised:
        run_stage(make_cfg(*TINY_RUN, "task.limit=2", *args))
    assert message in (_user_problem(raised.value) or repr(raised.value))


def test_a_run_directory_that_cannot_be_made_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    res = run_vlx(*TINY_RUN, "task.limit=2", f"hydra.run.dir={blocker / 'run'}")
    assert res.returncode == 2
    assert str(blocker) in one_error_line(res)


@pytest.mark.slow
def test_eval_and_resume_accept_a_runs_root_or_its_infer_folder(make_cfg, tmp_path):
    root = tmp_path / "finetune-run"  # a fine-tune's or the demo's run: its predictions are in infer/
    run_stage(make_cfg(*TINY_RUN, "task.limit=2", run_dir=root / "infer"))
    metrics = run_stage(make_cfg("stage=eval", f"stage.run={root}", "eval.resamples=0", run_dir=tmp_path / "eval"))
    assert metrics["n"] == 2 and (root / "infer" / "metrics.json").is_file()
    summary = run_stage(make_cfg(*TINY_RUN, "task.limit=3", f"stage.resume={root}", run_dir=tmp_path / "elsewhere"))
    assert summary["new_items"] == 1 and len(lines(root / "infer" / "predictions.jsonl")) == 3
    run_stage(
        make_cfg(
            "stage=eval",
            f"stage.run={root / 'infer' / 'predictions.jsonl'}",
            "eval.resamples=0",
            run_dir=tmp_path / "eval2",
        )
    )
    assert json.loads((root / "infer" / "metrics.json").read_text())["n"] == 3


# --- the data --------------------------------------------------------------------------------------------------


def esnli_with_images(folder: Path, images: dict[str, Image.Image | bytes]) -> Path:
    """An e-SNLI-VE CSV with one row per image (written as given: a PIL image, or raw bytes)."""
    rows = []
    for i, (name, image) in enumerate(images.items()):
        if isinstance(image, bytes):
            (folder / name).write_bytes(image)
        else:
            image.save(folder / name)
        rows.append([str(i), f"p{i}", name, f"There is a red circle {i}.", "entailment", "It is."])
    return write_esnli_csv(folder / "esnlive_test.csv", rows)


def image_bytes(image: Image.Image, fmt: str) -> bytes:
    path = Path(tempfile.mkstemp(suffix=f".{fmt}")[1])
    image.save(path, format=fmt)
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.fixture
def bad_images(tmp_path):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return {
        "good.png": noise,
        "cut.png": image_bytes(noise, "png")[:-400],
        "cut.jpg": image_bytes(noise, "jpeg")[:-300],
        "not-an-image.jpg": b"GIF89a this is no image",
        "huge.png": image_bytes(Image.new("1", (10_000, 9_000)), "png"),  # 90 Mpx, over PIL's 89.5 Mpx limit
    }


def test_bad_images_are_found_by_the_pre_check(tmp_path, bad_images):
    from vlx.tasks import build_task

    esnli_with_images(tmp_path, bad_images)
    with pytest.raises(DataError, match=r"esnlive_test.csv:3: image .*cut.png: cannot be decoded .*on_bad_image=skip"):
        build_task("esnli", csv_dir=tmp_path, image_dir=tmp_path).load()
    split = build_task("esnli", csv_dir=tmp_path, image_dir=tmp_path, on_bad_image="skip").load()
    assert [ex.image.name for ex in split.examples] == ["good.png"]
    reasons = {Path(s["image"]).name: s["reason"] for s in split.skipped}
    assert set(reasons) == {"cut.png", "cut.jpg", "not-an-image.jpg", "huge.png"}
    assert "truncated" in reasons["cut.jpg"] or "cannot be decoded" in reasons["cut.jpg"]
    assert "10000x9000 pixels (90 Mpx), over PIL's limit of 89 Mpx" in reasons["huge.png"]


def test_an_image_that_breaks_mid_run_honours_on_bad_image(make_cfg, tmp_path):
    from hydra.utils import instantiate

    from vlx.engine.batches import prepare_batch

    cfg = make_cfg("model=tiny_paligemma", "task=shapes", "task.limit=3")
    task = instantiate(cfg.task)
    examples = task.load().examples  # checked and fine here
    broken = tmp_path / "broken.png"
    broken.write_bytes(examples[1].image.read_bytes()[:60])  # then the file is cut while the run goes
    examples[1] = dataclasses.replace(examples[1], image=broken)
    model = instantiate(cfg.model, _partial_=True)(quantization=None)
    batch = prepare_batch(model, task, None, examples, 0, 3, None, on_bad_image="skip")
    assert [ex.id for ex in batch.examples] == [examples[0].id, examples[2].id] and batch.count == 3
    assert batch.skipped[0]["id"] == examples[1].id and str(broken) in batch.skipped[0]["reason"]
    with pytest.raises(DataError, match=rf"item {re.escape(examples[1].id)} cannot be prepared .*broken.png"):
        prepare_batch(model, task, None, examples, 0, 3, None, on_bad_image="fail")


def test_every_image_mode_becomes_the_rgb_a_viewer_shows(tmp_path):
    def saved(image: Image.Image, name: str, **kw) -> Path:
        image.save(tmp_path / name, **kw)
        return tmp_path / name

    grey16 = Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16))  # 50% grey in 16 bits
    assert grey16.mode == "I;16"
    cases = {
        "grey16.png": (saved(grey16, "grey16.png"), (128, 128, 128)),
        "int32.tif": (saved(Image.fromarray(np.full((4, 4), 32896, dtype=np.int32)), "int32.tif"), (128, 128, 128)),
        "float.tif": (saved(Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)), "float.tif"), (128, 128, 128)),
        "palette.png": (
            saved(Image.new("RGB", (4, 4), (200, 10, 10)).convert("P", palette=Image.Palette.ADAPTIVE), "palette.png"),
            (200, 10, 10),
        ),
        "cmyk.tif": (saved(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "cmyk.tif"), (255, 0, 0)),
        "la.png": (saved(Image.new("LA", (4, 4), (0, 0)), "la.png"), (255, 255, 255)),  # transparent: white
        "rgba.png": (saved(Image.new("RGBA", (4, 4), (0, 0, 255, 255)), "rgba.png"), (0, 0, 255)),
        "bilevel.png": (saved(Image.new("1", (4, 4), 1), "bilevel.png"), (255, 255, 255)),
    }
    transparent = Image.new("P", (4, 4), 0)
    transparent.putpalette([0, 0, 0] * 256)
    transparent.info["transparency"] = 0
    cases["p-transparent.png"] = (saved(transparent, "p-transparent.png", transparency=0), (255, 255, 255))
    for name, (path, expected) in cases.items():
        image = load_rgb(path)
        assert image.mode == "RGB", name
        pixel = image.getpixel((2, 2))
        assert all(abs(a - b) <= 3 for a, b in zip(pixel, expected, strict=True)), (name, pixel, expected)


@pytest.mark.parametrize("reader", ["esnli", "meme", "predictions"])
def test_text_that_is_not_utf8_names_file_and_line(make_cfg, tmp_path, reader):
    from vlx.stages.evaluation import evaluate
    from vlx.tasks import build_task

    if reader == "esnli":
        path = write_esnli_csv(tmp_path / "esnlive_test.csv", [["0", "p0", "a.png", "A cafe.", "neutral", "e"]] * 2)
        path.write_bytes(path.read_bytes().replace(b"cafe", b"caf\xe9", 1))
        placeholder_image(tmp_path / "a.png")
        call, where = lambda: build_task("esnli", csv_dir=tmp_path, image_dir=tmp_path).load(), f"{path}:2"
    elif reader == "meme":
        path = write_memes(tmp_path, "dev_seen", [{"id": 1, "img": "img/01.png", "label": 0, "text": "x"}] * 3)
        data = path.read_bytes().split(b"\n")
        data[2] = data[2].replace(b'"x"', b'"caf\xe9"')
        path.write_bytes(b"\n".join(data))
        call, where = lambda: build_task("meme", data_dir=tmp_path).load(), f"{path}:3"
    else:
        path = tmp_path / "predictions.jsonl"
        path.write_bytes(b'{"id": "1", "gold": "neutral", "pred": "neutral"}\n{"id": "2", "pred": "caf\xe9"}\n')
        from vlx.run.records import RunInfo

        info = RunInfo(task="esnli", labels=("entailment", "contradiction", "neutral"))
        call, where = lambda: evaluate(tmp_path, info, {"resamples": 0, "level": 0.95, "seed": 0}), f"{path}:2"
    with pytest.raises(DataError) as err:
        call()
    assert str(err.value).startswith(where) and "not UTF-8" in str(err.value)


def test_a_byte_order_mark_is_read_as_utf8(tmp_path):
    from vlx.tasks import build_task

    path = write_esnli_csv(tmp_path / "esnlive_test.csv", [["0", "p0", "a.png", "A dog.", "neutral", "e"]])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    placeholder_image(tmp_path / "a.png")
    assert [ex.id for ex in build_task("esnli", csv_dir=tmp_path, image_dir=tmp_path).load().examples] == ["p0"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty: a CSV file needs a header row with pairID"),
        (",pairID,Flickr30kID,hypothesis,gold_label,explanation\n0,p0,a.png,A dog, running.,neutral,e\n",
         ":2: the row has 7 fields, more than the header's 6; quote a field that holds a ','"),
        (",pairID,Flickr30kID,hypothesis,gold_label,explanation\n0,p0,a.png,A dog.,neutral,e\n1,p1,a.png\n",
         ":3: the row has 3 fields, fewer than the header's 6; add the missing fields"),
    ],
)  # fmt: skip
def test_a_csv_with_no_header_or_ragged_rows_names_file_and_line(tmp_path, content, message):
    from vlx.tasks import build_task

    (tmp_path / "esnlive_test.csv").write_text(content)
    placeholder_image(tmp_path / "a.png")
    with pytest.raises(DataError, match=re.escape(message)) as err:
        build_task("esnli", csv_dir=tmp_path, image_dir=tmp_path).load()
    assert str(err.value).startswith(str(tmp_path / "esnlive_test.csv"))
    (tmp_path / "explainer.csv").write_text("image_path,hypothesis,exp\na.png,A dog.,because\na.png,A cat.\n")
    fewer = f"{tmp_path / 'explainer.csv'}:3: the row has 2 fields, fewer than the header's 3"
    with pytest.raises(DataError, match=re.escape(fewer)):
        build_task("explainer_csv", path=tmp_path / "explainer.csv").load()


# --- the run directory -----------------------------------------------------------------------------------------


def holder_pid(run: Path) -> int | None:
    lock = run / ".vlx.lock"
    try:
        return json.loads(lock.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.slow
def test_one_writer_per_run_directory_and_a_dead_writer_is_taken_over(tmp_path):
    run = tmp_path / "run"
    args = [*TINY_RUN, "task.limit=60", "batch_size=1", "generation.max_new_tokens=24", f"hydra.run.dir={run}"]
    first = start_vlx(*args, log=tmp_path / "first.log")
    predictions = run / "predictions.jsonl"
    try:
        wait_for(
            lambda: holder_pid(run) == first.pid and predictions.is_file() and b"\n" in predictions.read_bytes(), first
        )
        # paused while it holds the lock, so that it is still writing however slowly the second starts (a refusal
        # comes before any weights load: no LOADING below, whatever the clock says)
        first.send_signal(signal.SIGSTOP)
        second = run_vlx(*args)
        assert LOADING in (tmp_path / "first.log").read_text()
        assert first.poll() is None, "the first run ended before the second was refused"
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        line = one_error_line(second)
        assert f"{run} is being written by another vlx run (pid {first.pid} on " in line
        assert LOADING not in second.stdout + second.stderr
    finally:
        first.send_signal(signal.SIGKILL)  # dies holding the lock: the OS releases it, its record stays
        first.wait()
    done = len(lines(predictions))
    assert 1 <= done < 60
    third = run_vlx(*args, "batch_size=32")  # the batch size changes no answer: the rest goes quicker
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"taking over the lock left by pid {first.pid}" in third.stdout + third.stderr
    ids = [row["id"] for row in lines(predictions)]
    assert len(ids) == len(set(ids)) == 60


def test_resume_with_a_lower_limit_is_refused(make_cfg, tmp_path):
    run_stage(make_cfg(*TINY_RUN, "task.limit=4"))
    with pytest.raises(ConfigError, match=r"already holds 2 predictions for items outside the split as configured"):
        run_stage(make_cfg(*TINY_RUN, "task.limit=2"))
    assert len(lines(tmp_path / "run" / "predictions.jsonl")) == 4  # nothing dropped


def test_eval_refuses_two_different_predictions_for_one_id(make_cfg, tmp_path):
    run_stage(make_cfg(*TINY_RUN, "task.limit=3"))
    path = tmp_path / "run" / "predictions.jsonl"
    rows = lines(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + rows[:1]))  # the same row twice: counted once
    metrics = run_stage(
        make_cfg("stage=eval", f"stage.run={tmp_path / 'run'}", "eval.resamples=0", run_dir=tmp_path / "e")
    )
    assert metrics["n"] == 3
    other = {**rows[1], "pred": "neutral" if rows[1]["pred"] != "neutral" else "entailment"}
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, other]))
    with pytest.raises(DataError, match=rf"different predictions for the same id: {rows[1]['id']} \(rows 2 and 4\)"):
        run_stage(make_cfg("stage=eval", f"stage.run={tmp_path / 'run'}", "eval.resamples=0", run_dir=tmp_path / "e"))


def test_a_read_only_predictions_file_is_refused_before_the_model_loads(make_cfg, tmp_path):
    run = tmp_path / "run"
    run_stage(make_cfg(*TINY_RUN, "task.limit=2", run_dir=run))
    with unwritable(run / "predictions.jsonl"):
        res = run_vlx(*TINY_RUN, "task.limit=3", f"hydra.run.dir={run}")
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    line = one_error_line(res)
    assert f"cannot write {run / 'predictions.jsonl'}" in line and "chmod u+w" in line
    assert LOADING not in res.stdout + res.stderr
    assert len(lines(run / "predictions.jsonl")) == 2


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root, where mounts are allowed), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_names_the_path_and_keeps_the_predictions(tmp_path, small_disk):
    run = small_disk / "run"
    args = [*TINY_RUN, "task.limit=60", "batch_size=1", "generation.max_new_tokens=40", f"hydra.run.dir={run}"]
    proc = start_vlx(*args, log=tmp_path / "out.log")
    wait_for(lambda: (run / "predictions.jsonl").is_file() and len(lines(run / "predictions.jsonl")) >= 3, proc)
    # the disk fills up while the run goes
    with contextlib.suppress(OSError), (small_disk / "filler").open("wb", buffering=0) as filler:
        while True:
            filler.write(b"\0" * 4096)
    assert proc.wait(timeout=HANG_GUARD_S) == 2
    output = (tmp_path / "out.log").read_text()
    assert LOADING in output and "Traceback" not in output
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "the disk is full" in errors[0] and str(run / "predictions.jsonl") in errors[0]
    kept = (run / "predictions.jsonl").read_bytes()
    whole = [json.loads(row) for row in kept[: kept.rfind(b"\n") + 1].splitlines()]
    assert 3 <= len(whole) < 60  # what was finished is there
    (small_disk / "filler").unlink()
    again = run_vlx(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    final = lines(run / "predictions.jsonl")
    assert len(final) == len({row["id"] for row in final}) == 60
    by_id = {row["id"]: row for row in final}
    assert all(by_id[row["id"]] == row for row in whole)  # kept as they were


# /dev/full fails every write with ENOSPC, as a full disk does: a file (or a stage's temporary file) linked to it is a
# disk that fills up exactly there
FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not FULL.exists(), reason="no /dev/full here (Linux) to fail writes with ENOSPC")
DISK_FULL = "the disk is full: free some space, then run the same command again (finished work is kept)"


def _on_full_disk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(FULL)
    return path


@needs_dev_full
def test_every_write_helper_names_its_file_when_the_disk_fills(tmp_path):
    """A write() into a file already open raises ENOSPC with no file name: the helpers every stage writes through
    (appends, atomic rewrites, JSON and CSV files) name the file, and a failed atomic write keeps the old file and
    leaves no temporary one."""
    from vlx.errors import os_error_message
    from vlx.run.store import JsonlStore, write_csv, write_json

    def refused(write, path):
        with pytest.raises(OSError) as err:
            write()
        assert err.value.errno == errno.ENOSPC and os_error_message(err.value) == f"cannot write {path}: {DISK_FULL}"

    appended = _on_full_disk(tmp_path / "verdicts.jsonl")  # infer's predictions, the judge's verdicts
    refused(lambda: JsonlStore(appended).append([{"id": "a"}]), appended)
    table = _on_full_disk(tmp_path / "predictions.csv")
    refused(lambda: write_csv(table, [{"id": "a"}], ["id"]), table)
    summary = tmp_path / "summary.json"
    summary.write_text('{"kept": 1}\n')
    tmp = _on_full_disk(tmp_path / f".summary.json.{os.getpid()}")  # write_json's temporary file
    refused(lambda: write_json(summary, {"new": 2}), summary)
    assert summary.read_text() == '{"kept": 1}\n' and not os.path.lexists(tmp)
    items = tmp_path / "explanation_items.jsonl"
    items.write_text('{"id": "a"}\n')
    tmp = _on_full_disk(tmp_path / "explanation_items.jsonl.tmp")
    refused(lambda: JsonlStore(items).rewrite([{"id": "b"}]), items)
    assert items.read_text() == '{"id": "a"}\n' and not os.path.lexists(tmp)


@needs_dev_full
def test_a_full_disk_during_eval_names_the_file_in_one_line(tmp_path):
    """`vlx stage=eval` on a disk that fills up while it writes its plot: one line naming the file, exit 2."""
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        {
            "id": f"{i:05d}",
            "image": f"{i}.png",
            "text": "t",
            "gold": ("not offensive", "offensive")[i % 2],
            "pred": "offensive",
            "explanation": "e",
            "raw": "r",
            "refs": [],
        }
        for i in range(6)
    ]
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot = _on_full_disk(run / "confusion_matrix.png")
    res = run_vlx(
        "stage=eval", f"stage.run={run}", "task=meme", "eval.resamples=20", f"hydra.run.dir={tmp_path / 'ev'}"
    )
    output = res.stdout + res.stderr
    assert res.returncode == 2 and "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if "[ERROR]" in line or line.startswith("vlx: error")]
    assert len(errors) == 1 and errors[0].endswith(f"cannot write {plot}: {DISK_FULL}"), errors


@needs_dev_full
def test_a_full_disk_names_the_file_in_eval_infer_and_judge(make_cfg, tmp_path):
    """The files eval (metrics.json), infer (predictions.csv, after the predictions are safe) and the judge (its
    prompt.txt, before its model loads) write: each is named when the disk fills up there."""
    from test_judge import finished_run, judge_cfg

    run = finished_run(tmp_path / "judged")
    metrics = run / "metrics.json"
    kept = metrics.read_bytes()
    _on_full_disk(run / f".metrics.json.{os.getpid()}")
    with pytest.raises(OSError) as err:
        run_stage(
            make_cfg(
                "stage=eval",
                f"stage.run={run}",
                "task=shapes",
                "eval.resamples=20",
                "eval.java=false",
                run_dir=tmp_path / "ev",
            )
        )
    assert _user_problem(err.value) == f"cannot write {metrics}: {DISK_FULL}" and metrics.read_bytes() == kept
    assert not os.path.lexists(run / f".metrics.json.{os.getpid()}")  # no half-written copy left behind

    prompt = _on_full_disk(run / "judgements" / "tiny_llava" / "prompt.txt")
    with pytest.raises(OSError) as err:
        run_stage(judge_cfg(make_cfg, run))
    assert _user_problem(err.value) == f"cannot write {prompt}: {DISK_FULL}"

    out = tmp_path / "infer"
    table = _on_full_disk(out / "predictions.csv")
    with pytest.raises(OSError) as err:
        run_stage(make_cfg(*TINY_RUN, "task.limit=2", run_dir=out))
    assert _user_problem(err.value) == f"cannot write {table}: {DISK_FULL}"
    assert len(lines(out / "predictions.jsonl")) == 2  # what was finished is kept


def test_broken_json_files_of_a_run_are_named(make_cfg, tmp_path):
    """A truncated or hand-edited summary/metrics file: the report lists the run with the reason, the other
    readers name the file."""
    good, broken, gone = tmp_path / "good", tmp_path / "broken", tmp_path / "gone"
    for run in (good, broken):
        run.mkdir()
        (run / "summary.json").write_text(json.dumps({"run": {"task": "shapes", "model": "tiny_llava"}}))
        (run / "metrics.json").write_text(json.dumps({"n": 3, "accuracy": 0.5}))
    (broken / "metrics.json").write_text('{"n": 3, "accur')  # cut short
    metrics = run_stage(make_cfg("stage=report", f"stage.runs=[{good},{broken},{gone}]", run_dir=tmp_path / "report"))
    assert metrics["runs"] == 3 and metrics["complete"] == 1
    table = (tmp_path / "report" / "results.md").read_text().splitlines()
    assert f"{broken / 'metrics.json'}: not valid JSON" in table[3] and "no such directory" in table[4]
    (good / "summary.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"summary.json: holds a JSON list, not an object"):
        run_stage(make_cfg("stage=eval", f"stage.run={good}", run_dir=tmp_path / "eval"))


# --- signals ---------------------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_say_how_far_the_run_got(tmp_path, signum, code):
    run = tmp_path / "run"
    proc = start_vlx(
        *TINY_RUN,
        "task.limit=60",
        "batch_size=2",
        "generation.max_new_tokens=40",
        f"hydra.run.dir={run}",
        log=tmp_path / "out.log",
    )
    wait_for(lambda: (run / "predictions.jsonl").is_file() and len(lines(run / "predictions.jsonl")) >= 4, proc)
    proc.send_signal(signum)
    assert proc.wait(timeout=HANG_GUARD_S) == code
    output = (tmp_path / "out.log").read_text()
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    done = len(lines(run / "predictions.jsonl"))
    assert f"interrupted after {done} of 60 items" in output
    assert "run the same command again to continue" in output


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from /proc (Linux)")
def test_loader_workers_die_with_a_killed_parent(tmp_path):
    run = tmp_path / "run"
    proc = start_vlx(
        *TINY_RUN,
        "task.limit=200",
        "batch_size=2",
        "loader_workers=2",
        "generation.max_new_tokens=40",
        f"hydra.run.dir={run}",
        log=tmp_path / "out.log",
    )
    wait_for(lambda: (run / "predictions.jsonl").is_file() and len(children(proc.pid)) >= 2, proc)
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_for(lambda: not any(Path(f"/proc/{w}").exists() and "zombie" not in status(w) for w in workers))


def status(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/status")).read_text().lower()
    except OSError:
        return "zombie"  # gone


def test_interrupted_inference_in_process_keeps_what_it_finished(make_cfg, tmp_path, monkeypatch):
    import vlx.engine.loop as loop

    real = loop.decode
    calls = []

    def decode_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "decode", decode_then_interrupt)
    with pytest.raises(Interrupted, match=r"interrupted after 4 of 10 items \(4 in this run"):
        run_stage(make_cfg(*TINY_RUN, "task.limit=10", "batch_size=2", "batching=dataset"))
    assert len(lines(tmp_path / "run" / "predictions.jsonl")) == 4


# --- models and fine-tunes -------------------------------------------------------------------------------------


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_users_checkpoint_is_loaded_as_it_is_never_rebuilt(make_cfg, tmp_path):
    from hydra.utils import instantiate

    cfg = make_cfg("model=tiny_paligemma")
    mine = tmp_path / "my-model"
    shutil.copytree(instantiate(cfg.model, _partial_=True)(quantization=None).checkpoint, mine)
    (mine / "tiny_model.json").unlink()  # a folder the factory did not make
    before = digest(mine)
    adapter = instantiate(make_cfg("model=tiny_paligemma", f"model.checkpoint={mine}").model, _partial_=True)(
        quantization=None
    )
    assert adapter.checkpoint == str(mine) and digest(mine) == before
    with pytest.raises(VlxError, match=rf"model.checkpoint='{tmp_path / 'missing'}': no such folder"):
        instantiate(make_cfg("model=tiny_paligemma", f"model.checkpoint={tmp_path / 'missing'}").model, _partial_=True)(
            quantization=None
        )
    assert not (tmp_path / "missing").exists()
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "no-weights" / "config.json").write_text("{}")
    with pytest.raises(VlxError, match="no weights"):
        instantiate(
            make_cfg("model=tiny_paligemma", f"model.checkpoint={tmp_path / 'no-weights'}").model, _partial_=True
        )(quantization=None)


def test_the_factory_never_replaces_a_folder_it_did_not_make(tmp_path):
    from vlx.models.tiny import ensure_tiny_model

    folder = tmp_path / "tiny-models" / "paligemma"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds files that vlx's tiny-model factory did not make"):
        ensure_tiny_model("paligemma", folder)
    assert (folder / "notes.txt").read_text() == "mine"


def test_a_shapes_folder_with_a_broken_manifest_is_left_alone(tmp_path):
    from vlx.tasks.shapes import generate_shapes

    folder = tmp_path / "shapes"
    generate_shapes(folder, {"test": 6})
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="does not hold the shapes data for"):
        generate_shapes(folder, {"test": 6})
    assert (folder / "manifest.json").read_text() == "{not json" and (folder / "esnlive_test.csv").is_file()


def test_a_broken_adapter_record_is_named(tmp_path):
    from vlx.models.hf import ADAPTER_META, trained_prompt

    (tmp_path / ADAPTER_META).write_text("{")
    with pytest.raises(ConfigError, match=rf"{ADAPTER_META}: not valid JSON"):
        trained_prompt(str(tmp_path), "unused")


FINETUNE = [
    "stage=finetune",
    "model=tiny_paligemma",
    "task=shapes",
    "task.prompt='explain en {text}'",
    "task.split=train",
    "task.limit=16",
    "lora=r64",
    "finetune.per_device_batch_size=4",
    "finetune.gradient_accumulation_steps=1",
    "finetune.learning_rate=2e-3",
    "finetune.logging_steps=1",
    "finetune.target=label_and_explanation",
]


class StopAt:
    """A Trainer callback that stops the training as Ctrl-C would, after a given step."""

    def __new__(cls, step: int):
        from transformers import TrainerCallback

        class _Stop(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == step:
                    raise KeyboardInterrupt

        return _Stop()


def train_until(make_cfg, step: int, *args: str, monkeypatch):
    import vlx.stages.finetune as finetune

    original = finetune.StatsTrainer

    class Stopping(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(StopAt(step))

    monkeypatch.setattr(finetune, "StatsTrainer", Stopping)
    try:
        with pytest.raises(Interrupted) as err:
            run_stage(make_cfg(*args))
    finally:
        monkeypatch.setattr(finetune, "StatsTrainer", original)
    return str(err.value)


def test_finetune_resumes_from_the_last_complete_checkpoint(make_cfg, tmp_path, monkeypatch):
    args = [*FINETUNE, "finetune.max_steps=6", "finetune.save_strategy=steps", "finetune.save_steps=2"]
    message = train_until(make_cfg, 5, *args, monkeypatch=monkeypatch)
    assert message == (
        "interrupted at step 5 of 6; the last complete checkpoint is checkpoint-4: run the same command again to "
        "continue from it"
    )
    checkpoints = tmp_path / "run" / "checkpoints"
    (checkpoints / "checkpoint-4" / "optimizer.pt").unlink()  # as if the kill came while it was written

    with pytest.raises(ConfigError, match=r"finetune.learning_rate: 0.002 \(saved\) vs 0.001 \(now\)"):
        run_stage(make_cfg(*args, "finetune.learning_rate=1e-3"))
    with pytest.raises(ConfigError, match=r"finetune.target: 'label_and_explanation' \(saved\) vs 'explanation'"):
        run_stage(make_cfg(*args, "finetune.target=explanation"))

    metrics = run_stage(make_cfg(*args))
    assert metrics["steps"] == 6 and metrics["resumed_from_step"] == 2
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "checkpoint-2",
        "checkpoint-4",
        "checkpoint-6",
        "incomplete-checkpoint-4",
    ]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    logged = [h for h in summary["log_history"] if "loss" in h]
    assert [h["step"] for h in logged] == [1, 2, 3, 4, 5, 6]  # the whole training, not the part after the resume
    assert summary["first_loss"] == logged[0]["loss"]
    assert summary["train_loss"] == pytest.approx(sum(h["loss"] for h in logged) / 6)


def test_a_finished_finetune_run_again_trains_nothing(make_cfg, tmp_path):
    args = [*FINETUNE, "finetune.max_steps=2", "finetune.save_strategy=no"]
    first = run_stage(make_cfg(*args))
    weights = tmp_path / "run" / "adapter" / "adapter_model.safetensors"
    before = weights.stat().st_mtime_ns
    again = run_stage(make_cfg(*args))
    assert weights.stat().st_mtime_ns == before and again["steps"] == first["steps"] == 2
    with pytest.raises(ConfigError, match=r"finetune.max_steps: 2 \(saved\) vs 3 \(now\)"):
        run_stage(make_cfg(*FINETUNE, "finetune.max_steps=3", "finetune.save_strategy=no"))


@pytest.mark.slow
def test_a_merged_model_infers_as_its_adapter_did(make_cfg, tmp_path):
    run_stage(
        make_cfg(
            *FINETUNE,
            "finetune.max_steps=8",
            "finetune.save_strategy=no",
            "finetune.infer_split=test",
            "finetune.infer_limit=4",
            run_dir=tmp_path / "ft",
        )
    )
    adapter = tmp_path / "ft" / "adapter"
    run_stage(make_cfg("stage=merge", "model=tiny_paligemma", f"model.adapter={adapter}", run_dir=tmp_path / "m"))
    merged = tmp_path / "m" / "merged"
    assert json.loads((merged / "vlx_adapter.json").read_text())["prompt_template"] == "explain en {text}"
    common = [
        "model=tiny_paligemma",
        "task=shapes",
        "task.prompt='explain en {text}'",
        "task.limit=12",
        "generation.max_new_tokens=12",
    ]
    run_stage(make_cfg(*common, f"model.adapter={adapter}", run_dir=tmp_path / "with-adapter"))
    run_stage(make_cfg(*common, f"model.checkpoint={merged}", run_dir=tmp_path / "with-merged"))
    run_stage(make_cfg(*common, run_dir=tmp_path / "base"))
    by_adapter = [r["raw"] for r in lines(tmp_path / "with-adapter" / "predictions.jsonl")]
    by_merged = [r["raw"] for r in lines(tmp_path / "with-merged" / "predictions.jsonl")]
    by_base = [r["raw"] for r in lines(tmp_path / "base" / "predictions.jsonl")]
    assert by_merged == by_adapter
    assert by_base != by_adapter  # the fine-tune changed the answers: the comparison means something
    with pytest.raises(ConfigError, match="already holds a merged model"):
        run_stage(make_cfg("stage=merge", "model=tiny_paligemma", f"model.adapter={adapter}", run_dir=tmp_path / "m"))
    metrics = run_stage(
        make_cfg("stage=eval", f"stage.run={tmp_path / 'ft'}", "eval.resamples=0", run_dir=tmp_path / "e")
    )
    assert metrics["n"] >= 1  # a fine-tune run's root: its infer/ is scored


# --- a machine without Java; refused runs leave nothing behind --------------------------------------------------

JAVA_LINE = (
    "there is no `java` on PATH: install a JRE (e.g. `apt-get install default-jre-headless`), or add eval.java=false"
)


def path_without_java(tmp_path: Path) -> str:
    """A PATH that holds this venv's python and nothing else: no `java` (a subprocess, or os.environ, sees it)."""
    folder = tmp_path / "bin-without-java"
    folder.mkdir(exist_ok=True)
    for name in ("python", "python3"):
        if not (folder / name).exists():
            (folder / name).symlink_to(sys.executable)
    return str(folder)


def test_an_infer_run_without_java_is_refused_before_the_model_loads(tmp_path):
    """Its explanations would be scored with Java at the end: said at once, and the run directory is not left."""
    run = tmp_path / "runs" / "run"
    res = run_vlx(
        "model=tiny_llava",
        "task=shapes",
        "task.limit=4",
        "generation.max_new_tokens=4",
        f"hydra.run.dir={run}",
        env=cli_env(PATH=path_without_java(tmp_path)),
    )
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert JAVA_LINE in one_error_line(res)
    assert LOADING not in res.stdout + res.stderr
    assert not (tmp_path / "runs").exists()  # the folders Hydra made for the refused run are gone


def test_scores_without_java_are_named_so_and_equal_javas_where_the_tokenizers_agree(make_cfg, tmp_path, monkeypatch):
    """eval.java=false: no METEOR or SPICE (and so no e-ViL combined score), the protocol named coco_no_java; on
    explanations the Python tokenizer splits as the PTB tokenizer does, BLEU-4, ROUGE-L and CIDEr equal Java's."""
    import shutil as shell

    from test_eval import esnli_rows, write_predictions

    rows = esnli_rows(n=12)
    java_path = shell.which("java")
    monkeypatch.setenv("PATH", path_without_java(tmp_path))
    write_predictions(tmp_path / "a", rows)
    cfg = ("stage=eval", f"stage.run={tmp_path / 'a'}", "task=esnli", "eval.resamples=20")
    with pytest.raises(ConfigError, match=re.escape(JAVA_LINE)):
        run_stage(make_cfg(*cfg, run_dir=tmp_path / "e1"))
    assert not (tmp_path / "a" / "metrics.json").exists()
    run_stage(make_cfg(*cfg, "eval.java=false", run_dir=tmp_path / "e2"))
    no_java = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert no_java["protocol"] == "coco_no_java" and no_java["explanation_scale"] == 1.0
    assert no_java["meteor"] is None and no_java["all_meteor"] is None and no_java["spice"] is None
    assert no_java["evil_avg_all_no_spice"] is None and no_java["evil_global_no_spice"] is None
    assert any(
        "scored without Java (eval.java=false)" in note and "not the official one" in note for note in no_java["notes"]
    )
    if java_path is None:
        pytest.skip("no Java on this machine to compare with")
    monkeypatch.setenv("PATH", str(Path(java_path).parent) + os.pathsep + path_without_java(tmp_path))
    write_predictions(tmp_path / "b", rows)
    run_stage(
        make_cfg(
            "stage=eval", f"stage.run={tmp_path / 'b'}", "task=esnli", "eval.resamples=20", run_dir=tmp_path / "e3"
        )
    )
    with_java = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert with_java["protocol"] == "coco" and with_java["meteor"] is not None
    for key in ("bleu4", "rouge_l", "cider", "all_bleu4", "all_rouge_l", "all_cider", "accuracy"):
        assert no_java[key] == pytest.approx(with_java[key], abs=1e-12), key


# what Stanford's PTBTokenizer (-preserveLines -lowerCase) and pycocoevalcap's punctuation filter made of these
PTB_SAMPLES = [
    (
        "He doesn't (really) like \"it\"; can't you see? A t-shirt costs $3.50, Mr. Smith's U.S. cats' toys... ok!",
        "he does n't -lrb- really -rrb- like it ca n't you see a t-shirt costs $ 3.50 mr. smith 's u.s. cats toys ok",
    ),
    (
        "I'm here, they're there & we've gone -- 50% off [sic] {x} a/b 2:30 e-mail@x.com",
        "i 'm here they 're there & we 've gone 50 % off -lsb- sic -rsb- -lcb- x -rcb- a/b 2:30 e-mail@x.com",
    ),
    ("One cannot be both dressed and nude simultaneously.", "one can not be both dressed and nude simultaneously"),
    ("Yes,The booths are very colorful", "yes the booths are very colorful"),
]


def test_the_python_tokenizer_follows_the_ptb_tokenizer():
    from vlx.metrics.python_tokenizer import tokenize

    assert [tokenize(text) for text, _ in PTB_SAMPLES] == [tokens for _, tokens in PTB_SAMPLES]


@pytest.mark.skipif(shutil.which("java") is None, reason="needs Java for the PTB tokenizer to compare with")
def test_the_python_tokenizer_agrees_with_ptb_on_real_explanations():
    """On e-SNLI-VE's dev explanations it gives the PTB tokenizer's tokens for 14,314 of the 14,339 sentences."""
    import csv

    from conftest import SHARED_ESNLI

    from vlx.metrics.coco import clean_text, ptb_tokenize
    from vlx.metrics.python_tokenizer import tokenize_all

    source = SHARED_ESNLI / "esnlive_dev.csv"
    if not source.is_file():
        pytest.skip(f"{source} is not there")
    with source.open(newline="") as f:
        texts = [clean_text(row["explanation"]) for row in csv.DictReader(f)]
    same = sum(a == b for a, b in zip(ptb_tokenize(texts), tokenize_all(texts), strict=True))
    assert same / len(texts) >= 0.998, f"{same} of {len(texts)}"


def test_a_refused_run_leaves_no_directory_behind(tmp_path):
    """Hydra makes outputs/<date>/<time>/ (its log, .hydra/) before vlx can refuse the run: all of it goes, and
    nothing that was there before is touched."""
    (tmp_path / "mine.txt").write_text("kept")
    res = run_vlx("model=tiny_llava", "task=esnli", f"task.csv_dir={tmp_path / 'absent'}", cwd=tmp_path)
    assert res.returncode == 2 and "esnlive_test.csv not found" in one_error_line(res)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]  # no outputs/<date>/<time>/


def test_a_refused_command_leaves_an_existing_run_as_it_was(tmp_path):
    """A run directory being written by another run: the refused command neither removes it nor leaves its own
    .hydra/config.yaml in place of the run's."""
    from vlx.run.lock import exclusive

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    saved = {name: f"the first run's {name}\n" for name in ("config.yaml", "hydra.yaml", "overrides.yaml")}
    for name, text in saved.items():
        (run / ".hydra" / name).write_text(text)
    (run / "predictions.jsonl").write_text("")
    with exclusive(run):  # held by this process, as a live run holds it
        res = run_vlx(*TINY_RUN, "task.limit=2", f"hydra.run.dir={run}")
    assert res.returncode == 2 and f"{run} is being written by another vlx run" in one_error_line(res)
    assert LOADING not in res.stdout + res.stderr
    assert {name: (run / ".hydra" / name).read_text() for name in saved} == saved
    assert (run / "predictions.jsonl").is_file()


def test_select_correct_reads_its_run_and_writes_into_its_own(make_cfg, tmp_path):
    from vlx.run.lock import exclusive

    run = tmp_path / "clf"
    run.mkdir()
    (run / "predictions.jsonl").write_text(
        json.dumps(
            {"id": "a", "image": "/x/a.png", "text": "h", "gold": "neutral", "pred": "neutral", "refs": ["because"]}
        )
        + "\n"
    )
    with exclusive(run), pytest.raises(ConfigError, match=f"{run} is being written by another vlx run"):
        run_stage(make_cfg("stage=select_correct", f"stage.run={run}", run_dir=tmp_path / "sel"))
    (run / ".vlx.lock").unlink()
    result = run_stage(make_cfg("stage=select_correct", f"stage.run={run}", run_dir=tmp_path / "sel"))
    assert result["csv"] == str(tmp_path / "sel" / "correct.csv") and result["kept"] == 1
    assert sorted(p.name for p in run.iterdir()) == ["predictions.jsonl"]  # read, never written
