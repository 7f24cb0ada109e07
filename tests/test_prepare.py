"""vlx stage=prepare: a task's data checked against its official release (files, row counts, checksums, images),
with what is missing named; nothing downloaded."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import SHARED_ESNLI
from helpers import esnli_from_shared, meme_items, placeholder_image, write_memes

from vlx.__main__ import run_stage
from vlx.errors import DataError

needs_shared = pytest.mark.skipif(not SHARED_ESNLI.is_dir(), reason="../shared/data/esnlive is not beside the repo")


@needs_shared
def test_the_official_dev_split_with_every_image_passes(make_cfg, tmp_path):
    _, image_dir, _ = esnli_from_shared(SHARED_ESNLI / "esnlive_dev.csv", tmp_path, limit=14339)  # every row's image
    result = run_stage(make_cfg("stage=prepare", "task=esnli", f"task.csv_dir={SHARED_ESNLI}",
                                f"task.image_dir={image_dir}", "stage.splits=[dev]"))  # fmt: skip
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


def test_a_table_task_is_checked_as_its_yaml_reads_it(make_cfg, tmp_path):
    write_memes(tmp_path, "dev_seen", meme_items(6))
    result = run_stage(make_cfg("stage=prepare", "task=meme", f"task.data_dir={tmp_path}", "stage.splits=[dev_seen]",
                                "task.limit=6"))  # fmt: skip
    assert result["ok"] and result["splits"][0]["rows"] == 6 and result["splits"][0]["images"] == 6
    (tmp_path / "img" / "01007.png").unlink()
    placeholder_image(tmp_path / "img" / "01014.png").write_bytes(b"GIF89a no image")
    with pytest.raises(DataError, match=r"dev_seen: 1 of 6 images are missing .*01007\.png"):
        run_stage(make_cfg("stage=prepare", "task=meme", f"task.data_dir={tmp_path}", "stage.splits=[dev_seen]"))
