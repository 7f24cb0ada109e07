"""The answer format of a task, written once in its YAML (`task.answer`) and used by every place that writes or reads
an answer: few-shot demonstrations, label scoring, the label forced before a generated explanation, training
targets, and the split of an answer into label and explanation.

    answer: "{Label}. {explanation}"     # "Entailment. The man is outdoors."   ({label}: the label as written)
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vlx.errors import ConfigError

DEFAULT_ANSWER = "{Label}. {explanation}"
_LABEL_FIELDS = ("label", "Label")


@dataclass(frozen=True)
class AnswerFormat:
    """`template` holds `{label}` (the label as the task names it) or `{Label}` (its first letter upper-cased), then
    `{explanation}`; any text around them is kept.

    Raises:
        ConfigError: a placeholder is missing, unknown, repeated, or the explanation comes before the label (label
            scoring and `decode=score_then_explain` put the label first and the explanation after it).
    """

    template: str = DEFAULT_ANSWER

    def __post_init__(self) -> None:
        parts = list(string.Formatter().parse(self.template))
        fields = [name for _, name, _, _ in parts if name is not None]
        labels = [f for f in fields if f in _LABEL_FIELDS]
        unknown = sorted(set(fields) - {*_LABEL_FIELDS, "explanation"})
        hint = 'e.g. task.answer="{Label}. {explanation}"'
        if unknown:
            raise ConfigError(f"task.answer={self.template!r} names {unknown}; it may name only {{label}} or "
                              f"{{Label}}, and {{explanation}} ({hint})")  # fmt: skip
        if len(labels) != 1 or fields.count("explanation") != 1:
            raise ConfigError(f"task.answer={self.template!r} needs one label ({{label}} or {{Label}}) and one "
                              f"{{explanation}} ({hint})")  # fmt: skip
        if fields.index("explanation") < fields.index(labels[0]):
            raise ConfigError(f"task.answer={self.template!r}: the label must come before the explanation (label "
                              f"scoring reads the label first, then the explanation follows it)")  # fmt: skip

    def _split(self) -> tuple[str, str, str]:
        """The template as (up to and with the label, between label and explanation, after the explanation)."""
        head, between, tail = "", "", ""
        seen_label = seen_explanation = False
        for literal, name, spec, conversion in string.Formatter().parse(self.template):
            # head is formatted again with the label (its literal braces escaped); between and tail are plain text
            if seen_explanation:
                tail += literal
            elif seen_label:
                between += literal
                seen_explanation = name == "explanation"
            else:
                head += literal.replace("{", "{{").replace("}", "}}")
                if name is not None:
                    head += _field(name, spec, conversion)
                seen_label = name in _LABEL_FIELDS
        return head, between, tail

    def _fill(self, part: str, label: str) -> str:
        return part.format(label=label, Label=label[:1].upper() + label[1:])

    def label_text(self, label: str) -> str:
        """The label as the answer writes it, the text label scoring compares ("Entailment")."""
        head, _, _ = self._split()
        return self._fill(head, label)

    def stated(self, label: str) -> str:
        """The answer up to its explanation ("Entailment."): a demonstration without a reference explanation, and
        what a scored label's answer is."""
        head, between, _ = self._split()
        return (self._fill(head, label) + between).rstrip()

    def answer(self, label: str, explanation: str) -> str:
        """The whole answer ("Entailment. The man is outdoors."); without an explanation, `stated(label)`."""
        if not explanation.strip():
            return self.stated(label)
        head, between, tail = self._split()
        return self._fill(head, label) + between + explanation.strip() + tail

    @property
    def separator(self) -> str:
        """What the format writes between the label and the explanation (". ", " because ")."""
        return self._split()[1]

    def explanation_after(self, label: str, answer: str) -> str | None:
        """What follows the stated label in `answer` (the explanation), or None where the answer does not start
        with it."""
        stated = self.stated(label)
        return answer[len(stated) :].strip() if answer.startswith(stated) else None


def _field(name: str, spec: str, conversion: str | None) -> str:
    return "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"


# VQA's answer normalisation, in short: case, punctuation, articles and number words do not make an answer wrong
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCTUATION = re.compile(r"[^\w\s]")
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_NUMBERS = {word: str(i) for i, word in enumerate(_NUMBER_WORDS)}


def normalize_answer(text: str) -> str:
    """An open answer as answers are compared: lower case, no punctuation or articles, number words as digits."""
    words = _ARTICLES.sub(" ", _PUNCTUATION.sub(" ", text.lower())).split()
    return " ".join(_NUMBERS.get(w, w) for w in words)


def is_correct(row: Mapping[str, Any], any_answer: bool = False) -> bool:
    """Whether a prediction row got its item right: its label is the gold one. For an open question (the row lists
    its accepted `answers`, as VQA-X's do) the normalised answer must equal the most common answer (the gold, as
    e-ViL and NLX-GPT score VQA-X), or with `any_answer` be one of them."""
    gold, pred = row.get("gold"), row.get("pred")
    if gold is None or pred is None:
        return False
    answers = row.get("answers")
    if answers:
        accepted = answers if any_answer else [gold]
        return normalize_answer(str(pred)) in {normalize_answer(str(a)) for a in accepted}
    return pred == gold
