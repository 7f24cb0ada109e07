"""The benchmarks beyond e-SNLI-VE and Hateful Memes, each one YAML of conf/task read from small files in the exact
layout and format of its official release: A-OKVQA, ScienceQA's image questions, HatReD. Multiple-choice items are
scored over their own options."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from vlx.__main__ import run_stage
from vlx.errors import DataError
from vlx.tasks import build_task


def image(path: Path, colour: tuple[int, int, int] = (200, 60, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 36), colour).save(path)


# --- A-OKVQA: aokvqa_v1p0_<split>.json, a JSON list; images are COCO 2017's <split>2017/<12-digit id>.jpg ---------

AOKVQA = [
    {"split": "val", "image_id": 461751, "question_id": "22jbM6gDxdaMaunuzgrsBB",
     "question": "What is in the motorcyclist's mouth?",
     "choices": ["toothpick", "food", "popsicle stick", "cigarette"],
     "correct_choice_idx": 3, "direct_answers": ["cigarette"] * 10, "difficult_direct_answer": False,
     "rationales": ["He's smoking while riding.", "The motorcyclist has a lit cigarette in his mouth.",
                    "There is smoke coming from his mouth."]},
    {"split": "val", "image_id": 8, "question_id": "2Xb3bDU5NF7Yw9C3XbKp9E",
     "question": "Which animal is shown?", "choices": ["cat", "dog", "horse", "cow"], "correct_choice_idx": 1,
     "direct_answers": ["dog"] * 10, "difficult_direct_answer": False, "rationales": ["It barks.", "A leash.", "Fur."]},
]  # fmt: skip


def write_aokvqa(root: Path) -> tuple[Path, Path]:
    data, coco = root / "aokvqa", root / "coco"
    data.mkdir(parents=True)
    (data / "aokvqa_v1p0_val.json").write_text(json.dumps(AOKVQA))
    for item in AOKVQA:
        image(coco / "val2017" / f"{item['image_id']:012d}.jpg")
    return data, coco


def test_aokvqa_reads_the_official_json_and_coco_paths(tmp_path):
    data, coco = write_aokvqa(tmp_path)
    task = build_task("aokvqa", source=f"{data}/aokvqa_v1p0_{{split}}.json", image_dir=coco, split="dev")
    examples = task.load().examples
    assert [e.id for e in examples] == ["22jbM6gDxdaMaunuzgrsBB", "2Xb3bDU5NF7Yw9C3XbKp9E"]
    assert examples[0].image == coco / "val2017" / "000000461751.jpg"
    assert [e.label for e in examples] == ["D", "B"] and examples[0].options == ("A", "B", "C", "D")
    assert examples[0].explanations == tuple(AOKVQA[0]["rationales"])
    assert task.instruction(examples[0]) == (
        "What is in the motorcyclist's mouth?\nA. toothpick\nB. food\nC. popsicle stick\nD. cigarette\n"
        "Answer with the option's letter, then give a 1-line explanation for your answer."
    )
    assert task.demo_answer(examples[0]) == "D. He's smoking while riding."
    assert task.parse("D. He is smoking.", examples[0]) == ("D", "He is smoking.")
    # the test split is released without answers or rationales
    hidden = [
        {k: v for k, v in item.items() if k not in ("correct_choice_idx", "direct_answers", "rationales")}
        | {"split": "test"}
        for item in AOKVQA
    ]
    (data / "aokvqa_v1p0_test.json").write_text(json.dumps(hidden))
    for item in hidden:
        image(coco / "test2017" / f"{item['image_id']:012d}.jpg")
    test = build_task("aokvqa", source=f"{data}/aokvqa_v1p0_{{split}}.json", image_dir=coco, split="test")
    unlabelled = [(e.label, e.explanations, e.options) for e in test.load().examples]
    assert unlabelled == [(None, (), ("A", "B", "C", "D"))] * 2
    with pytest.raises(DataError, match=r"no column 'correct_choice_idx'.*set task.columns.label"):
        build_task("aokvqa", source=str(data / "aokvqa_v1p0_test.json"), image_dir=coco, split="dev").load()


# --- ScienceQA: problems.json keyed by id (every split), images/<split>/<id>/image.png ------------------------------


def problem(split: str, choices: list[str], answer: int, with_image: bool = True) -> dict:
    return {
        "question": f"Which of these is {choices[answer]}?",
        "choices": choices,
        "answer": answer,
        "hint": "Look at the picture.",
        "image": "image.png" if with_image else None,
        "task": "closed choice",
        "grade": "grade4",
        "subject": "natural science",
        "topic": "science-and-engineering-practices",
        "category": "Designing experiments",
        "skill": "Identify control and experimental groups",
        "lecture": "Experiments have variables.",
        "solution": f"The answer is {choices[answer]}.",
        "split": split,
    }


SCIENCEQA = {
    "1": problem("train", ["yes", "no"], 0),
    "5": problem("test", ["a magnet", "a rock", "a leaf"], 2),
    "6": problem("test", ["true", "false"], 1, with_image=False),  # a text-only question: left out
    "9": problem("test", ["north", "south"], 0),
    "12": problem("val", ["up", "down", "left", "right", "still"], 4),
}


def write_scienceqa(root: Path) -> Path:
    folder = root / "scienceqa"
    folder.mkdir(parents=True)
    (folder / "problems.json").write_text(json.dumps(SCIENCEQA))
    splits = {s: [pid for pid, p in SCIENCEQA.items() if p["split"] == s] for s in ("train", "val", "test")}
    (folder / "pid_splits.json").write_text(json.dumps(splits))
    for pid, p in SCIENCEQA.items():
        if p["image"]:
            image(folder / "images" / p["split"] / pid / "image.png", colour=(20 * int(pid), 90, 140))
    return folder


def test_scienceqa_keeps_one_splits_image_questions(tmp_path, caplog):
    folder = write_scienceqa(tmp_path)
    task = build_task("scienceqa", source=folder / "problems.json", image_dir=folder / "images", split="test")
    with caplog.at_level("INFO", logger="vlx.tasks.table"):
        examples = task.load().examples
    assert [e.id for e in examples] == ["5", "9"]
    assert "left out 1 of 3 rows without image" in caplog.text  # counted, not silently dropped
    assert examples[0].image == folder / "images" / "test" / "5" / "image.png"
    assert [e.label for e in examples] == ["C", "A"]
    assert [e.options for e in examples] == [("A", "B", "C"), ("A", "B")]
    assert examples[0].explanations == ("The answer is a leaf.",)
    assert task.instruction(examples[0]).startswith(
        "Question: Which of these is a leaf?\nContext: Look at the picture.\n"
        "Options: (A) a magnet (B) a rock (C) a leaf\n"
    )
    dev = build_task("scienceqa", source=folder / "problems.json", image_dir=folder / "images", split="dev")
    assert [(e.id, e.label, len(e.options)) for e in dev.load().examples] == [("12", "E", 5)]


def test_an_item_with_more_options_than_labels_is_named(tmp_path):
    folder = write_scienceqa(tmp_path)
    task = build_task(
        "scienceqa",
        source=folder / "problems.json",
        image_dir=folder / "images",
        split="dev",
        labels=["A", "B", "C"],
        label_values={0: "A", 1: "B", 2: "C"},
    )
    with pytest.raises(DataError, match=r"problems\.json row 5: 5 options, but task.labels names only 3"):
        task.load()


def test_multiple_choice_scores_each_item_over_its_own_options(make_cfg, tmp_path):
    """decode=score: an item's probabilities cover its own letters only and sum to one, and equal scoring just
    those letters' answers after its prompt (the softmax over a subset)."""
    from hydra.utils import instantiate

    from vlx.engine.batches import build_inputs

    folder = write_scienceqa(tmp_path)
    overrides = (
        "model=tiny_llava",
        "task=scienceqa",
        f"task.source={folder}/problems.json",
        f"task.image_dir={folder}/images",
        "decode=score",
        "batch_size=2",
    )
    summary = run_stage(make_cfg(*overrides))
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert summary["items"] == 2 and [r["gold"] for r in rows] == ["C", "A"]
    assert [sorted(r["scores"]) for r in rows] == [["A", "B", "C"], ["A", "B"]]
    assert all(math.isclose(sum(r["scores"].values()), 1.0, rel_tol=1e-6) for r in rows)
    assert all(r["pred"] == max(r["scores"], key=r["scores"].get) for r in rows)

    cfg = make_cfg(*overrides)
    task, model = instantiate(cfg.task), instantiate(cfg.model, _partial_=True)(quantization=None)
    for row, example in zip(rows, task.load().examples, strict=True):
        prompts, images = build_inputs(model, task, [example], [[]], None)
        alone = model.score(prompts, images, [task.label_text(o) for o in example.options])[0]
        for option in example.options:
            assert math.isclose(row["scores"][option], alone[task.label_text(option)], rel_tol=1e-4, abs_tol=1e-6)


# --- HatReD: fhm_<split>_reasonings.jsonl beside the Hateful Memes images ------------------------------------------

HATRED = [
    {"id": 1456, "img": "01456.png", "target": ["Muslims"],
     "reasonings": ["The meme implies that muslims are violent."]},
    {"id": 23058, "img": "23058.png", "target": ["Black people"],
     "reasonings": ["The meme compares black people to animals.", "It dehumanises black people."]},
]  # fmt: skip


def test_hatred_is_a_task_of_explanations(make_cfg, tmp_path):
    annotations, memes = tmp_path / "hatred", tmp_path / "hateful_memes" / "img"
    annotations.mkdir()
    (annotations / "fhm_test_reasonings.jsonl").write_text("".join(json.dumps(i) + "\n" for i in HATRED))
    for item in HATRED:
        image(memes / item["img"])
    task = build_task("hatred", source=f"{annotations}/fhm_{{split}}_reasonings.jsonl", image_dir=memes)
    examples = task.load().examples
    assert [e.id for e in examples] == ["1456", "23058"] and [e.label for e in examples] == [None, None]
    assert examples[1].explanations == tuple(HATRED[1]["reasonings"])
    assert examples[0].image == memes / "01456.png"
    assert task.demo_answer(examples[1]) == "The meme compares black people to animals."  # no label to state

    summary = run_stage(
        make_cfg(
            "model=tiny_paligemma",
            "task=hatred",
            f"task.source='{annotations}/fhm_{{split}}_reasonings.jsonl'",
            f"task.image_dir={memes}",
            "generation.max_new_tokens=8",
            "eval_after_infer=true",
            "eval.resamples=0",
            "eval.spice=false",
        )
    )
    assert summary["items"] == 2
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n_with_references"] == 2 and metrics["n_explained_all"] == 2  # scored against its references
    assert metrics["all_bleu4"] is not None and metrics["bleu4"] is None  # no label: none counts as correct


# --- VQA-X: vqaX_<split>.json keyed by question id; COCO 2014 images, val and test on val2014 ---------------------


def vqa_answers(*answers: str) -> list[dict]:
    return [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)]


VQAX = {
    "262284001": {"question": "What color is the sign?", "answers": vqa_answers(*["red"] * 7, *["orange"] * 3),
                  "image_id": "262284", "image_name": "COCO_val2014_000000262284.jpg",
                  "explanation": ["the stop sign is painted red", "it is a stop sign", "stop signs are red"]},
    "393225000": {"question": "How many dogs are there?", "answers": vqa_answers(*["2"] * 6, *["two"] * 4),
                  "image_id": "393225", "image_name": "COCO_val2014_000000393225.jpg",
                  "explanation": ["there are two dogs lying on the bed"]},
    "458752003": {"question": "Is the man happy?", "answers": vqa_answers(*["yes"] * 9, "no"),
                  "image_id": "458752", "image_name": "COCO_val2014_000000458752.jpg",
                  "explanation": ["he is smiling widely", "the man smiles"]},
}  # fmt: skip


def write_vqax(root: Path) -> tuple[Path, Path]:
    data, val2014 = root / "vqax", root / "coco" / "val2014"
    data.mkdir(parents=True)
    (data / "vqaX_test.json").write_text(json.dumps(VQAX))
    for item in VQAX.values():
        image(val2014 / item["image_name"])
    return data, root / "coco"


def test_vqax_reads_open_questions_with_every_answer_and_explanation(tmp_path):
    data, coco = write_vqax(tmp_path)
    task = build_task("vqax", source=f"{data}/vqaX_{{split}}.json", image_dir={"test": str(coco / "val2014")})
    examples = task.load().examples
    assert [e.id for e in examples] == list(VQAX) and task.open_answers
    assert [e.label for e in examples] == ["red", "2", "yes"]  # the most common answer
    assert examples[1].answers == ("2",) * 6 + ("two",) * 4
    assert examples[0].explanations == tuple(VQAX["262284001"]["explanation"])
    assert examples[0].image == coco / "val2014" / "COCO_val2014_000000262284.jpg"
    assert task.parse("Red because the sign is red.") == ("Red", "The sign is red.")
    assert task.demo_answer(examples[2]) == "yes because he is smiling widely"
    with pytest.raises(Exception, match="names a folder for the splits test, not for 'dev'"):
        build_task("vqax", source=str(data / "vqaX_test.json"), image_dir={"test": str(coco)}, split="dev")


def test_vqax_is_scored_the_nlxgpt_way_and_under_protocol_evil_the_evil_way(make_cfg, tmp_path):
    """NLX-GPT's rule by default: right when the normalised answer is the most common of the ten ("Two" for "2");
    explanations scored on the right items against all their references, and on all items (all_*). Under
    eval.protocol=evil, e-ViL's: VQA's soft score, and every answer some annotator gave is explained."""
    data, coco = write_vqax(tmp_path)
    overrides = ("task=vqax", f"task.source={data}/vqaX_test.json", f"task.image_dir.test={coco}/val2014")
    with pytest.raises(Exception, match="open answers .* use decode=generate"):
        run_stage(make_cfg("model=tiny_llava", *overrides, "decode=score"))
    summary = run_stage(make_cfg("model=tiny_llava", *overrides, "generation.max_new_tokens=6"))
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert summary["items"] == 3 and [r["answers"][0] for r in rows] == ["red", "2", "yes"]

    answers = {
        "262284001": "Orange because stop signs are red",
        "393225000": "Two because there are two dogs lying on the bed",
        "458752003": "No because he is frowning",
    }
    edited = []
    for row in rows:  # the model's answers replaced by known ones
        pred, explanation = build_task("vqax").parse(answers[row["id"]])
        edited.append({**row, "raw": answers[row["id"]], "pred": pred, "explanation": explanation})
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in edited))
    metrics = run_stage(make_cfg("stage=eval", f"stage.run={run}", "eval.resamples=0", "eval.spice=false"))
    assert metrics["accuracy"] == pytest.approx(1 / 3)  # "Two" is right; orange (3 of 10) and "No" (1 of 10) are not
    assert metrics["any_answer_accuracy"] == pytest.approx(1.0)  # each is one annotator's answer
    assert metrics["n_explained_correct"] == 1 and metrics["n_explained_all"] == 3
    assert metrics["bleu4"] == pytest.approx(1.0)  # the right item's explanation is its reference
    assert metrics["all_bleu4"] < 1.0
    evil = run_stage(
        make_cfg("stage=eval", f"stage.run={run}", "eval.resamples=0", "eval.spice=false", "eval.protocol=evil")
    )
    assert evil["accuracy"] == pytest.approx((1 + 1 + 1 / 3) / 3)  # orange: 3 annotators (1), two: 1, no: 1 of 10
    assert evil["n_explained_correct"] == 3 and evil["evil_weight"] == pytest.approx(1.0)
    written = json.loads((run / "metrics.json").read_text())
    assert written["scoring"]["vqa_rule"] == "evil" and any("e-ViL's rule" in n for n in written["notes"])
    nlx = run_stage(
        make_cfg(
            "stage=eval",
            f"stage.run={run}",
            "eval.resamples=0",
            "eval.spice=false",
            "eval.protocol=evil",
            "eval.vqa_rule=nlxgpt",
        )
    )
    assert nlx["accuracy"] == pytest.approx(1 / 3) and nlx["n_explained_correct"] == 1


def test_a_misnamed_column_of_a_filter_or_image_template_is_named(tmp_path):
    folder = write_scienceqa(tmp_path)
    common = {"source": str(folder / "problems.json"), "image_dir": str(folder / "images")}
    with pytest.raises(DataError, match=r"no column 'splt' .*fix the column names in task.columns.image, task.where"):
        build_task("scienceqa", where={"splt": "{split}"}, **common).load()
    columns = {**build_task("scienceqa").columns, "image": "{split}/{problem}/{image}"}
    with pytest.raises(DataError, match=r"no column 'problem'"):
        build_task("scienceqa", columns=columns, **common).load()
