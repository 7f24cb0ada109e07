"""task=table: a task from its YAML alone, its data read through `datasets` from CSV, JSON lines, parquet or a
save_to_disk folder; errors name the file, row and column."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import pytest
from conftest import SHARED_ESNLI
from hydra.utils import instantiate
from PIL import Image

from vlx.__main__ import run_stage
from vlx.errors import ConfigError, DataError, user_error

ROWS = [
    {"uid": "a1", "img": "red.png", "hypothesis": "There is a red circle.", "premise": "a picture",
     "gold": "entailment", "why": "The circle is red.", "why2": "Red it is."},
    {"uid": "a2", "img": "blue.png", "hypothesis": "There is a green square.", "premise": "a photo",
     "gold": "contradiction", "why": "The square is blue.", "why2": ""},
    {"uid": "a3", "img": "red.png", "hypothesis": "It is made of wood.", "premise": "a drawing", "gold": "neutral",
     "why": "Cannot tell.", "why2": "Unknown material."},
]  # fmt: skip
FEW_COLUMNS = [
    "task.columns.id=uid",
    "task.columns.image=img",
    "task.columns.label=gold",
    "task.columns.text=null",
    "task.columns.explanations=null",
]
COLUMNS = [
    "task.columns.id=uid",
    "task.columns.image=img",
    "task.columns.text=hypothesis",
    "task.columns.label=gold",
    "task.columns.explanations=[why,why2]",
]


def write_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (220, 30, 30)).save(folder / "red.png")
    Image.new("RGB", (30, 40), (30, 30, 220)).save(folder / "blue.png")


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def task_of(make_cfg, *overrides: str):
    return instantiate(make_cfg("task=table", *overrides).task)


def test_a_csv_table_is_a_task(make_cfg, tmp_path):
    write_images(tmp_path / "data")
    write_csv(tmp_path / "data" / "test.csv", ROWS)
    task = task_of(
        make_cfg,
        f"task.source={tmp_path}/data",
        *COLUMNS,
        "task.prompt='Premise {premise}; does \"{hypothesis}\" hold?'",
    )
    examples = task.load().examples
    assert [e.id for e in examples] == ["a1", "a2", "a3"]
    assert [e.label for e in examples] == ["entailment", "contradiction", "neutral"]
    assert examples[0].explanations == ("The circle is red.", "Red it is.") and examples[1].explanations == (
        "The square is blue.",
    )
    assert examples[1].image == tmp_path / "data" / "blue.png"
    assert examples[0].source == f"{tmp_path}/data/test.csv:2"
    assert task.instruction(examples[2]) == 'Premise a drawing; does "It is made of wood." hold?'
    assert task.parse("Contradiction. The square is blue.") == ("contradiction", "The square is blue.")


def test_json_lines_with_label_values_and_list_explanations(make_cfg, tmp_path):
    write_images(tmp_path / "imgs")
    rows = [
        {"id": 7, "image": "red.png", "question": "Red?", "y": 1, "refs": ["It is red.", "Red."]},
        {"id": 8, "image": "blue.png", "question": "Red?", "y": 0, "refs": []},
    ]
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = task_of(
        make_cfg,
        f"task.source='{tmp_path}/{{split}}.jsonl'",
        f"task.image_dir={tmp_path}/imgs",
        "task.split=dev",
        "task.columns.text=question",
        "task.columns.label=y",
        "task.columns.explanations=refs",
        "task.labels=[not offensive,offensive]",
        "task.label_values={0: not offensive, 1: offensive}",
        "task.positive=offensive",
        "task.aliases={offensive: [hateful]}",
    )
    examples = task.load().examples
    assert [(e.id, e.label, e.explanations) for e in examples] == [
        ("7", "offensive", ("It is red.", "Red.")),
        ("8", "not offensive", ()),
    ]
    assert examples[0].source.endswith("dev.jsonl row 1")
    assert task.parse("This meme is hateful.")[0] == "offensive"  # the task's own alias


def test_parquet_and_save_to_disk_folders(make_cfg, tmp_path):
    import datasets

    write_images(tmp_path)
    table = datasets.Dataset.from_list(ROWS)
    table.to_parquet(str(tmp_path / "test.parquet"))
    datasets.DatasetDict({"validation": table}).save_to_disk(str(tmp_path / "saved"))
    from_parquet = task_of(make_cfg, f"task.source={tmp_path}", *COLUMNS).load().examples
    from_disk = (
        task_of(
            make_cfg,
            f"task.source={tmp_path}/saved",
            f"task.image_dir={tmp_path}",
            "task.split=dev",
            "task.split_names={dev: validation}",
            *COLUMNS,
        )
        .load()
        .examples
    )
    assert [e.id for e in from_parquet] == [e.id for e in from_disk] == ["a1", "a2", "a3"]
    assert from_disk[2].explanations == ("Cannot tell.", "Unknown material.")


def test_errors_name_the_column_the_row_and_the_placeholder(make_cfg, tmp_path):
    write_images(tmp_path)
    write_csv(tmp_path / "test.csv", ROWS)
    source = f"task.source={tmp_path}"
    with pytest.raises(DataError, match=r"no column 'hyp' .*uid, img, hypothesis.*set task.columns.text"):
        task_of(make_cfg, source, *COLUMNS, "task.columns.text=hyp").load()
    with pytest.raises(DataError, match=r"test.csv:3: label 'contradiction' is not one of entailment, neutral"):
        task_of(make_cfg, source, *COLUMNS, "task.labels=[entailment,neutral]").load()
    with pytest.raises(ConfigError, match=r"task.prompt names \{caption\}, which is no column"):
        task_of(make_cfg, source, *COLUMNS, "task.prompt='Describe {caption}'").load()
    with pytest.raises(DataError, match=r"holds no file for the 'train' split .*train.csv"):
        task_of(make_cfg, source, *COLUMNS, "task.split=train").load()
    with pytest.raises(DataError, match=r"not found; set task.source"):
        task_of(make_cfg, f"task.source={tmp_path}/other.csv", *COLUMNS).load()
    with pytest.raises(Exception, match="task.columns.image is not set") as refused:  # (Hydra wraps it)
        task_of(make_cfg, source, *COLUMNS, "task.columns.image=null")
    assert "task.columns.image is not set" in str(user_error(refused.value))  # the command line's one line


def test_a_table_task_runs_through_the_infer_stage(make_cfg, tmp_path):
    write_images(tmp_path / "data")
    write_csv(tmp_path / "data" / "test.csv", ROWS)
    summary = run_stage(
        make_cfg(
            "model=tiny_llava", "task=table", f"task.source={tmp_path}/data", *COLUMNS, "decode=score", "batch_size=2"
        )
    )
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert summary["items"] == 3 and summary["parsed"] == 1.0
    assert [r["id"] for r in rows] == ["a1", "a2", "a3"] and [r["gold"] for r in rows] == [r["gold"] for r in ROWS]
    assert all(r["pred"] in ("entailment", "contradiction", "neutral") for r in rows)
    assert rows[0]["refs"] == ["The circle is red.", "Red it is."]


def test_images_stored_in_the_table_are_written_out_once(make_cfg, tmp_path):
    """A hub-style table whose image column holds the images: each is written as a file into task.image_cache (its
    bytes as stored), and a second read keeps the files."""
    import datasets

    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    Image.new("RGB", (40, 30), (220, 30, 30)).save(red)
    Image.new("RGB", (30, 40), (30, 30, 220)).save(blue)
    table = datasets.Dataset.from_dict(
        {"qid": ["q/1", "q#2"], "picture": [str(red), str(blue)], "question": ["Red?"] * 2, "answer": ["yes", "no"]},
        features=datasets.Features(
            {
                "qid": datasets.Value("string"),
                "picture": datasets.Image(),
                "question": datasets.Value("string"),
                "answer": datasets.Value("string"),
            }
        ),
    )
    datasets.DatasetDict({"test": table}).save_to_disk(str(tmp_path / "hub_like"))
    overrides = [
        f"task.source={tmp_path}/hub_like",
        f"task.image_cache={tmp_path}/cache",
        "task.columns.id=qid",
        "task.columns.image=picture",
        "task.columns.text=question",
        "task.columns.label=answer",
        "task.columns.explanations=null",
        "task.labels=[yes,no]",
    ]
    examples = task_of(make_cfg, *overrides).load().examples
    assert [e.label for e in examples] == ["yes", "no"]
    assert examples[0].image.read_bytes() == red.read_bytes() and examples[1].image.read_bytes() == blue.read_bytes()
    assert examples[0].image.parent == tmp_path / "cache" / "table-test"
    written = examples[0].image.stat().st_mtime_ns
    again = task_of(make_cfg, *overrides).load().examples
    assert again[0].image == examples[0].image and again[0].image.stat().st_mtime_ns == written
    with pytest.raises(DataError, match="set task.image_cache"):
        task_of(make_cfg, *overrides, "task.image_cache=null").load()


def test_a_task_yaml_in_a_folder_of_ones_own(make_cfg, tmp_path):
    """The README's way with an installed vlx: <folder>/task/<name>.yaml, found through hydra.searchpath.

    vlx's own conf/ comes first on Hydra's search path, so the file is named as no file there can be (a user who
    follows the README in the checkout adds conf/task/mine.yaml, which would win over a test's mine.yaml)."""
    write_images(tmp_path / "data")
    write_csv(tmp_path / "data" / "test.csv", ROWS)
    option = f"own_{uuid.uuid4().hex}"
    (tmp_path / "conf" / "task").mkdir(parents=True)
    (tmp_path / "conf" / "task" / f"{option}.yaml").write_text(f"""\
_target_: vlx.tasks.TableTask
name: mine
source: {tmp_path}/data
columns: {{id: uid, image: img, text: hypothesis, label: gold, explanations: [why, why2]}}
labels: [entailment, contradiction, neutral]
prompt: "Premise {{premise}}: does '{{hypothesis}}' follow?"
""")
    cfg = make_cfg(f"hydra.searchpath=[file://{tmp_path}/conf]", f"task={option}")
    task = instantiate(cfg.task)
    examples = task.load().examples
    assert task.name == "mine" and [e.label for e in examples] == [r["gold"] for r in ROWS]
    assert task.instruction(examples[0]) == "Premise a picture: does 'There is a red circle.' follow?"


@pytest.mark.skipif(not SHARED_ESNLI.is_dir(), reason="../shared/data/esnlive is not beside the repo")
def test_the_esnli_test_csv_as_a_table_task_gives_the_readers_items():
    """The whole official test split (14,740 rows) through datasets equals e-SNLI-VE's own reader, item for item."""
    from vlx.tasks import build_task

    reader = build_task("esnli", csv_dir=SHARED_ESNLI, image_dir=SHARED_ESNLI, split="test")
    table = build_task(
        "table",
        source=str(SHARED_ESNLI / "esnlive_test.csv"),
        image_dir=str(SHARED_ESNLI),
        labels=list(reader.labels),
        columns={
            "id": "pairID",
            "image": "Flickr30kID",
            "text": "hypothesis",
            "label": "gold_label",
            "explanations": ["explanation"],
        },
    )
    a, b = reader.examples(), table.examples()
    assert len(a) == 14740
    assert [(e.id, e.image, e.text, e.label, e.explanations, e.source) for e in a] == [
        (e.id, e.image, e.text, e.label, e.explanations, e.source) for e in b
    ]


def test_a_table_changed_with_its_time_kept_is_read_anew(make_cfg, tmp_path):
    """The Arrow cache is keyed by the file's content: labels corrected in place with the modification time put back
    (cp -p, rsync -t, tar) are read as they now are, not from the old cache."""
    write_images(tmp_path)
    path = tmp_path / "test.csv"
    write_csv(path, ROWS)
    before = path.stat()
    assert [e.label for e in task_of(make_cfg, f"task.source={tmp_path}", *COLUMNS).load().examples] == [
        "entailment",
        "contradiction",
        "neutral",
    ]
    fixed = [dict(ROWS[0], gold="neutral"), ROWS[1], dict(ROWS[2], gold="entailment")]  # same size, other labels
    write_csv(path, fixed)
    import os

    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_size == before.st_size
    examples = task_of(make_cfg, f"task.source={tmp_path}", *COLUMNS).load().examples
    assert [e.label for e in examples] == ["neutral", "contradiction", "entailment"]


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_id_is_refused_naming_the_row(make_cfg, tmp_path, value):
    write_images(tmp_path)
    write_csv(tmp_path / "test.csv", [ROWS[0], dict(ROWS[1], uid=value), ROWS[2]])
    with pytest.raises(DataError, match=r"test.csv:3: the id \(column 'uid'\) is empty; give every row an id"):
        task_of(make_cfg, f"task.source={tmp_path}", *COLUMNS).load()


def test_an_empty_id_in_json_lines_is_refused(make_cfg, tmp_path):
    write_images(tmp_path)
    rows = [{"uid": "a1", "img": "red.png", "gold": "neutral"}, {"uid": None, "img": "red.png", "gold": "neutral"}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"test.jsonl row 2: the id \(column 'uid'\) is empty"):
        task_of(make_cfg, f"task.source={tmp_path}", *FEW_COLUMNS).load()


BROKEN_TABLES = [  # (file name, its bytes, the one line that names what is wrong)
    ("test.csv", b"", r"test.csv is empty; write a header line"),
    ("test.jsonl", b"\n", r"test.jsonl is empty; write its items"),
    ("test.csv", b"uid,img,gold\n", r"test.csv has a header line but no rows; add the split's items"),
    ("test.csv", b"uid,img,gold\na1,red.png,neutral\na2,red.png,neutral,extra\n",
     r"test.csv:3: the row has 4 fields, more than the header's 3; quote a field that holds a ','"),
    # an unquoted comma in the first row: pandas would take the first column for an index and the label would shift
    ("test.csv", b"uid,img,gold\na1,red.png,neutral,extra\na2,red.png,neutral\n",
     r"test.csv:2: the row has 4 fields, more than the header's 3; quote a field that holds a ','"),
    ("test.csv", b"uid,img,gold\na1,red.png\na2,red.png,neutral\n",
     r"test.csv:2: the row has 2 fields, fewer than the header's 3; add the missing fields"),
    ("test.csv", b"uid,img,gold\na1,red.png,neutral\na2,red.png\n",
     r"test.csv:3: the row has 2 fields, fewer than the header's 3; add the missing fields"),
    ("test.tsv", b"uid\timg\tgold\na1\tred.png\tneutral\textra\n",
     r"test.tsv:2: the row has 4 fields, more than the header's 3; quote a field that holds a '\\t'"),
    ("test.csv", b"uid,img,gold\na1,red.png,neutral\na2,r\xe9d.png,neutral\n",
     r"test.csv:3: byte 0xe9 is not UTF-8 text; save the file as UTF-8"),
    ("test.jsonl", b'{"uid": "a1", "img": "red.png", "gold": "neutral"}\n{"uid": "a2", \n',
     r"test.jsonl:2: not a JSON object"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "content", "message"), BROKEN_TABLES)
def test_a_broken_table_file_is_one_line_naming_file_and_line(make_cfg, tmp_path, name, content, message):
    write_images(tmp_path)
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message) as refused:
        task_of(make_cfg, f"task.source={tmp_path}", *FEW_COLUMNS).load()
    assert "\n" not in str(refused.value) and str(tmp_path) in str(refused.value)


def test_a_source_with_other_placeholders_or_a_mistyped_folder_is_one_line(make_cfg, tmp_path, monkeypatch):
    write_images(tmp_path)
    write_csv(tmp_path / "test.csv", ROWS)
    with pytest.raises(Exception, match=r"names \{lang\}: only \{split\} is filled in") as refused:
        task_of(make_cfg, f"task.source='{tmp_path}/{{split}}.{{lang}}.csv'", *COLUMNS).load()
    assert "only {split} is filled in" in str(user_error(refused.value))
    monkeypatch.chdir(tmp_path)  # "data/mine" is no folder here: it looks like a hub id, and the hub is offline
    with pytest.raises(DataError, match=r"task.source='data/mine': no such path here .*check its id and the network"):
        task_of(make_cfg, "task.source=data/mine", *COLUMNS).load()
