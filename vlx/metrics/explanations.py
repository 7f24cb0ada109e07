"""The explanation metrics of a run's prediction rows under the eval settings: which references each item is scored
against (e-ViL's choice per task), the protocol's scores with intervals (vlx.metrics.text), and the per-item
statistics stage=compare reads back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from vlx.metrics.registry import protocol_of
from vlx.tasks.answers import Scoring, is_correct

if TYPE_CHECKING:
    from vlx.run.records import Prediction

EVIL_REFERENCES = ("auto", "all", "first")
# the task whose references e-ViL's code passes all of (get_nlg_scores: dtype == "vqa_x"); the first elsewhere
EVIL_ALL_REFERENCES = ("vqax",)


def evil_references(refs: list[str], task: str, settings: Mapping[str, Any]) -> list[str]:
    """The references e-ViL's code scores an item against: all for VQA-X, the first elsewhere (`[[x] for x in
    gt_expl]`); `eval.evil_references` overrides. coco uses them all."""
    if protocol_of(settings) != "evil":
        return refs
    how = settings.get("evil_references", "auto")
    if how == "all" or (how == "auto" and task in EVIL_ALL_REFERENCES):
        return refs
    return refs[:1]


def rows_explanation_scores(
    pool: Sequence[Prediction],
    refs: Mapping[str, Sequence[str]],
    scoring: Scoring,
    task: str,
    settings: Mapping[str, Any],
    labelled: bool,
) -> tuple[dict[str, Any], list[str], list[dict[str, Any]]]:
    """The explanation metrics of the rows that have reference explanations, and how many have none.

    Args:
        pool: the rows whose explanations count: the labelled ones, or every row of a task without labels.
        refs: id -> the item's reference explanations (none: the row is left out).
        scoring: the answer rules (which answers are right).
        task: the task's name (e-ViL's reference choice).
        settings: the `eval` config.
        labelled: the task has gold labels (else only the `all_` scores).

    Returns:
        (metrics.json's keys, notes, explanation_items.jsonl's rows: [] when nothing was scored).
    """
    scored = [r for r in pool if refs.get(r.id)]
    out: dict[str, Any] = {"n_with_references": len(scored), "n_without_references": len(pool) - len(scored)}
    if not scored:
        return (
            out,
            [
                "no reference explanations: explanation metrics skipped (Hateful Memes ships none; give "
                "HatReD's with task.references=<jsonl>)"
            ],
            [],
        )
    notes = [] if labelled else ["no gold labels: explanations are scored on all items (all_*), none counts as correct"]
    correct = [is_correct(r, scoring=scoring) for r in scored]
    text, text_notes, items = explanation_scores(scored, refs, correct, task, settings, labelled)
    out.update(text)
    notes += text_notes
    if out["n_without_references"]:
        notes.append(
            f"{out['n_without_references']} items have no reference explanation and are left out of the "
            "explanation metrics (evil_global uses the accuracy of the scored items)"
        )
    return out, notes, items


def explanation_scores(
    scored: Sequence[Prediction],
    refs: Mapping[str, Sequence[str]],
    correct: Sequence[bool],
    task: str,
    settings: Mapping[str, Any],
    labelled: bool,
) -> tuple[dict[str, Any], list[str], list[dict[str, Any]]]:
    """The explanation metrics of the scored rows under the configured protocol.

    Args:
        scored: the rows with reference explanations.
        refs: id -> the item's reference explanations.
        correct: whether each row's answer is right (e-ViL scores the explanations of those).
        task: the task's name (e-ViL's reference choice).
        settings: the `eval` config.
        labelled: the task has gold labels (else only the `all_` scores).

    Returns:
        (metrics.json's keys, notes, one row per item of per-item statistics for explanation_items.jsonl).

    Raises:
        ConfigError: Java is needed and missing (before BERTScore's model loads).
    """
    from vlx.metrics.bertscore import BertScoreSettings, bertscore_record
    from vlx.metrics.coco import check_java
    from vlx.metrics.text import close_meteor, open_meteor, score_items, summarise

    protocol = protocol_of(settings)
    notes: list[str] = []
    check_java(settings.get("java", True))  # before BERTScore's model loads
    bert = BertScoreSettings(**settings["bertscore"])
    meteor = open_meteor(len(scored), settings.get("java", True))
    try:
        items = score_items(
            [r.explanation or "" for r in scored],
            [evil_references(list(refs[r.id]), task, settings) for r in scored],
            bert,
            meteor,
            protocol=protocol,
            spice=settings["spice"],
            spice_jar=settings.get("spice_jar"),
            notes=notes,
        )
        out = summarise(
            items,
            correct,
            meteor,
            labelled=labelled,
            resamples=settings["resamples"],
            level=settings["level"],
            seed=settings["seed"],
            notes=notes,
        )
    finally:
        close_meteor(meteor)
    out["bertscore"] = bertscore_record(bert)
    if protocol == "evil":
        how = "all references" if len(evil_references(["a", "b"], task, settings)) > 1 else "first reference"
        out["evil_references"] = how
        notes.append(
            f"protocol evil: raw strings (no tokenizer), {how} per item, explanation scores x100, as "
            "e-ViL's nlg_eval.py"
        )
        if bert.model != "distilbert-base-uncased":
            notes.append(
                f"e-ViL's BERTScore is distilbert-base-uncased (eval/bertscore=distilbert); this run used "
                f"{out['bertscore']['model']}, so bertscore_f1 and evil_avg_all differ from e-ViL's"
            )
    rows = [{"id": r.id, "correct": c, **item} for r, c, item in zip(scored, correct, items.to_rows(), strict=True)]
    return out, notes, rows
