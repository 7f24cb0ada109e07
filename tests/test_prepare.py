"""vlx stage=prepare: a task's data checked against its official release (files, row counts, checksums, images),
with what is missing named; nothing downloaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import SHARED_ESNLI
from helpers import esnli_from_shared, meme_items, placeholder_image, run_vlx, write_memes

from vlx.__main__ import run_stage
from vlx.errors import DataError

needs_shared = pytest.mark.skipif(not SHARED_ESNLI.is_dir(), reason="../shared/data/esnlive is not beside the repo")


@needs_shared
def test_the_official_dev_split_with_every_image_passes(make_cfg, tmp_path):
    _, image_dir, _ = esnli_from_shared(SHARED_ESNLI / "esnlive_dev.csv", tmp_path, limit=14339)  # every row's image
    result = run_stage(
        make_cfg(
            "stage=prepare",
            "task=esnli",
            f"task.csv_dir={SHARED_ESNLI}",
            f"task.image_dir={image_dir}",
            "stage.splits=[dev]",
        )
    )
    (dev,) = result["splits"]
    assert result["ok"] and dev["ok"] and dev["problems"] == []
    assert dev["rows"] == dev["expected_rows"] == 14339
    assert dev["images"] == len(list(image_dir.iterdir())) and dev["images_missing"] == dev["images_broken"] == 0
    assert dev["files"][0]["checksum"] == "ok"
    assert json.loads((tmp_path / "run" / "prepare.json").read_text()) == result


@needs_shared
def test_missing_files_images_and_a_changed_file_are_named(make_cfg, tmp_path):
    csv_dir, image_dir, rows = esnli_from_shared(SHARED_ESNLI / "esnlive_test.csv", tmp_path, limit=40)
    names = sorted({r["Flickr30kID"] for r in rows})
    (image_dir / names[0]).unlink()  # one image missing
    (image_dir / names[1]).write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")  # one broken
    shutil.copy(SHARED_ESNLI / "esnlive_dev.csv", csv_dir / "esnlive_dev.csv")
    with (csv_dir / "esnlive_dev.csv").open("a") as f:  # a changed copy: one row more
        f.write("99999,1.jpg#0r0n,1.jpg,A man.,neutral,Nothing says so.\n")
    cfg = make_cfg("stage=prepare", "task=esnli", f"task.csv_dir={csv_dir}", f"task.image_dir={image_dir}")
    with pytest.raises(DataError) as err:
        run_stage(cfg)
    message = str(err.value)
    assert "train: e-SNLI-VE file" in message and "esnlive_train.csv not found" in message
    assert "dev: " in message and "sha256" in message and "is not the release's" in message
    assert "dev: 14340 items where the release has 14339" in message
    assert f"test: 1 of {len(names)} images are missing ({image_dir / names[0]})" in message
    assert f"test: 1 of {len(names)} images do not decode ({image_dir / names[1]}: cannot be decoded" in message
    assert "test: 40 items where the release has 14740" in message
    assert "The official release: the e-ViL CSVs" in message  # where to get it
    report = json.loads((tmp_path / "run" / "prepare.json").read_text())
    assert [s["split"] for s in report["splits"]] == ["train", "dev", "test"] and not report["ok"]
    assert [s["ok"] for s in report["splits"]] == [False, False, False]
    assert report["splits"][2]["images_missing"] == 1 and report["splits"][2]["images_broken"] == 1


def test_a_hateful_memes_folder_is_checked_as_its_yaml_reads_it(make_cfg, tmp_path):
    write_memes(tmp_path, "dev_seen", meme_items(6))
    result = run_stage(
        make_cfg("stage=prepare", "task=meme", f"task.data_dir={tmp_path}", "stage.splits=[dev_seen]", "task.limit=6")
    )
    assert result["ok"] and result["splits"][0]["rows"] == 6 and result["splits"][0]["images"] == 6
    (tmp_path / "img" / "01007.png").unlink()
    placeholder_image(tmp_path / "img" / "01014.png").write_bytes(b"GIF89a no image")
    with pytest.raises(DataError, match=r"dev_seen: 1 of 6 images are missing .*01007\.png"):
        run_stage(make_cfg("stage=prepare", "task=meme", f"task.data_dir={tmp_path}", "stage.splits=[dev_seen]"))


# --- tasks without an official release: what their own files can tell -------------------------------------------

MINE_COLUMNS = (
    "task.columns.id=pair",
    "task.columns.image=picture",
    "task.columns.text=claim",
    "task.columns.label=verdict",
    "task.columns.explanations=[why]",
)


def write_mine(folder: Path, n: int = 6, split: str = "test") -> Path:
    """The README's own-data example: <folder>/<split>.csv (pair,picture,claim,verdict,why) and images/."""
    labels = ("entailment", "contradiction", "neutral")
    rows = ["pair,picture,claim,verdict,why"]
    for i in range(n):
        placeholder_image(folder / "images" / f"{i}.png", colour=(30 * i, 90, 30))
        rows.append(f"p{i},{i}.png,claim number {i},{labels[i % 3]},reason {i}")
    (folder / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_a_table_task_without_a_release_is_checked(make_cfg, tmp_path, caplog):
    data = write_mine(tmp_path / "mine")
    table = ("stage=prepare", "task=table", f"task.source={data}", f"task.image_dir={data / 'images'}", *MINE_COLUMNS)
    with caplog.at_level("INFO", logger="vlx"):
        result = run_stage(make_cfg(*table))
    assert result["ok"] and not result["release_known"] and result["where"] is None
    (test,) = result["splits"]
    assert (test["split"], test["rows"], test["expected_rows"], test["images"]) == ("test", 6, None, 6)
    assert test["files"] == [{"path": str(data / "test.csv"), "present": True, "sha256": None, "checksum": "unknown"}]
    assert "task 'table' has no known official release" in caplog.text
    assert json.loads((tmp_path / "run" / "prepare.json").read_text()) == result

    (data / "images" / "2.png").unlink()  # an image missing, an id repeated, a label outside task.labels
    rows = (data / "test.csv").read_text().splitlines()
    (data / "test.csv").write_text("\n".join([*rows, rows[1].replace(",reason 0", ",reason again")]) + "\n")
    with pytest.raises(DataError) as err:
        run_stage(make_cfg(*table))
    message = str(err.value)
    assert f"test: 1 of 6 images are missing ({data / 'images' / '2.png'})" in message
    csv = data / "test.csv"
    assert f"test: 1 items repeat an id (id 'p0' at {csv}:8 is already used at {csv}:2)" in message
    assert "The official release" not in message

    (data / "test.csv").write_text("\n".join([*rows[:3], "p9,1.png,claim,maybe,why not"]) + "\n")
    with pytest.raises(DataError, match=r"test: .*test\.csv:4: label 'maybe' is not one of entailment, contradiction"):
        run_stage(make_cfg(*table))
    (data / "test.csv").write_text("pair,picture,claim,why\np0,0.png,claim,why\n")  # no label column
    with pytest.raises(DataError, match=r"test: .*test\.csv: no column 'verdict' .*set task\.columns\.label"):
        run_stage(make_cfg(*table))


def test_shapes_is_checked_without_a_release(make_cfg):
    result = run_stage(make_cfg("stage=prepare", "task=shapes", "stage.splits=[dev,test]"))
    assert result["ok"] and not result["release_known"]
    assert [(s["split"], s["rows"], s["images_missing"], s["images_broken"]) for s in result["splits"]] == [
        ("dev", 60, 0, 0),
        ("test", 60, 0, 0),
    ]


def test_a_task_yaml_of_ones_own_through_the_search_path(tmp_path):
    """The README's "Your own data", as an installed vlx runs it: <folder>/task/mine.yaml, hydra.searchpath, from a
    folder outside the checkout; the command ends with the table and exit 0, no traceback."""
    data = write_mine(tmp_path / "mine")
    (tmp_path / "conf" / "task").mkdir(parents=True)
    (tmp_path / "conf" / "task" / "mine.yaml").write_text(
        "defaults:\n  - table\n  - _self_\nname: mine\n"
        f"source: {data}\nimage_dir: {data / 'images'}\n"
        "columns: {id: pair, image: picture, text: claim, label: verdict, explanations: [why]}\n"
    )
    res = run_vlx(
        "stage=prepare",
        "task=mine",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    output = res.stdout + res.stderr
    assert res.returncode == 0 and "Traceback" not in output, output[-3000:]
    assert "task 'mine' has no known official release" in output
    report = json.loads((tmp_path / "run" / "prepare.json").read_text())
    assert report["ok"] and report["splits"][0]["rows"] == 6 and report["splits"][0]["images"] == 6
