"""Tasks read the official files exactly, and bad input is a clear error naming the file and row."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SHARED_ESNLI
from helpers import esnli_from_shared, meme_items, placeholder_image, write_esnli_csv, write_memes

from vlx.errors import ConfigError, DataError
from vlx.tasks import Task, build_task, generate_shapes

needs_shared = pytest.mark.skipif(not SHARED_ESNLI.is_dir(), reason="../shared/data/esnlive is not beside the repo")


def esnli(csv_dir: Path, image_dir: Path, **kw) -> Task:
    return build_task("esnli", csv_dir=csv_dir, image_dir=image_dir, prompt="Is '{hypothesis}' true?", **kw)


@needs_shared
def test_esnli_reads_the_real_dev_csv(tmp_path):
    csv_dir, image_dir, rows = esnli_from_shared(SHARED_ESNLI / "esnlive_dev.csv", tmp_path, limit=30)
    split = esnli(csv_dir, image_dir, split="dev", limit=30).load()
    assert [ex.id for ex in split.examples] == [r["pairID"] for r in rows]
    first = split.examples[0]
    assert first.id == "4465359505.jpg#2r1c"
    assert first.image == image_dir / "4465359505.jpg"
    assert first.text == "The old man is chopping down a tree in his yard."
    assert first.label == "contradiction"
    assert first.explanations == ("Hair and tree are two different things.",)
    assert first.source.endswith("esnlive_dev.csv:2")
    assert {ex.label for ex in split.examples} <= {"entailment", "contradiction", "neutral"}
    assert split.skipped == []


@needs_shared
def test_esnli_prompt_is_the_seed_prompt_verbatim(make_cfg, tmp_path):
    from hydra.utils import instantiate

    cfg = make_cfg("task=esnli", f"task.csv_dir={SHARED_ESNLI}", f"task.image_dir={tmp_path}")
    task = instantiate(cfg.task)
    csv_dir, image_dir, _ = esnli_from_shared(SHARED_ESNLI / "esnlive_dev.csv", tmp_path, limit=1)
    task.image_dir, task.split, task.limit = image_dir, "dev", 1
    ex = task.load().examples[0]
    assert task.instruction(ex) == (
        "Answer with 'entailment', 'contradiction' or 'neutral' if the hypothesis 'The old man is chopping down a "
        "tree in his yard.' follows the image, contradicts it, or is neutral to it. Also give a 1-line explanation "
        "for your answer."
    )


def test_meme_prompt_is_the_seed_prompt_verbatim(make_cfg):
    cfg = make_cfg("task=meme")
    assert cfg.task.prompt == (
        "Is this image offensive? If it is offensive, give a single line explanation. Otherwise, simply state that "
        "it is 'not offensive'."
    )


def test_memes_read_ids_from_img_and_labels_by_name(tmp_path):
    write_memes(tmp_path, "dev_seen", meme_items(4))
    split = build_task("meme", data_dir=tmp_path, split="dev_seen").load()
    assert [ex.id for ex in split.examples] == ["01000", "01007", "01014", "01021"]
    assert [ex.label for ex in split.examples] == ["not offensive", "offensive", "not offensive", "offensive"]
    assert split.examples[1].text == "meme caption number 1"
    assert split.examples[1].image == tmp_path / "img" / "01007.png"
    assert split.examples[0].explanations == ()


def test_memes_without_labels_have_no_gold(tmp_path):
    items = [{k: v for k, v in item.items() if k != "label"} for item in meme_items(2)]
    write_memes(tmp_path, "test_unseen", items)
    split = build_task("meme", data_dir=tmp_path, split="test_unseen").load()
    assert [ex.label for ex in split.examples] == [None, None]


def test_limit_takes_the_first_items(tmp_path):
    write_memes(tmp_path, "train", meme_items(10))
    split = build_task("meme", data_dir=tmp_path, split="train", limit=3).load()
    assert [ex.id for ex in split.examples] == ["01000", "01007", "01014"]


def test_shapes_is_deterministic_balanced_and_in_esnli_format(tmp_path):
    a = generate_shapes(tmp_path / "a", {"train": 30, "test": 9}, image_size=32, seed=3)
    b = generate_shapes(tmp_path / "b", {"train": 30, "test": 9}, image_size=32, seed=3)
    c = generate_shapes(tmp_path / "c", {"train": 30, "test": 9}, image_size=32, seed=4)
    text = (a / "esnlive_train.csv").read_text()
    assert text.splitlines()[0] == ",pairID,Flickr30kID,hypothesis,gold_label,explanation"
    assert text == (b / "esnlive_train.csv").read_text()
    assert (a / "images" / "train-00004.png").read_bytes() == (b / "images" / "train-00004.png").read_bytes()
    assert text != (c / "esnlive_train.csv").read_text()
    task = build_task(
        "shapes", sizes={"train": 30, "test": 9}, image_size=32, seed=3, csv_dir=a, image_dir=a / "images"
    )
    task.split = "train"
    examples = task.load().examples
    assert len(examples) == 30
    assert [ex.label for ex in examples].count("neutral") == 10
    for ex in examples:  # explanations follow the label's template
        if ex.label == "entailment":
            assert ex.explanations[0].startswith("The picture shows a ") and ", not a" not in ex.explanations[0]
        elif ex.label == "contradiction":
            assert ", not a " in ex.explanations[0]
        else:
            assert ex.explanations[0].startswith("You cannot tell from the picture whether")


def test_shapes_of_two_settings_keep_each_others_files(tmp_path):
    small = build_task("shapes", sizes={"test": 3}, cache_dir=tmp_path, split="test").load().examples
    large = build_task("shapes", sizes={"test": 6}, cache_dir=tmp_path, split="test").load().examples
    assert len(small) == 3 and len(large) == 6
    assert small[0].image.parent != large[0].image.parent  # a folder per setting
    assert all(ex.image.is_file() for ex in small)  # the first setting's images (which its runs point to) remain
    assert [ex.text for ex in large[:3]] == [ex.text for ex in small]  # a split's items depend on its own size only
    # a folder given by hand that holds other data is never overwritten
    mtime = (small[0].image.parent.parent / "esnlive_test.csv").stat().st_mtime_ns
    with pytest.raises(DataError, match="does not hold the shapes data .* vlx does not overwrite it"):
        generate_shapes(small[0].image.parent.parent, {"test": 6})
    assert (small[0].image.parent.parent / "esnlive_test.csv").stat().st_mtime_ns == mtime


# --- bad input -------------------------------------------------------------------------------------------------


def test_missing_csv_folder_names_it(tmp_path):
    with pytest.raises(DataError, match=r"esnlive_test\.csv not found \(folder .*nowhere does not exist\)"):
        esnli(tmp_path / "nowhere", tmp_path).load()


def test_missing_column_names_file_and_column(tmp_path):
    write_esnli_csv(
        tmp_path / "esnlive_test.csv",
        [["0", "p1", "a.jpg", "h", "neutral"]],
        header=["", "pairID", "Flickr30kID", "hypothesis", "gold_label"],
    )
    with pytest.raises(DataError, match=r"esnlive_test\.csv: missing column\(s\) explanation"):
        esnli(tmp_path, tmp_path).load()


def test_label_outside_the_task_names_row(tmp_path):
    placeholder_image(tmp_path / "a.jpg")
    rows = [["0", "p1", "a.jpg", "h one", "neutral", "e"], ["1", "p2", "a.jpg", "h two", "maybe", "e"]]
    write_esnli_csv(tmp_path / "esnlive_test.csv", rows)
    with pytest.raises(DataError, match=r"esnlive_test\.csv:3: gold_label 'maybe' is not one of"):
        esnli(tmp_path, tmp_path).load()


def test_duplicate_ids_are_an_error(tmp_path):
    placeholder_image(tmp_path / "a.jpg")
    rows = [["0", "p1", "a.jpg", "h one", "neutral", "e"], ["1", "p1", "a.jpg", "h two", "neutral", "e"]]
    write_esnli_csv(tmp_path / "esnlive_test.csv", rows)
    with pytest.raises(DataError, match=r"esnlive_test\.csv:3: id 'p1' already used at .*esnlive_test\.csv:2"):
        esnli(tmp_path, tmp_path).load()


def test_empty_split_is_an_error(tmp_path):
    write_esnli_csv(tmp_path / "esnlive_test.csv", [])
    with pytest.raises(DataError, match=r"esnlive_test\.csv has no rows"):
        esnli(tmp_path, tmp_path).load()


def test_missing_image_fails_naming_path_and_row(tmp_path):
    placeholder_image(tmp_path / "a.jpg")
    rows = [["0", "p1", "a.jpg", "h one", "neutral", "e"], ["1", "p2", "gone.jpg", "h two", "neutral", "e"]]
    write_esnli_csv(tmp_path / "esnlive_test.csv", rows)
    with pytest.raises(DataError, match=r"esnlive_test\.csv:3: image .*gone\.jpg: missing\..*on_bad_image=skip"):
        esnli(tmp_path, tmp_path).load()


def test_bad_images_are_skipped_and_listed(tmp_path):
    placeholder_image(tmp_path / "a.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    rows = [
        ["0", "p1", "a.jpg", "h one", "neutral", "e"],
        ["1", "p2", "gone.jpg", "h two", "neutral", "e"],
        ["2", "p3", "broken.jpg", "h three", "entailment", "e"],
    ]
    write_esnli_csv(tmp_path / "esnlive_test.csv", rows)
    split = esnli(tmp_path, tmp_path, on_bad_image="skip").load()
    assert [ex.id for ex in split.examples] == ["p1"]
    assert [(s["id"], s["reason"].split(" ")[0]) for s in split.skipped] == [("p2", "missing"), ("p3", "cannot")]


def test_undecodable_image_fails(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image at all")
    write_esnli_csv(tmp_path / "esnlive_test.csv", [["0", "p1", "broken.jpg", "h", "neutral", "e"]])
    with pytest.raises(DataError, match=r"esnlive_test\.csv:2: image .*broken\.jpg: cannot be decoded \("):
        esnli(tmp_path, tmp_path).load()


def test_malformed_jsonl_line_is_named(tmp_path):
    path = write_memes(tmp_path, "dev_seen", meme_items(2))
    with path.open("a") as f:
        f.write('{"id": 5, "img": "img/00005.png", "text": \n')
    with pytest.raises(DataError, match=r"dev_seen\.jsonl:3: not valid JSON"):
        build_task("meme", data_dir=tmp_path, split="dev_seen").load()


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"id": 1, "img": "img/00001.png", "label": 2, "text": "t"}, r"dev_seen\.jsonl:1: label 2 is not 0 or 1"),
        ({"id": 1, "img": "img/00001.png", "label": 1}, r"dev_seen\.jsonl:1: missing or empty 'text'"),
        ({"id": 1, "label": 1, "text": "t"}, r"dev_seen\.jsonl:1: missing or empty 'img'"),
    ],
)
def test_bad_meme_lines_are_named(tmp_path, item, message):
    write_memes(tmp_path, "dev_seen", [item], make_images=False)
    with pytest.raises(DataError, match=message):
        build_task("meme", data_dir=tmp_path, split="dev_seen").load()


def test_missing_meme_split_lists_the_splits(tmp_path):
    with pytest.raises(DataError, match=r"dev_seen\.jsonl not found .*dev_unseen, test_seen"):
        build_task("meme", data_dir=tmp_path, split="dev_seen").load()


def test_bad_policy_and_limit_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="on_bad_image='ignore'"):
        esnli(tmp_path, tmp_path, on_bad_image="ignore")
    with pytest.raises(ConfigError, match="task.limit=0"):
        esnli(tmp_path, tmp_path, limit=0)
