"""The eval stage: predictions.jsonl -> metrics.json (+ confusion matrix and reliability PNGs), comparable with
published numbers.

    vlx stage=eval stage.run=outputs/2026-11-30/12-00-00
    vlx stage=eval stage.run=<run> eval.protocol=evil eval/bertscore=distilbert   # e-ViL's own code and BERTScore
    vlx stage=eval stage.run=<meme run> task.references=/data/hatred/train.jsonl  # Hateful Memes explanations (HatReD)

Classification: accuracy, macro-F1, per-class P/R/F1, confusion matrix; for binary tasks AUROC (from label
probabilities, when the predictions carry `scores`) and binary F1; with `scores`, calibration (ECE, Brier, NLL and
a reliability diagram). Explanations, on the items whose label was right (e-ViL's convention) and on all items:
BLEU-4, METEOR, ROUGE-L, CIDEr, SPICE, BERTScore, e-ViL's combined scores, under `eval.protocol` (coco | evil, see
vlx.metrics.text). A bootstrap interval for every metric (`metrics["intervals"]` says how they were drawn). The
per-item explanation statistics go to explanation_items.jsonl, which `stage=compare` reads. Runs on a CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from vlx.config_data import plain_dict
from vlx.config_schema import check_section
from vlx.errors import writing
from vlx.metrics.registry import LOG, WANDB, intervals_record, protocol_of
from vlx.metrics.values import format_table, read_values, row_metric_values, scalars
from vlx.run.directory import RunDir
from vlx.run.lock import exclusive
from vlx.run.records import Prediction, RunInfo
from vlx.run.store import JsonlStore
from vlx.stages._common import resolved_config
from vlx.tasks.answers import (
    Scoring,
    is_correct,
)
from vlx.tasks.references import check_matches, id_key, read_references
from vlx.tracking import Tracker, tracking

log = logging.getLogger(__name__)


def check_settings(settings: dict[str, Any]) -> None:
    """The `eval` settings that a run would otherwise find wrong only when it scores, at its end."""
    from vlx.metrics.text import check_protocol

    check_section("eval", {"resamples": None, "level": None, **settings})  # the two have no default
    check_protocol(protocol_of(settings))
    Scoring.from_settings("", settings)  # eval.vqa_rule and eval.unparsed


def task_info(run_dir: Path, cfg: DictConfig) -> RunInfo:
    """What eval needs to know of the run: task name, labels, positive class. From the run's summary.json when
    vlx wrote it, else from the task in the current config (`task=esnli` for a hand-made predictions file)."""
    info = RunDir(run_dir).run_info()
    if info is not None:
        return info
    task = instantiate(cfg.task)
    log.info("no summary.json in %s: scoring as task %s (labels %s)", run_dir, task.name, ", ".join(task.labels))
    return RunInfo(task=task.name, labels=tuple(task.labels), positive=task.positive)


def evaluate(run_dir: Path, info: RunInfo, settings: dict[str, Any], references: str | None = None) -> dict[str, Any]:
    """Scores a run's predictions; writes metrics.json and confusion_matrix.png into run_dir.

    Args:
        run_dir: the run directory holding predictions.jsonl.
        info: task, labels and positive class (see `task_info`).
        settings: the `eval` config (bertscore, resamples, level, seed, spice).
        references: a references jsonl replacing the predictions' own `refs`, or None.

    Returns:
        metrics.json's content.
    """
    from vlx.metrics.explanations import rows_explanation_scores
    from vlx.metrics.labels import calibration_scores, label_scores, open_answer_scores

    run = RunDir(run_dir)
    rows = run.predictions("score")
    refs = _references(rows, references, run_dir)  # a file matching no item is refused before anything is written
    labels, positive = info.labels, info.positive
    boot = {"resamples": settings["resamples"], "level": settings["level"], "seed": settings["seed"]}
    metrics: dict[str, Any] = {"task": info.task, "split": info.split, "predictions": len(rows)}
    notes: list[str] = []

    labelled = [r for r in rows if r.gold is not None]
    scoring = Scoring.from_settings(str(info.task), settings)
    metrics["scoring"] = scoring.record()
    if labelled and not labels:  # open answers (VQA-X): scored by eval.vqa_rule
        _add(metrics, notes, open_answer_scores(labelled, scoring, **boot))
    elif labelled:
        _add(
            metrics, notes, label_scores(labelled, labels, positive, scoring, source=str(run.predictions_file), **boot)
        )
        _plot_confusion_matrix(run_dir, info, metrics["confusion_matrix"])
        _add(
            metrics,
            notes,
            calibration_scores(labelled, labels, positive, bins=settings.get("calibration_bins", 15), **boot),
        )
        if "calibration" in metrics:
            _plot_reliability(run_dir, info, metrics["calibration"]["bins"])
    else:
        notes.append("no gold labels in the predictions: classification metrics skipped")

    # a task without gold labels (HatReD: every meme is hateful) has its explanations scored on all items (all_*)
    *found, items = rows_explanation_scores(labelled or rows, refs, scoring, str(info.task), settings, bool(labelled))
    _add(metrics, notes, found)
    if items:
        JsonlStore(run.explanation_items).rewrite(items)  # the per-item statistics, for stage=compare
    if run.ratings_file.is_file():
        metrics.update(_human(run_dir, rows, metrics, settings, notes))
    metrics.update(row_metrics(rows, boot))
    metrics["intervals"] = intervals_record(**boot)
    metrics["notes"] = notes
    run.write_metrics(metrics)  # the judges' numbers stay in their own judge.json (`RunDir.results` adds them)
    for note in notes:
        log.info("note: %s", note)
    log.info("metrics of %s:\n%s", run_dir, format_table(read_values(metrics, LOG)))
    return metrics


def _add(metrics: dict[str, Any], notes: list[str], found: Sequence[Any]) -> None:
    """A library function's (metrics, notes) into the run's."""
    metrics.update(found[0])
    notes += found[1]


def _title(info: RunInfo) -> str:
    return f"{info.task} {info.split or ''}".strip()


def _plot_confusion_matrix(run_dir: Path, info: RunInfo, cm: dict[str, Any]) -> None:
    from vlx.metrics.classification import plot_confusion_matrix

    png = RunDir(run_dir).confusion_matrix_png
    with writing(png):  # a full disk: the one line names the file
        plot_confusion_matrix(cm["matrix"], cm["rows"], cm["cols"], png, title=_title(info))


def _plot_reliability(run_dir: Path, info: RunInfo, bins: list[dict[str, Any]]) -> None:
    from vlx.metrics.calibration import plot_reliability

    png = RunDir(run_dir).reliability_png
    with writing(png):
        plot_reliability(bins, png, title=_title(info))


def _human(
    run_dir: Path, rows: list[Prediction], metrics: dict[str, Any], settings: dict[str, Any], notes: list[str]
) -> dict[str, Any]:
    """e-ViL's human score and agreement from the ratings stage=review collected."""
    from vlx.judging.verdicts import judge_names, read_verdicts
    from vlx.metrics.human import human_metrics
    from vlx.metrics.text import run_item_metrics
    from vlx.run.ratings import RatingStore

    run = RunDir(run_dir)
    ratings = RatingStore(run.ratings_file).latest()
    judges = judge_names(run_dir)
    judge = read_verdicts(run_dir, judges[0]) if len(judges) == 1 else None
    scoring = Scoring.from_settings(metrics["task"], settings)
    out = human_metrics(
        ratings,
        {r.id: is_correct(r, scoring=scoring) for r in rows},
        judge=judge,
        item_metrics=run_item_metrics(run.explanation_items, metrics),
        resamples=settings["resamples"],
        level=settings["level"],
        seed=settings["seed"],
    )
    notes.append(
        f"human ratings: {out['human_ratings']} by {len(out['human_raters'])} raters; human_score is "
        "e-ViL's S_E (mean of yes 1, weak yes 2/3, weak no 1/3, no 0 over the rated items whose label is "
        "right, raters averaged per item)"
    )
    return out


def _references(rows: list[Prediction], path: str | None, run_dir: Path) -> dict[str, tuple[str, ...]]:
    """Reference explanations by prediction id: from a file when given, else those the predictions carry.

    Raises:
        DataError: the file matches none of the run's ids (see `check_matches`).
    """
    if path is None:
        return {r.id: r.refs for r in rows}
    from_file = read_references(path)
    check_matches([r.id for r in rows], from_file, path, f"the {len(rows)} items of run {run_dir}")
    return {r.id: from_file.get(id_key(r.id), ()) for r in rows}


def row_metrics(rows: list[Prediction], boot: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's keys of the registry's row metrics (a function over prediction rows, with its interval)."""
    out: dict[str, Any] = {}
    for value in row_metric_values(rows, **boot).values():
        out.update(value.to_json())
    return out


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers the registry shows in W&B (W&B's summary; what a sweeper optimises)."""
    return scalars(read_values(metrics, WANDB))


def log_to_tracker(tracker: Tracker, metrics: dict[str, Any], run_dir: Path) -> None:
    """metrics.json's numbers, per-class table, confusion matrix and reliability diagram to W&B."""
    run = RunDir(run_dir)
    tracker.log_metrics(flat_metrics(metrics), metrics.get("per_class") or {}, run.confusion_matrix_png)
    if run.reliability_png.is_file():
        tracker.log_image("reliability_diagram", run.reliability_png)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Scores `stage.run` (or this run's directory); returns the scalar metrics."""
    run_dir = RunDir.find(cfg.stage.run, "stage.run").path if cfg.stage.run else Path(cfg.paths.output_dir)
    settings = plain_dict(cfg.eval, "eval")
    check_settings(settings)
    with exclusive(run_dir):  # not while an infer run still writes there
        info = task_info(run_dir, cfg)
        logger_cfg = plain_dict(cfg.logger, "logger") if cfg.logger else None
        with tracking(logger_cfg, resolved_config(cfg), name=f"eval-{run_dir.name}") as tracker:
            metrics = evaluate(run_dir, info, settings, references=cfg.task.get("references"))
            log_to_tracker(tracker, metrics, run_dir)
    return flat_metrics(metrics)
