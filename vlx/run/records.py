"""The records a run directory holds, one line or block of its files each: a prediction, a judge's verdict, what the
run was.

Stages exchange these, not dicts: a row becomes a record where a file is read (`from_json`, which names the file and
line of a bad row) and a dict again only where it is written (`to_json`, whose keys and their order are those of the
files vlx has always written, so old run directories read and new files diff cleanly against old ones). Keys a record
does not know (written by a newer or an older vlx, or by hand) are kept in `extra` and written back unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vlx.errors import DataError


def _fail(where: str, key: str, want: str, value: Any) -> DataError:
    return DataError(
        f"{where}: {key!r} must be {want}, not {value!r}; fix or delete that line (or rerun the stage that writes it)"
    )


def _label(data: Mapping[str, Any], key: str, where: str) -> str | None:
    """A label: text, None, or a number written by hand (Hateful Memes' 0/1), read as its text."""
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _fail(where, key, "a label (text) or null", value)


def _text(data: Mapping[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _fail(where, key, "text or null", value)


def _texts(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise _fail(where, key, "a list", value)
    return tuple(str(v) for v in value)


def _number(data: Mapping[str, Any], key: str, where: str) -> float | None:
    value = data.get(key)
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    raise _fail(where, key, "a number or null", value)


def _probabilities(data: Mapping[str, Any], key: str, where: str) -> dict[str, float] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(p, (int, float)) and not isinstance(p, bool) for p in value.values()
    ):
        raise _fail(where, key, "an object of label -> probability", value)
    return {str(k): v for k, v in value.items()}


def _require_id(data: Any, where: str) -> str:
    if not isinstance(data, Mapping) or data.get("id") is None:
        raise DataError(f"{where}: each line must be a JSON object with an 'id'")
    return str(data["id"])


@dataclass(frozen=True)
class Prediction:
    """One predictions.jsonl row: an item as the model answered it.

    Attributes:
        id: the item's id in the task's data.
        image: the image file the model saw (as written; None in a hand-made file).
        text: the item's text (hypothesis, meme text, question).
        gold: the gold label (or open answer), None where the split has none.
        pred: the predicted label, None where the answer named none (unparsed).
        explanation: the explanation read from the answer.
        raw: the model's answer as generated.
        refs: the item's reference explanations.
        demos: the ids of the demonstrations shown before it.
        choices: a multiple-choice item's option texts, label -> text.
        answers: an open question's accepted answers.
        scores: label -> probability, from label scoring (`decode=score`).
        extra: keys of the row this record does not know, kept as they were.
    """

    id: str
    image: str | None = None
    text: str | None = None
    gold: str | None = None
    pred: str | None = None
    explanation: str | None = None
    raw: str | None = None
    refs: tuple[str, ...] = ()
    demos: tuple[str, ...] = ()
    choices: dict[str, str] | None = None
    answers: tuple[str, ...] | None = None
    scores: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    FIELDS = (
        "id",
        "image",
        "text",
        "gold",
        "pred",
        "explanation",
        "raw",
        "refs",
        "demos",
        "choices",
        "answers",
        "scores",
    )

    def to_json(self) -> dict[str, Any]:
        """The row as stage=infer writes it: the nine fields every row has, then `choices`, `answers` and `scores`
        where the item has them."""
        row: dict[str, Any] = {
            "id": self.id,
            "image": self.image,
            "text": self.text,
            "gold": self.gold,
            "pred": self.pred,
            "explanation": self.explanation,
            "raw": self.raw,
            "refs": list(self.refs),
            "demos": list(self.demos),
        }
        if self.choices:
            row["choices"] = dict(self.choices)
        if self.answers:
            row["answers"] = list(self.answers)
        if self.scores is not None:
            row["scores"] = dict(self.scores)
        return {**row, **self.extra}

    @classmethod
    def from_json(cls, data: Any, where: str = "a prediction") -> Prediction:
        """A row as read from predictions.jsonl; only `id` is required (a hand-made file may hold id, gold and pred
        alone).

        Args:
            data: the parsed JSON line.
            where: "file:line", named by any error.

        Raises:
            DataError: not an object with an id, or a field of the wrong type (one line naming `where` and the key).
        """
        key = _require_id(data, where)
        choices = data.get("choices")
        if choices is not None and not isinstance(choices, dict):
            raise _fail(where, "choices", "an object of label -> option text", choices)
        return cls(
            id=key,
            image=None if data.get("image") is None else str(data["image"]),
            text=_text(data, "text", where),
            gold=_label(data, "gold", where),
            pred=_label(data, "pred", where),
            explanation=_text(data, "explanation", where),
            raw=_text(data, "raw", where),
            refs=_texts(data, "refs", where) or (),
            demos=_texts(data, "demos", where) or (),
            choices=None if choices is None else {str(k): str(v) for k, v in choices.items()},
            answers=_texts(data, "answers", where),
            scores=_probabilities(data, "scores", where),
            extra={k: v for k, v in data.items() if k not in cls.FIELDS},
        )

    @property
    def has_explanation(self) -> bool:
        """Whether the row has a non-blank explanation."""
        return bool((self.explanation or "").strip())


# e-ViL's scale of an explanation (Kayser et al. 2021), for a judge's verdict and a human rating alike: each level
# and its item score
VERDICT_SCORES: dict[str, float] = {"yes": 1.0, "weak yes": 2 / 3, "weak no": 1 / 3, "no": 0.0}
VERDICTS: tuple[str, ...] = tuple(VERDICT_SCORES)


@dataclass(frozen=True)
class Verdict:
    """One row of a judge's verdicts.jsonl: its verdict on a prediction's explanation.

    Attributes:
        id: the judged item's id.
        verdict: yes, weak yes, weak no or no; None where the judge's answer said none clearly (or no label).
        score: the verdict's e-ViL item score (1, 2/3, 1/3, 0), None without a verdict.
        raw: the judge's answer as generated (None where it was not asked).
        correct: whether the judged label was right; None without a gold label.
        pred: the judged label.
        explanation: the judged explanation.
        judge: the judge's name.
        prompt_version: the version of the judge's question.
        probs: the four answers' probabilities (judge decode=score).
        note: why the judge was not asked (no label, an empty explanation).
        extra: keys of the row this record does not know.
    """

    id: str
    verdict: str | None = None
    score: float | None = None
    raw: str | None = None
    correct: bool | None = None
    pred: str | None = None
    explanation: str | None = None
    judge: str | None = None
    prompt_version: str | None = None
    probs: dict[str, float] | None = None
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    FIELDS = (
        "id",
        "verdict",
        "score",
        "raw",
        "correct",
        "pred",
        "explanation",
        "judge",
        "prompt_version",
        "probs",
        "note",
    )

    def to_json(self) -> dict[str, Any]:
        """The verdict as a JSON-lines row (the file's field names)."""
        row: dict[str, Any] = {
            "id": self.id,
            "verdict": self.verdict,
            "score": self.score,
            "raw": self.raw,
            "correct": self.correct,
            "pred": self.pred,
            "explanation": self.explanation,
            "judge": self.judge,
            "prompt_version": self.prompt_version,
        }
        if self.probs is not None:
            row["probs"] = dict(self.probs)
        if self.note is not None:
            row["note"] = self.note
        return {**row, **self.extra}

    @classmethod
    def from_json(cls, data: Any, where: str = "a verdict") -> Verdict:
        """A row as read from verdicts.jsonl (see `Prediction.from_json`)."""
        key = _require_id(data, where)
        correct = data.get("correct")
        if correct is not None and not isinstance(correct, bool):
            raise _fail(where, "correct", "true, false or null", correct)
        return cls(
            id=key,
            verdict=_text(data, "verdict", where),
            score=_number(data, "score", where),
            raw=_text(data, "raw", where),
            correct=correct,
            pred=_label(data, "pred", where),
            explanation=_text(data, "explanation", where),
            judge=_text(data, "judge", where),
            prompt_version=_text(data, "prompt_version", where),
            probs=_probabilities(data, "probs", where),
            note=_text(data, "note", where),
            extra={k: v for k, v in data.items() if k not in cls.FIELDS},
        )


@dataclass(frozen=True)
class RunInfo:
    """What a run was: summary.json's `run` block, which eval, judge, report and review read instead of composing the
    config again.

    Attributes:
        task: the task's name.
        split: the split predicted.
        labels: the task's labels (empty for open answers).
        positive: the positive class of a binary task.
        model: the model option (`model=llava`) or its class.
        checkpoint: the model's hub id or folder.
        adapter: the LoRA adapter folder, if any.
        shots: demonstrations per query.
        shot_strategy: how they were chosen (None for zero-shot).
        quant: the quantization option.
        generation: the generation option.
        seed: the run's seed.
        extra: keys this record does not know.
    """

    task: str | None = None
    split: str | None = None
    labels: tuple[str, ...] = ()
    positive: str | None = None
    model: str | None = None
    checkpoint: str | None = None
    adapter: str | None = None
    shots: int | None = None
    shot_strategy: str | None = None
    quant: str | None = None
    generation: str | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    FIELDS = (
        "task",
        "split",
        "labels",
        "positive",
        "model",
        "checkpoint",
        "adapter",
        "shots",
        "shot_strategy",
        "quant",
        "generation",
        "seed",
    )

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object (its field names)."""
        row = {name: getattr(self, name) for name in self.FIELDS}
        row["labels"] = list(self.labels)
        return {**row, **self.extra}

    @classmethod
    def from_json(cls, data: Any, where: str = "summary.json's run") -> RunInfo:
        """The `run` block as summary.json holds it; every key may be missing (an older vlx's summary)."""
        if not isinstance(data, Mapping):
            raise DataError(f"{where}: must be a JSON object, not {data!r}; rerun stage=infer")
        labels = data.get("labels") or ()
        if not isinstance(labels, Sequence) or isinstance(labels, str):
            raise _fail(where, "labels", "a list of labels", labels)
        return cls(
            task=None if data.get("task") is None else str(data["task"]),
            split=None if data.get("split") is None else str(data["split"]),
            labels=tuple(str(label) for label in labels),
            positive=_label(data, "positive", where),
            model=None if data.get("model") is None else str(data["model"]),
            checkpoint=None if data.get("checkpoint") is None else str(data["checkpoint"]),
            adapter=None if data.get("adapter") is None else str(data["adapter"]),
            shots=data.get("shots"),
            shot_strategy=data.get("shot_strategy"),
            quant=data.get("quant"),
            generation=data.get("generation"),
            seed=data.get("seed"),
            extra={k: v for k, v in data.items() if k not in cls.FIELDS},
        )
