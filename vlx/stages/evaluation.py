"""The eval stage: predictions.jsonl -> metrics.json (+ confusion matrix and reliability PNGs), comparable with
published numbers.

    vlx stage=eval run=outputs/2026-11-30/12-00-00
    vlx stage=eval run=<run> eval.protocol=evil eval/bertscore=distilbert      # e-ViL's own code and BERTScore
    vlx stage=eval run=<meme run> task.references=/data/hatred/train.jsonl     # Hateful Memes explanations (HatReD)

Classification: accuracy, macro-F1, per-class P/R/F1, confusion matrix; for binary tasks AUROC (from label
probabilities, when the predictions carry `scores`) and binary F1; with `scores`, calibration (ECE, Brier, NLL and
a reliability diagram). Explanations, on the items whose label was right (e-ViL's convention) and on all items:
BLEU-4, METEOR, ROUGE-L, CIDEr, SPICE, BERTScore, e-ViL's combined scores, under `eval.protocol` (coco | evil, see
vlx.metrics.text). A bootstrap interval for every metric (`metrics["intervals"]` says how they were drawn). The
per-item explanation statistics go to explanation_items.jsonl, which `stage=compare` reads. Runs on a CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vlx.errors import ConfigError, writing
from vlx.run.directory import RunDir
from vlx.run.lock import exclusive
from vlx.run.records import Prediction, RunInfo
from vlx.run.store import PredictionStore
from vlx.stages._common import resolved_config
from vlx.tasks.answers import (
    Scoring,
    answer_score,
    answered_label,
    counted_label,
    is_correct,
    text_probabilities,
)
from vlx.tasks.references import check_matches, id_key, read_references
from vlx.tracking import Tracker, tracking

log = logging.getLogger(__name__)

# the headline numbers, in the order the table shows them
HEADLINE = ("n", "unparsed_rate", "accuracy", "macro_f1", "auroc", "binary_f1", "ece", "brier", "nll", "bleu4",
            "meteor", "rouge_l", "cider", "spice", "bertscore_f1", "evil_avg_all", "evil_avg_all_no_spice",
            "evil_global", "evil_global_no_spice", "evil_weight", "all_bleu4", "all_meteor", "all_rouge_l", "all_cider",
            "all_bertscore_f1", "judge_score", "all_judge_score", "human_score", "all_human_score")  # fmt: skip
EVIL_REFERENCES = ("auto", "all", "first")
# the task whose references e-ViL's code passes all of (get_nlg_scores: dtype == "vqa_x"); the first elsewhere
EVIL_ALL_REFERENCES = ("vqax",)


def check_settings(settings: dict[str, Any]) -> None:
    """The `eval` settings that a run would otherwise find wrong only when it scores, at its end."""
    resamples, level = settings.get("resamples"), settings.get("level")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 0:
        raise ConfigError(f"eval.resamples={resamples!r}: use 0 (no intervals) or a number of bootstrap resamples")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ConfigError(f"eval.level={level!r}: use a coverage between 0 and 1, e.g. 0.95")
    from vlx.metrics.text import check_protocol

    check_protocol(settings.get("protocol", "coco"))
    if settings.get("evil_references", "auto") not in EVIL_REFERENCES:
        raise ConfigError(f"eval.evil_references={settings.get('evil_references')!r}: use one of "
                          f"{', '.join(EVIL_REFERENCES)}")  # fmt: skip
    if not isinstance(settings.get("java", True), bool):
        raise ConfigError(f"eval.java={settings.get('java')!r}: use true (METEOR, SPICE and the official PTB "
                          "tokenizer, all Java) or false (none of them: scores named <protocol>_no_java)")  # fmt: skip
    Scoring.from_settings("", settings)  # eval.vqa_rule and eval.unparsed
    bins = settings.get("calibration_bins", 15)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ConfigError(f"eval.calibration_bins={bins!r}: use a number of equal-width bins >= 1, e.g. 15")


def evil_references(refs: list[str], task: str, settings: dict[str, Any]) -> list[str]:
    """The references e-ViL's code scores an item against: all for VQA-X, the first elsewhere (`[[x] for x in
    gt_expl]`); `eval.evil_references` overrides. coco uses them all."""
    if settings.get("protocol", "coco") != "evil":
        return refs
    how = settings.get("evil_references", "auto")
    if how == "all" or (how == "auto" and task in EVIL_ALL_REFERENCES):
        return refs
    return refs[:1]


def intervals_record(settings: dict[str, Any]) -> dict[str, Any]:
    """How every `<metric>_ci` of metrics.json was drawn, for the report and for readers of the file."""
    return {
        "method": "percentile bootstrap over items",
        "resamples": settings["resamples"],
        "level": settings["level"],
        "seed": settings["seed"],
        "classification": "items resampled with replacement from all labelled items",
        "explanations": "resampled within the items each score covers: the correctly labelled items for the e-ViL "
        "scores (bleu4, ..., evil_avg_all), every scored item for all_*; each resample's corpus score is "
        "recomputed (BLEU and METEOR from summed statistics; CIDEr as the mean item CIDEr, document frequencies "
        "held at the scored set's)",
        "evil_global": "resampled over all scored items: each resample's accuracy times the avg_all of its own "
        "correctly labelled items",
    }


def task_info(run_dir: Path, cfg: DictConfig) -> RunInfo:
    """What eval needs to know of the run: task name, labels, positive class. From the run's summary.json when
    vlx wrote it, else from the task in the current config (`task=esnli` for a hand-made predictions file)."""
    info = RunDir(run_dir).run_info()
    if info is not None:
        return info
    task = instantiate(cfg.task)
    log.info("no summary.json in %s: scoring as task %s (labels %s)", run_dir, task.name, ", ".join(task.labels))
    return RunInfo(task=task.name, labels=tuple(task.labels), positive=task.positive)


def evaluate(
    run_dir: Path, info: RunInfo, settings: dict[str, Any], references: str | None = None
) -> dict[str, Any]:
    """Scores a run's predictions; writes metrics.json and confusion_matrix.png into run_dir.

    Args:
        run_dir: the run directory holding predictions.jsonl.
        info: task, labels and positive class (see `task_info`).
        settings: the `eval` config (bertscore, resamples, level, seed, spice).
        references: a references jsonl replacing the predictions' own `refs`, or None.

    Returns:
        metrics.json's content.
    """
    from vlx.metrics.classification import classification_metrics, open_answer_metrics, plot_confusion_matrix

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
        metrics.update(open_answer_metrics(
            [answer_score(r, scoring) for r in labelled], [is_correct(r, any_answer=True) for r in labelled],
            [r.pred is None for r in labelled], **boot,
        ))  # fmt: skip
        notes.append(_open_answer_note(scoring))
    elif labelled:
        bad = next((r for r in labelled if r.pred is not None and r.pred not in labels), None)
        if bad is not None:
            raise ConfigError(f"{run.predictions_file}: id {bad.id} has pred {bad.pred!r}, not one of {labels}")
        scores = [r.scores for r in labelled]
        # the label each answer counts as: the gold one for the other copy of a repeated option, a guess for an
        # unparsed answer under eval.unparsed=guess
        cls, cls_notes = classification_metrics(
            [r.gold for r in labelled], [counted_label(r, scoring) for r in labelled], labels, positive=positive,
            scores=scores if any(s is not None for s in scores) else None,
            unparsed=[r.pred is None for r in labelled], **boot,
        )  # fmt: skip
        metrics.update(cls)
        notes += cls_notes
        metrics.update(_multiple_choice_rules(labelled, scoring, notes))
        cm = cls["confusion_matrix"]
        with writing(run.confusion_matrix_png):  # a full disk: the one line names the file
            plot_confusion_matrix(cm["matrix"], cm["rows"], cm["cols"], run.confusion_matrix_png,
                                  title=f"{info.task} {info.split or ''}".strip())  # fmt: skip
        if all(s is not None for s in scores):
            metrics.update(_calibration(run_dir, info, labelled, labels, positive, settings, notes))
        elif any(s is not None for s in scores):
            notes.append(f"calibration not computed: only {sum(s is not None for s in scores)} of {len(scores)} "
                         "items have label scores")  # fmt: skip
    else:
        notes.append("no gold labels in the predictions: classification metrics skipped")

    # a task without gold labels (HatReD: every meme is hateful) has its explanations scored on all items (all_*)
    pool = labelled or rows
    scored = [r for r in pool if refs.get(r.id)]
    metrics["n_with_references"] = len(scored)
    metrics["n_without_references"] = len(pool) - len(scored)
    if scored and not labelled:
        notes.append("no gold labels: explanations are scored on all items (all_*), none counts as correct")
    if scored:
        text, text_notes = _explanations(run_dir, info, scored, refs, settings, labelled=bool(labelled))
        metrics.update(text)
        notes += text_notes
        if metrics["n_without_references"]:
            notes.append(f"{metrics['n_without_references']} items have no reference explanation and are left out "
                         "of the explanation metrics (evil_global uses the accuracy of the scored items)")  # fmt: skip
    else:
        notes.append(
            "no reference explanations: explanation metrics skipped (Hateful Memes ships none; give HatReD's with "
            "task.references=<jsonl>)"
        )
    if run.ratings_file.is_file():
        metrics.update(_human(run_dir, rows, metrics, settings, notes))
    metrics["intervals"] = intervals_record(settings)
    metrics["notes"] = notes
    run.write_metrics(metrics)  # the judges' numbers stay in their own judge.json (`RunDir.results` adds them)
    for note in notes:
        log.info("note: %s", note)
    log.info("metrics of %s:\n%s", run_dir, format_table(metrics))
    return metrics


def _open_answer_note(scoring: Scoring) -> str:
    common = ("answers normalised as VQA's evaluation does (punctuation, case, number words as digits with none as "
              "0, articles, contractions; NLX-GPT's prep_ans), the prediction too")  # fmt: skip
    if scoring.vqa_rule == "evil":
        return (f"open answers, e-ViL's rule (eval.vqa_rule=evil): accuracy is VQA's soft score min(#annotators who "
                f"gave the answer / 3, 1); an item is right (its explanation scored, and counted in evil_weight) when "
                f"any annotator gave the answer; {common}. e-ViL reads each answer's score from its data files, "
                f"which its repository does not hold: vlx counts all ten answers")  # fmt: skip
    return (f"open answers, NLX-GPT's rule (eval.vqa_rule=nlxgpt): right when the answer is the item's most common "
            f"answer (proc_ans); {common} (NLX-GPT's vqaX.py compares its own model's text unnormalised); "
            f"any_answer_accuracy: any annotator's answer. eval.vqa_rule=evil scores as e-ViL")  # fmt: skip


def _multiple_choice_rules(labelled: list[Prediction], scoring: Scoring, notes: list[str]) -> dict[str, Any]:
    """What the multiple-choice rules did: repeated options, guesses for unparsed answers (notes and numbers)."""
    out: dict[str, Any] = {}
    repeated = [r for r in labelled if r.choices and len(set(r.choices.values())) < len(r.choices)]
    if repeated:
        other_copy = sum(r.pred not in (None, r.gold) and is_correct(r, scoring=scoring) for r in repeated)
        notes.append(f"{len(repeated)} items repeat an option's text: the chosen text is scored, so either copy is "
                     f"right (A-OKVQA's eval_predictions.py); {other_copy} answers chose the gold text's other copy. "
                     "Label scoring sums a repeated option's probability over its copies")  # fmt: skip
        out["repeated_option_items"] = len(repeated)
    unparsed = [r for r in labelled if r.pred is None]
    if scoring.unparsed == "guess":
        guessed = [r for r in unparsed if answered_label(r, scoring) is not None]
        wrong = Scoring(vqa_rule=scoring.vqa_rule, unparsed="wrong", seed=scoring.seed)
        out["guessed"] = len(guessed)
        out["accuracy_unparsed_wrong"] = sum(is_correct(r, scoring=wrong) for r in labelled) / len(labelled)
        notes.append(f"eval.unparsed=guess: {len(guessed)} unparsed answers got a random option of their item "
                     f"(seeded by eval.seed={scoring.seed} and the item id), as ScienceQA's run_gpt3.py does; "
                     f"{sum(is_correct(r, scoring=scoring) for r in guessed)} of the guesses are right. "
                     "accuracy_unparsed_wrong counts them wrong (eval.unparsed=wrong)")  # fmt: skip
        if len(guessed) < len(unparsed):
            notes.append(f"{len(unparsed) - len(guessed)} unparsed rows list no options (written by an older vlx): "
                         "not guessed, counted wrong")  # fmt: skip
    return out


def _explanations(
    run_dir: Path, info: RunInfo, scored: list[Prediction], refs: dict[str, tuple[str, ...]],
    settings: dict[str, Any], labelled: bool,
) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """The explanation metrics of the scored rows under the configured protocol; the per-item statistics go to
    explanation_items.jsonl for stage=compare."""
    from vlx.metrics.bertscore import BertScoreSettings, bertscore_record
    from vlx.metrics.coco import check_java
    from vlx.metrics.text import close_meteor, open_meteor, score_items, summarise

    protocol, notes = settings.get("protocol", "coco"), []
    check_java(settings.get("java", True))  # before BERTScore's model loads
    bert = BertScoreSettings(**settings["bertscore"])
    task = str(info.task)
    correct = [is_correct(r, scoring=Scoring.from_settings(task, settings)) for r in scored]
    meteor = open_meteor(len(scored), settings.get("java", True))
    try:
        items = score_items([r.explanation or "" for r in scored],
                            [evil_references(list(refs[r.id]), task, settings) for r in scored],
                            bert, meteor, protocol=protocol, spice=settings["spice"],
                            spice_jar=settings.get("spice_jar"), notes=notes)  # fmt: skip
        out = summarise(items, correct, meteor, labelled=labelled, resamples=settings["resamples"],
                        level=settings["level"], seed=settings["seed"], notes=notes)  # fmt: skip
    finally:
        close_meteor(meteor)
    out["bertscore"] = bertscore_record(bert)
    if protocol == "evil":
        how = "all references" if len(evil_references(["a", "b"], task, settings)) > 1 else "first reference"
        out["evil_references"] = how
        notes.append(f"protocol evil: raw strings (no tokenizer), {how} per item, explanation scores x100, as "
                     "e-ViL's nlg_eval.py")  # fmt: skip
        if bert.model != "distilbert-base-uncased":
            notes.append(
                f"e-ViL's BERTScore is distilbert-base-uncased (eval/bertscore=distilbert); this run used "
                f"{out['bertscore']['model']}, so bertscore_f1 and evil_avg_all differ from e-ViL's"
            )
    rows = [{"id": r.id, "correct": c, **item} for r, c, item in zip(scored, correct, items.to_rows(),
            strict=True)]  # fmt: skip
    PredictionStore(RunDir(run_dir).explanation_items).rewrite(rows)
    return out, notes


def _calibration(
    run_dir: Path, info: RunInfo, labelled: list[Prediction], labels: tuple[str, ...],
    positive: str | None, settings: dict[str, Any], notes: list[str],
) -> dict[str, Any]:  # fmt: skip
    """ECE, Brier, NLL with intervals and reliability.png, from the label probabilities of decode=score."""
    from vlx.metrics.calibration import calibration_metrics, plot_reliability

    # multiple-choice items are scored over their own options: labels they do not offer have probability 0
    # an option repeated under two letters is one answer: its probability is its copies' sum (on the gold letter)
    cal, cal_notes = calibration_metrics(
        [r.gold for r in labelled], [text_probabilities(r.scores or {}, r.choices, r.gold) for r in labelled],
        labels, positive=positive,
        bins=settings.get("calibration_bins", 15), resamples=settings["resamples"], level=settings["level"],
        seed=settings["seed"], missing_as_zero=True,
    )  # fmt: skip
    notes += cal_notes
    png = RunDir(run_dir).reliability_png
    with writing(png):
        plot_reliability(cal["calibration"]["bins"], png, title=f"{info.task} {info.split or ''}".strip())
    return cal


def _human(
    run_dir: Path, rows: list[Prediction], metrics: dict[str, Any], settings: dict[str, Any], notes: list[str]
) -> dict[str, Any]:
    """e-ViL's human score and agreement from the ratings stage=review collected."""
    from vlx.judging import judge_names, read_verdicts
    from vlx.metrics.text import run_item_metrics
    from vlx.run.ratings import RatingStore, human_metrics

    run = RunDir(run_dir)
    ratings = RatingStore(run.ratings_file).latest()
    judges = judge_names(run_dir)
    judge = read_verdicts(run_dir, judges[0]) if len(judges) == 1 else None
    scoring = Scoring.from_settings(metrics["task"], settings)
    out = human_metrics(ratings, {r.id: is_correct(r, scoring=scoring) for r in rows}, judge=judge,
                        item_metrics=run_item_metrics(run.explanation_items, metrics), resamples=settings["resamples"],
                        level=settings["level"], seed=settings["seed"])  # fmt: skip
    notes.append(f"human ratings: {out['human_ratings']} by {len(out['human_raters'])} raters; human_score is "
                 "e-ViL's S_E (mean of yes 1, weak yes 2/3, weak no 1/3, no 0 over the rated items whose label is "
                 "right, raters averaged per item)")  # fmt: skip
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


def format_table(metrics: dict[str, Any]) -> str:
    """The headline metrics as a two-column text table, with confidence intervals where computed."""
    lines = []
    for key in HEADLINE:
        value = metrics.get(key)
        if value is None:
            continue
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        if metrics.get(f"{key}_ci"):
            low, high = metrics[f"{key}_ci"]
            text += f"  [{low:.4f}, {high:.4f}]"
        lines.append(f"  {key:<14} {text}")
    return "\n".join(lines)


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics (what a sweeper optimises and W&B's summary shows)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_to_tracker(tracker: Tracker, metrics: dict[str, Any], run_dir: Path) -> None:
    run = RunDir(run_dir)
    tracker.log_metrics(flat_metrics(metrics), metrics.get("per_class") or {}, run.confusion_matrix_png)
    if run.reliability_png.is_file():
        tracker.log_image("reliability_diagram", run.reliability_png)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Scores `cfg.run` (or this run's directory); returns the scalar metrics."""
    run_dir = RunDir.find(cfg.run, "run").path if cfg.run else Path(cfg.paths.output_dir)
    settings = OmegaConf.to_container(cfg.eval, resolve=True)
    check_settings(settings)
    with exclusive(run_dir):  # not while an infer run still writes there
        info = task_info(run_dir, cfg)
        logger_cfg = OmegaConf.to_container(cfg.logger, resolve=True) if cfg.logger else None
        with tracking(logger_cfg, resolved_config(cfg), name=f"eval-{run_dir.name}") as tracker:
            metrics = evaluate(run_dir, info, settings, references=cfg.task.get("references"))
            log_to_tracker(tracker, metrics, run_dir)
    return flat_metrics(metrics)
