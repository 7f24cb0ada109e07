"""The label metrics of a run's prediction rows, under the task's answer rules (vlx.tasks.answers.Scoring):
open answers (VQA-X), labels and multiple choice (accuracy, macro-F1, binary F1, AUROC), calibration.

Each function returns (metrics.json's keys, notes); the eval stage writes them and draws the plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vlx.errors import ConfigError
from vlx.metrics.classification import classification_metrics, open_answer_metrics
from vlx.tasks.answers import Scoring, answer_score, answered_label, counted_label, is_correct, text_probabilities

if TYPE_CHECKING:
    from vlx.run.records import Prediction


def open_answer_scores(
    labelled: Sequence[Prediction], scoring: Scoring, *, resamples: int, level: float, seed: int
) -> tuple[dict[str, Any], list[str]]:
    """Accuracy of open answers (VQA-X) by `eval.vqa_rule`, with its interval, and the note saying the rule."""
    found = open_answer_metrics(
        [answer_score(r, scoring) for r in labelled],
        [is_correct(r, any_answer=True) for r in labelled],
        [r.pred is None for r in labelled],
        resamples=resamples,
        level=level,
        seed=seed,
    )
    return found, [open_answer_note(scoring)]


def open_answer_note(scoring: Scoring) -> str:
    """The sentence metrics.json's notes give on how open answers were scored."""
    common = (
        "answers normalised as VQA's evaluation does (punctuation, case, number words as digits with none as "
        "0, articles, contractions; NLX-GPT's prep_ans), the prediction too"
    )
    if scoring.vqa_rule == "evil":
        return (
            f"open answers, e-ViL's rule (eval.vqa_rule=evil): accuracy is VQA's soft score min(#annotators who "
            f"gave the answer / 3, 1); an item is right (its explanation scored, and counted in evil_weight) when "
            f"any annotator gave the answer; {common}. e-ViL reads each answer's score from its data files, "
            f"which its repository does not hold: vlx counts all ten answers"
        )
    return (
        f"open answers, NLX-GPT's rule (eval.vqa_rule=nlxgpt): right when the answer is the item's most common "
        f"answer (proc_ans); {common} (NLX-GPT's vqaX.py compares its own model's text unnormalised); "
        f"any_answer_accuracy: any annotator's answer. eval.vqa_rule=evil scores as e-ViL"
    )


def gold_labels(labelled: Sequence[Prediction]) -> list[str]:
    """The gold label of each row; the rows are those with one (`labelled`).

    Raises:
        ValueError: a row without a gold label (the caller's slip: it passes the labelled rows only).
    """
    golds = [r.gold for r in labelled if r.gold is not None]
    if len(golds) < len(labelled):
        raise ValueError(f"{len(labelled) - len(golds)} rows without a gold label among the labelled rows")
    return golds


def label_scores(
    labelled: Sequence[Prediction],
    labels: Sequence[str],
    positive: str | None,
    scoring: Scoring,
    *,
    source: str,
    resamples: int,
    level: float,
    seed: int,
) -> tuple[dict[str, Any], list[str]]:
    """Accuracy, macro-F1, per-class results and confusion matrix (binary F1 and AUROC with a positive class) of
    label answers, and what the multiple-choice rules did.

    Args:
        labelled: the rows with a gold label.
        labels: the task's labels.
        positive: its positive class or None.
        scoring: the answer rules (a repeated option's other copy counts, eval.unparsed=guess guesses).
        source: the predictions file, named in the error.
        resamples: bootstrap resamples (0: no intervals).
        level: the intervals' coverage.
        seed: the bootstrap's seed.

    Raises:
        ConfigError: a prediction that is not one of the labels (its id named).
    """
    labels = tuple(labels)
    bad = next((r for r in labelled if r.pred is not None and r.pred not in labels), None)
    if bad is not None:
        raise ConfigError(f"{source}: id {bad.id} has pred {bad.pred!r}, not one of {labels}")
    scores = [r.scores for r in labelled]
    # the label each answer counts as: the gold one for the other copy of a repeated option, a guess for an
    # unparsed answer under eval.unparsed=guess
    found, notes = classification_metrics(
        gold_labels(labelled),
        [counted_label(r, scoring) for r in labelled],
        labels,
        positive=positive,
        scores=scores if any(s is not None for s in scores) else None,
        unparsed=[r.pred is None for r in labelled],
        resamples=resamples,
        level=level,
        seed=seed,
    )
    found.update(multiple_choice_rules(labelled, scoring, notes))
    return found, notes


def multiple_choice_rules(labelled: Sequence[Prediction], scoring: Scoring, notes: list[str]) -> dict[str, Any]:
    """What the multiple-choice rules did: repeated options, guesses for unparsed answers (notes and numbers)."""
    out: dict[str, Any] = {}
    repeated = [r for r in labelled if r.choices and len(set(r.choices.values())) < len(r.choices)]
    if repeated:
        other_copy = sum(r.pred not in (None, r.gold) and is_correct(r, scoring=scoring) for r in repeated)
        notes.append(
            f"{len(repeated)} items repeat an option's text: the chosen text is scored, so either copy is "
            f"right (A-OKVQA's eval_predictions.py); {other_copy} answers chose the gold text's other copy. "
            "Label scoring sums a repeated option's probability over its copies"
        )
        out["repeated_option_items"] = len(repeated)
    unparsed = [r for r in labelled if r.pred is None]
    if scoring.unparsed == "guess":
        guessed = [r for r in unparsed if answered_label(r, scoring) is not None]
        wrong = Scoring(vqa_rule=scoring.vqa_rule, unparsed="wrong", seed=scoring.seed)
        out["guessed"] = len(guessed)
        out["accuracy_unparsed_wrong"] = sum(is_correct(r, scoring=wrong) for r in labelled) / len(labelled)
        notes.append(
            f"eval.unparsed=guess: {len(guessed)} unparsed answers got a random option of their item "
            f"(seeded by eval.seed={scoring.seed} and the item id), as ScienceQA's run_gpt3.py does; "
            f"{sum(is_correct(r, scoring=scoring) for r in guessed)} of the guesses are right. "
            "accuracy_unparsed_wrong counts them wrong (eval.unparsed=wrong)"
        )
        if len(guessed) < len(unparsed):
            notes.append(
                f"{len(unparsed) - len(guessed)} unparsed rows list no options (written by an older vlx): "
                "not guessed, counted wrong"
            )
    return out


def calibration_scores(
    labelled: Sequence[Prediction],
    labels: Sequence[str],
    positive: str | None,
    *,
    bins: int,
    resamples: int,
    level: float,
    seed: int,
) -> tuple[dict[str, Any], list[str]]:
    """ECE, Brier, NLL with intervals and the reliability table, from the label probabilities of decode=score; ({},
    a note) where only some rows have them, ({}, []) where none has."""
    from vlx.metrics.calibration import calibration_metrics

    have = sum(r.scores is not None for r in labelled)
    if have < len(labelled):
        return {}, [f"calibration not computed: only {have} of {len(labelled)} items have label scores"] if have else []
    # multiple-choice items are scored over their own options: labels they do not offer have probability 0
    # an option repeated under two letters is one answer: its probability is its copies' sum (on the gold letter)
    return calibration_metrics(
        gold_labels(labelled),
        [text_probabilities(r.scores or {}, r.choices, r.gold) for r in labelled],
        labels,
        positive=positive,
        bins=bins,
        resamples=resamples,
        level=level,
        seed=seed,
        missing_as_zero=True,
    )
