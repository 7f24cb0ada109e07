"""The answer format of a task, written once in its YAML (`task.answer`) and used by every place that writes or reads
an answer: few-shot demonstrations, label scoring, the label forced before a generated explanation, training
targets, and the split of an answer into label and explanation.

    answer: "{Label}. {explanation}"     # "Entailment. The man is outdoors."   ({label}: the label as written)
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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
            raise ConfigError(
                f"task.answer={self.template!r} names {unknown}; it may name only {{label}} or "
                f"{{Label}}, and {{explanation}} ({hint})"
            )
        if len(labels) != 1 or fields.count("explanation") != 1:
            raise ConfigError(
                f"task.answer={self.template!r} needs one label ({{label}} or {{Label}}) and one "
                f"{{explanation}} ({hint})"
            )
        if fields.index("explanation") < fields.index(labels[0]):
            raise ConfigError(
                f"task.answer={self.template!r}: the label must come before the explanation (label "
                f"scoring reads the label first, then the explanation follows it)"
            )

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


def _field(name: str, spec: str | None, conversion: str | None) -> str:
    return "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"


# --- VQA's answer processing ---------------------------------------------------------------------------------------
# The official VQA evaluation's `processPunctuation` and `processDigitArticle` (GT-Vision-Lab/VQA, vqaEval.py), as
# NLX-GPT's `prep_ans` (utils/data_utils.py) applies them to VQA-X, then its removal of every comma. Written anew;
# the test over all 1968 VQA-X test items checks the result against NLX-GPT's own output.
_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# a period not followed by a digit ("3.5" keeps its point). VQA's code passes re.UNICODE (32) where Pattern.sub
# takes `count`, so at most 32 periods go: kept so that even such an answer is processed as theirs is
_PERIOD = re.compile(r"\.(?!\d)")
_PERIODS_REMOVED = 32
_MANUAL_MAP = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLE_WORDS = frozenset({"a", "an", "the"})
# VQA's contractions table: an apostrophe-less word -> its written form (entries with capitals never match, as the
# words are lower-cased first; they are left out)
_CONTRACTION_PAIRS = """
aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've couldnt've=couldn't've
didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've hadn'tve=hadn't've hasnt=hasn't
havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's howd=how'd howll=how'll hows=how's isnt=isn't
itd=it'd itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't mightnt've=mightn't've
mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've neednt=needn't notve=not've oclock=o'clock
oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at 'ow'sat='ow's'at shant=shan't shed've=she'd've she'dve=she'd've
she's=she's shouldve=should've shouldnt=shouldn't shouldnt've=shouldn't've shouldn'tve=shouldn't've
somebody'd=somebodyd somebodyd've=somebody'd've somebody'dve=somebody'd've somebodyll=somebody'll
somebodys=somebody's someoned=someone'd someoned've=someone'd've someone'dve=someone'd've someonell=someone'll
someones=someone's somethingd=something'd somethingd've=something'd've something'dve=something'd've
somethingll=something'll thats=that's thered=there'd thered've=there'd've there'dve=there'd've therere=there're
theres=there's theyd=they'd theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've
twas='twas wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll whatre=what're
whats=what's whatve=what've whens=when's whered=where'd wheres=where's whereve=where've whod=who'd whod've=who'd've
who'dve=who'd've wholl=who'll whos=who's whove=who've whyll=why'll whyre=why're whys=why's wont=won't
wouldve=would've wouldnt=wouldn't wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll
y'allll=y'all'll yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've
you'dve=you'd've youll=you'll youre=you're youve=you've
"""
_CONTRACTIONS = dict(pair.split("=") for pair in _CONTRACTION_PAIRS.split())


def _punctuation(text: str) -> str:
    # a mark written apart from a word (", " or " ,"), or any text with a comma between digits ("1,000"), loses the
    # mark; elsewhere it becomes a space ("black/white" -> "black white"). Both tests read the original text.
    glued = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCT:
        out = out.replace(mark, "" if glued or f"{mark} " in text or f" {mark}" in text else " ")
    return _PERIOD.sub("", out, count=_PERIODS_REMOVED)


def _digits_and_articles(text: str) -> str:
    words = [_MANUAL_MAP.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLE_WORDS)


def normalize_answer(text: str) -> str:
    """An open answer as VQA compares answers (NLX-GPT's `prep_ans`): punctuation as VQA's evaluation treats it,
    lower case, number words as digits ("two" -> "2", and "none" -> "0", from VQA's number map), no articles,
    contractions written out ("dont" -> "don't"), no commas."""
    return _digits_and_articles(_punctuation(text)).replace(",", "")


def vqa_gold(answers: Sequence[str]) -> str:
    """The gold answer of a VQA question (NLX-GPT's `proc_ans`): the most common of its normalised answers, the
    first of them on a tie."""
    counts = Counter(normalize_answer(a) for a in answers)  # insertion order: the first answer wins a tie
    return max(counts, key=counts.__getitem__)


def accepted_answers(answers: Sequence[str]) -> frozenset[str]:
    """Every normalised answer some annotator gave: the answers e-ViL's VQA-X evaluator gives a score above 0."""
    return frozenset(normalize_answer(a) for a in answers)


# --- what counts as right ------------------------------------------------------------------------------------------
VQA_RULES = ("nlxgpt", "evil")
# the tasks whose official pipeline answers an unparsable answer with a random option (ScienceQA's run_gpt3.py
# get_pred_idx); elsewhere an unparsed answer is wrong, as A-OKVQA's scorer counts a missing prediction
GUESS_UNPARSED = ("scienceqa",)
UNPARSED_RULES = ("wrong", "guess")


@dataclass(frozen=True)
class Scoring:
    """How an item's answer is scored: the one definition every stage uses (`answer_score`, `is_correct`).

    Attributes:
        vqa_rule: an open (VQA-X) answer. `nlxgpt`: right (1) when its normalised text is the item's gold, the
            most common normalised answer (NLX-GPT's vqaX.py). `evil`: VQA's soft score min(#annotators who gave
            it / 3, 1), and right (explained, and weighted into e-ViL's global score) when above 0 (e-ViL's
            VQAXEvaluator).
        unparsed: a multiple-choice answer that names no option. `wrong`: 0. `guess`: a random option of the item
            (ScienceQA's run_gpt3.py `get_pred_idx`), drawn from `seed` and the item's id, so that one item gets
            the same guess in every stage and run.
        seed: the guesses' seed.
    """

    vqa_rule: str = "nlxgpt"
    unparsed: str = "wrong"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.vqa_rule not in VQA_RULES:
            raise ConfigError(f"eval.vqa_rule={self.vqa_rule!r}: use auto, {' or '.join(VQA_RULES)}")
        if self.unparsed not in UNPARSED_RULES:
            raise ConfigError(f"eval.unparsed={self.unparsed!r}: use auto, {' or '.join(UNPARSED_RULES)}")

    def record(self) -> dict[str, Any]:
        """metrics.json's `scoring`."""
        return {"vqa_rule": self.vqa_rule, "unparsed": self.unparsed, "seed": self.seed}

    @classmethod
    def from_settings(cls, task: str, settings: Mapping[str, Any]) -> Scoring:
        """The rule of a run of `task` under the `eval` settings, `auto` resolved: for open (VQA-X) answers e-ViL's
        rule under `eval.protocol=evil`, NLX-GPT's otherwise; for an unparsed multiple-choice answer a random option
        for the tasks whose official pipeline guesses (ScienceQA), wrong elsewhere. eval, judge and compare all
        score answers by it."""
        vqa_rule, unparsed = settings.get("vqa_rule", "auto"), settings.get("unparsed", "auto")
        if vqa_rule == "auto":
            vqa_rule = "evil" if settings.get("protocol", "coco") == "evil" else "nlxgpt"
        if unparsed == "auto":
            unparsed = "guess" if task in GUESS_UNPARSED else "wrong"
        return cls(vqa_rule=str(vqa_rule), unparsed=str(unparsed), seed=int(settings.get("seed", 0)))


DEFAULT_SCORING = Scoring()


class Answered(Protocol):
    """What scoring reads of a prediction: `vlx.run.records.Prediction` has these, and so has a plain row (a
    predictions.jsonl line as a dict), read through `answered`."""

    @property
    def id(self) -> str:
        """The item's id."""

    @property
    def gold(self) -> str | None:
        """The gold label, None for an unlabelled item."""

    @property
    def pred(self) -> str | None:
        """The answered label, None where the answer did not parse."""

    @property
    def choices(self) -> Mapping[str, str] | None:
        """A multiple-choice item's {label: option text}, None for others."""

    @property
    def answers(self) -> Sequence[str] | None:
        """An open question's accepted answers, None for others."""


@dataclass(frozen=True)
class _Row:
    id: str
    gold: str | None
    pred: str | None
    choices: Mapping[str, str] | None
    answers: Sequence[str] | None


def answered(row: Answered | Mapping[str, Any]) -> Answered:
    """A prediction as scoring reads it: a record as it is, a plain row's keys as its fields."""
    if isinstance(row, Mapping):
        return _Row(str(row.get("id")), row.get("gold"), row.get("pred"), row.get("choices"), row.get("answers"))
    return row


def guessed_label(row: Answered | Mapping[str, Any], seed: int = 0) -> str | None:
    """The option a random guess picks for an unparsed multiple-choice answer (None without the row's `choices`):
    uniform over the item's options, seeded by `seed` and the item's id (a string seed is hashed by SHA-512, the
    same in every process)."""
    item = answered(row)
    options = list(item.choices or ())
    if not options:
        return None
    return options[random.Random(f"{seed}:{item.id}").randrange(len(options))]


def answered_label(row: Answered | Mapping[str, Any], scoring: Scoring = DEFAULT_SCORING) -> str | None:
    """The label the row's answer stands for: its parsed label, or under `unparsed=guess` the guess for an answer
    that names none."""
    item = answered(row)
    if item.pred is None and scoring.unparsed == "guess" and not item.answers:
        return guessed_label(item, scoring.seed)
    return item.pred


def answer_score(row: Answered | Mapping[str, Any], scoring: Scoring = DEFAULT_SCORING) -> float:
    """An item's score in [0, 1]: 1 or 0, except VQA's soft score for an open answer under `vqa_rule=evil`.

    A multiple-choice row that lists its option texts (`choices`, label -> text) is right when the chosen option's
    text equals the gold option's, as A-OKVQA's eval_predictions.py compares them: an option repeated under two
    letters is right under either. An open answer (the row lists its `answers`) is normalised as VQA's are.
    """
    item = answered(row)
    gold = item.gold
    pred = answered_label(item, scoring)
    if gold is None or pred is None:
        return 0.0
    if item.answers:
        said = normalize_answer(str(pred))
        if scoring.vqa_rule == "evil":
            return min(sum(normalize_answer(str(a)) == said for a in item.answers) / 3, 1.0)
        return float(said == vqa_gold([str(a) for a in item.answers]))
    choices = item.choices
    if choices and pred in choices and gold in choices:
        return float(choices[pred] == choices[gold])
    return float(pred == gold)


def is_correct(row: Answered | Mapping[str, Any], any_answer: bool = False, scoring: Scoring = DEFAULT_SCORING) -> bool:
    """Whether a prediction got its item right (`answer_score` above 0). With `any_answer`, an open answer is
    right when any annotator gave it."""
    item = answered(row)
    if any_answer and item.answers:
        return item.pred is not None and normalize_answer(str(item.pred)) in accepted_answers(
            [str(a) for a in item.answers]
        )
    return answer_score(item, scoring) > 0


def counted_label(row: Answered | Mapping[str, Any], scoring: Scoring = DEFAULT_SCORING) -> str | None:
    """The label a row counts as in classification metrics: the gold one when the answer is right (also the other
    copy of a repeated option), else the answered label (a guess under `unparsed=guess`), None if unparsed."""
    item = answered(row)
    return item.gold if is_correct(item, scoring=scoring) else answered_label(item, scoring)


# --- multiple-choice items with repeated options -------------------------------------------------------------------


def text_probabilities(
    scores: Mapping[str, float], choices: Mapping[str, str] | None, gold: str | None = None
) -> dict[str, float]:
    """Label probabilities with an option repeated under several letters scored once: its letters' probabilities
    summed onto one of them (the gold letter for the gold text, else its first letter), the others 0. Without
    repeats (or option texts) the scores as they are."""
    if not choices or len(set(choices.values())) == len(choices):
        return dict(scores)
    holder: dict[str, str] = {}
    for label, text in choices.items():
        holder.setdefault(text, label)
    if gold is not None and gold in choices:
        holder[choices[gold]] = gold
    merged = {label: 0.0 for label in scores}
    for label, p in scores.items():
        merged[holder[choices[label]] if label in choices else label] += p
    return merged


def most_probable(scores: Mapping[str, float], choices: Mapping[str, str] | None = None) -> str:
    """The label of the most probable answer: the option text with the highest probability, its copies' summed
    (its first letter), so that two copies of one option do not lose to a third option by splitting their mass."""
    merged = text_probabilities(scores, choices)
    return max(merged, key=merged.__getitem__)
