"""The answer format lives once, in the task's YAML (`task.answer`): demonstrations, label scoring, the label forced
before an explanation, training targets and parsing all follow it."""

from __future__ import annotations

import json

import pytest

from vlx.__main__ import run_stage
from vlx.errors import ConfigError
from vlx.finetuning.items import training_items
from vlx.tasks import build_task
from vlx.tasks.answers import AnswerFormat, Scoring, answer_score, is_correct, normalize_answer
from vlx.tasks.items import Example
from vlx.tasks.parsing import parse_open


def test_the_default_format_is_the_seeds():
    fmt = AnswerFormat()
    assert fmt.label_text("not offensive") == "Not offensive"
    assert fmt.stated("entailment") == "Entailment."
    assert fmt.answer("neutral", "A man stands.") == "Neutral. A man stands."
    assert fmt.answer("neutral", " ") == "Neutral."
    assert fmt.explanation_after("neutral", "Neutral. A man stands.") == "A man stands."
    assert fmt.explanation_after("neutral", "Entailment. A man stands.") is None


def test_a_format_of_ones_own_keeps_its_text_and_braces():
    fmt = AnswerFormat("Verdict: {label} -- {{why}} {explanation}!")
    assert fmt.label_text("A") == "Verdict: A"
    assert fmt.stated("A") == "Verdict: A -- {why}"
    assert fmt.answer("A", "it is") == "Verdict: A -- {why} it is!"
    assert fmt.separator == " -- {why} "


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{explanation} so {label}", "the label must come before the explanation"),
        ("{Label}.", r"needs one label \({label} or {Label}\) and one {explanation}"),
        ("{label} {Label} {explanation}", "needs one label"),
        ("{answer}. {explanation}", r"names \['answer'\]"),
    ],
)
def test_a_format_that_cannot_work_is_refused(template, message):
    with pytest.raises(ConfigError, match=message):
        AnswerFormat(template)


def test_the_tasks_format_reaches_demonstrations_targets_and_parsing():
    task = build_task("esnli", answer="{label} -- {explanation}")
    item = Example(id="1", image=None, text="A dog.", label="neutral", explanations=("It may be a cat.",))
    assert task.demo_answer(item) == "neutral -- It may be a cat."
    assert task.label_text("neutral") == "neutral" and task.stated("neutral") == "neutral --"
    (target,) = training_items([item], "label_and_explanation", lambda ex: f"explain en {ex.text}", answer=task.answer)
    assert target.target == "neutral -- It may be a cat." and target.text == "explain en A dog."
    assert task.parse("neutral -- It may be a cat.") == ("neutral", "It may be a cat.")


def test_label_scoring_states_the_label_in_the_tasks_format(make_cfg, tmp_path):
    run_stage(
        make_cfg(
            "model=tiny_llava",
            "task=shapes",
            "task.limit=3",
            "decode=score",
            "task.answer='Answer: {label}; {explanation}'",
        )
    )
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert all(r["raw"] == f"Answer: {r['pred']};" for r in rows)  # the scored label's answer, in the format
    assert all(r["explanation"] == "" for r in rows)


def test_open_answers_are_read_and_matched_as_vqas():
    assert parse_open("Two because there are two dogs.", " because ") == ("Two", "There are two dogs.")
    assert parse_open("**yes**\nHe smiles.", " because ") == ("yes", "He smiles.")  # no separator: the first line
    assert parse_open("Red. The sign is red.", ". ") == ("Red", "The sign is red.")
    assert normalize_answer("The Two dogs!") == "2 dogs"
    assert normalize_answer("None") == "0" and normalize_answer("dont") == "don't"  # VQA's number map, contractions
    row = {"gold": "2", "pred": "two", "answers": ["2", "2", "two", "3"]}
    assert is_correct(row)  # "two" is the most common answer "2"
    assert is_correct({**row, "pred": "3"}, any_answer=True) and not is_correct({**row, "pred": "3"})
    assert not is_correct({"gold": None, "pred": None}) and is_correct({"gold": "neutral", "pred": "neutral"})
    evil = Scoring(vqa_rule="evil")  # e-ViL's: any annotator's answer is right, with VQA's soft score
    assert is_correct({**row, "pred": "3"}, scoring=evil) and answer_score({**row, "pred": "3"}, evil) == 1 / 3
    assert answer_score(row, evil) == 1.0
    # a multiple-choice row with its option texts: the other copy of the gold option is right
    mc = {"gold": "A", "pred": "C", "choices": {"A": "clothing", "B": "instruments", "C": "clothing"}}
    assert is_correct(mc) and not is_correct({**mc, "pred": "B"})
    assert not is_correct({"gold": "A", "pred": "C"})  # without option texts (an older vlx's rows): by letter
    with pytest.raises(ConfigError, match="eval.vqa_rule='vqa'"):
        Scoring(vqa_rule="vqa")
