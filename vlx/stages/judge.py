"""The judge stage: a local model judges the explanations of a finished run on e-ViL's four-level scale.

    vlx stage=judge stage.run=outputs/2026-11-30/12-00-00 judge_model=llava quant=4bit   # LLaVA-v1.6-Mistral-7B, 4-bit
    vlx stage=judge stage.run=<run dir> judge_model=hf judge_model.checkpoint=/models/x  # any model vlx loads
    vlx stage=judge stage.run=<run dir> judge_model=tiny_llava                           # a tiny model, on a CPU

For every prediction the judge sees the item's image, its text, the predicted label and the explanation, and is
asked whether the explanation justifies the label: yes / weak yes / weak no / no (`vlx.judging.prompts`). Its
greedy answer is parsed (`stage.decode=generate`), or the most likely of the four answers taken
(`stage.decode=score`).

Writes into the judged run's directory, `<run>/judgements/<judge>/` (one folder per judge, so several coexist):
`verdicts.jsonl` (one row per item, appended batch by batch: a stopped run continues where it stopped),
`prompt.txt` (the question as the judge got it), `judge_config.json` (what made the verdicts: a run continues only
with the same) and `judge.json` (the score, its bootstrap interval, the verdict counts, throughput). The run's
metrics.json (stage=eval's) is left as it is: readers (report, compare, review) show each judge's numbers beside it
(`vlx.run.directory.RunDir.results`), so several judges of one run keep theirs.

The judge is the one model this stage loads: `quant=` quantizes it, `judge_model.<key>=<value>` sets a key of its
conf/model YAML. Only image-text models load today (vlx's adapters are VLM adapters): a text-only judge is not
supported.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vlx import distributed
from vlx._runtime import set_cpu_threads
from vlx.config_data import plain_dict
from vlx.config_schema import RULES
from vlx.engine.loop import Answer, LoopResult, LoopSettings, run_batches
from vlx.errors import ConfigError, writing
from vlx.judging.prompts import ANSWER_TEXTS, JUDGE_PROMPT_VERSION, JUDGE_PROMPTS, prompt_kind
from vlx.judging.verdicts import item_score, parse_verdict
from vlx.metrics.judge_scores import judge_scores
from vlx.models.hf import VLMAdapter
from vlx.models.loading import check_adapter_path, resolve_checkpoint
from vlx.models.tiny import tiny_checkpoint
from vlx.run.directory import RunDir, read_verdicts
from vlx.run.lock import exclusive
from vlx.run.records import VERDICTS, Prediction, RunInfo, Verdict
from vlx.run.store import JsonlStore, check_writable, read_json, unique_rows, write_json
from vlx.stages import evaluation
from vlx.stages._common import build_quantization, config_choices, resolved_config
from vlx.tasks import Task
from vlx.tasks.answers import Scoring, is_correct
from vlx.tasks.images import check_images
from vlx.tasks.items import Example
from vlx.tracking import tracking

log = logging.getLogger(__name__)

DECODES = RULES["stage.decode"].choices  # generate | score
# judge model keys that change no verdict (placement and how attention is computed: same outputs, as for infer)
NEUTRAL_MODEL_KEYS = frozenset({"device_map", "attn_implementation", "compile"})
# the W&B table: each verdict beside its prediction
TABLE_COLUMNS = ("id", "text", "gold", "pred", "explanation", "verdict", "judge_score", "judge_raw")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def validate(cfg: DictConfig) -> None:
    """Settings checked before anything is read or loaded."""
    if not cfg.stage.get("run"):
        raise ConfigError("stage=judge needs stage.run=<run dir>: the directory of a finished infer run to judge")
    if not cfg.get("judge_model"):
        raise ConfigError(
            "stage=judge needs judge_model=<model>: the conf/model option that judges, e.g. judge_model=llava "
            "quant=4bit (judge_model=tiny_llava tries it on a CPU)"
        )
    if distributed.world_size() > 1:  # every rank would judge every item into the one verdicts file
        raise ConfigError(
            "stage=judge runs in one process: start it with `vlx ...`, not under accelerate launch or torchrun "
            "(judge_model.device_map=auto already spreads a judge too large for one GPU over several)"
        )
    stage = cfg.stage  # its values against their rules: vlx.config_schema, before the stage runs
    if stage.judge_name is not None and not _NAME.match(str(stage.judge_name)):
        raise ConfigError(f"stage.judge_name={stage.judge_name!r}: use a folder name (letters, digits, . _ -)")
    evaluation.check_settings(plain_dict(cfg.eval, "eval"))


def judge_option(cfg: DictConfig) -> str:
    """The `judge_model` option that judges (llava), as Hydra recorded the choice."""
    return config_choices().get("judge_model") or str(cfg.judge_model.get("_target_", "judge_model"))


def judge_model(cfg: DictConfig) -> DictConfig:
    """The judge's model config, as Hydra composed it: conf/judge_model/<option>.yaml (conf/model/<option>.yaml),
    `judge_model.*` from the command line on top (Hydra refuses a key the option does not have).

    Raises:
        ConfigError: a required key of the option (`???`: judge_model.checkpoint under judge_model=hf) not set.
    """
    node = cfg.judge_model
    if missing := sorted(OmegaConf.missing_keys(node)):
        key = missing[0]  # the full key: judge_model.checkpoint
        raise ConfigError(
            f"judge_model={judge_option(cfg)}: {key} is not set; add {key}=... to the command (e.g. "
            f"judge_model.checkpoint=<hub id or folder> for judge_model=hf)"
        )
    return node


@contextlib.contextmanager
def as_judge(option: str) -> Iterator[None]:
    """The model code's config errors, which name its keys model.*, as the judge's (judge_model.*)."""
    try:
        yield
    except ConfigError as err:
        raise ConfigError(
            f"judge_model={option}: {err} (for the judge, a model.<key> named here is judge_model.<key>)"
        ) from err


def read_predictions(run_path: Path) -> tuple[list[Prediction], RunInfo]:
    """The run's predictions and what the run was (summary.json's `run`, empty for a hand-made file).

    Raises:
        ConfigError: no predictions.jsonl, an empty one, or not one explanation in it.
    """
    run = RunDir(run_path)
    rows = run.predictions("judge")
    if not any(r.has_explanation for r in rows):
        raise ConfigError(
            f"{run.predictions_file}: none of its {len(rows)} predictions has an explanation, so there is nothing to "
            f"judge (decode=score writes labels only); judge a run that explains, e.g. one made with "
            f"decode=generate or decode=score_then_explain"
        )
    return rows, run.run_info() or RunInfo()


def run(cfg: DictConfig) -> dict[str, Any]:
    """Judges `stage.run` with `judge_model`; returns judge.json's scalar numbers."""
    validate(cfg)
    run_path = RunDir.find(cfg.stage.run, "stage.run").path
    model_cfg = judge_model(cfg)
    set_cpu_threads(cfg.get("cpu_threads", "auto"), tiny=model_cfg.get("tiny") is not None)  # the judge's size
    with as_judge(judge_option(cfg)):  # a folder that is not there: before anything is read or written
        check_adapter_path(model_cfg.get("adapter"))
        checkpoint = str(model_cfg.checkpoint)
        if model_cfg.get("tiny") is not None:  # the tiny model's own folder: built there first
            checkpoint = tiny_checkpoint(checkpoint, model_cfg.tiny, model_cfg.tiny_dir)
        resolve_checkpoint(checkpoint)
    name = str(cfg.stage.judge_name or judge_option(cfg))
    with exclusive(run_path):  # not while an infer run still writes its predictions
        rows, info = read_predictions(run_path)
    folder = RunDir(run_path).judge_dir(name)
    logger_cfg = plain_dict(cfg.logger, "logger") if cfg.logger else None
    config = {**resolved_config(cfg), "judge_model": plain_dict(model_cfg, "judge_model")}
    with exclusive(folder), tracking(logger_cfg, config, name=f"judge-{run_path.name}-{name}") as tracker:
        summary, verdicts = judge_run(cfg, run_path, folder, name, model_cfg, rows, info)
        tracker.log_summary(summary)
        by_id = {r.id: r for r in rows}
        tracker.log_table(
            "judge_verdicts",
            TABLE_COLUMNS,
            [
                [v.id, by_id[v.id].text, by_id[v.id].gold, v.pred, v.explanation, v.verdict, v.score, v.raw]
                for v in verdicts
            ],
        )
    return {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def output_config(cfg: DictConfig, name: str, model_cfg: DictConfig, prompt: str) -> dict[str, Any]:
    """What makes the verdicts (judge_config.json): a stopped judge run continues only with the same."""
    model = {k: v for k, v in plain_dict(model_cfg, "judge_model").items() if k not in NEUTRAL_MODEL_KEYS}
    quant = plain_dict(cfg.quant, "quant") if cfg.quant else None
    return {
        "judge": name,
        "prompt_version": JUDGE_PROMPT_VERSION,
        "prompt": prompt,
        "decode": cfg.stage.decode,
        "max_new_tokens": cfg.stage.max_new_tokens,
        "judge_model": model,
        "quant": quant,
    }


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def check_continuable(
    run: RunDir, name: str, done: list[Verdict], current: dict[str, Any], predictions: dict[str, Prediction]
) -> None:
    """Refuses to add verdicts to a file made by another judge, prompt or setting, or of other predictions.

    Raises:
        ConfigError: the differences, and what to do.
    """
    folder, verdicts = run.judge_dir(name), run.verdicts_file(name)
    remedy = (
        f"judge with the same settings, write the new verdicts under another name with "
        f"stage.judge_name=<name>, or delete {folder} to judge again"
    )
    other = next(
        (r for r in done if r.prompt_version != current["prompt_version"] or r.judge != current["judge"]), None
    )
    if other is not None:
        raise ConfigError(
            f"{verdicts} holds verdicts of judge {other.judge!r} with prompt version "
            f"{other.prompt_version!r} (id {other.id}), and this run is judge {current['judge']!r} with "
            f"prompt version {current['prompt_version']!r}: they cannot be mixed; {remedy}"
        )
    path = run.judge_config_file(name)
    if done and path.is_file():  # (a run that stopped before its first verdict left nothing to continue)
        saved, now = _flat(read_json(path, "written when the judging began")), _flat(current)
        diff = [
            (
                "prompt: its text differs (see prompt.txt)"
                if k == "prompt"
                else f"{k}: {saved.get(k)!r} (saved) vs {now.get(k)!r} (now)"
            )
            for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k)
        ]
        if diff:
            raise ConfigError(
                f"{folder} holds verdicts made with other settings, so they cannot be continued: "
                + "; ".join(diff)
                + f". To go on: {remedy}"
            )
    now = {i: (r.pred, r.explanation) for i, r in predictions.items()}
    changed = [r.id for r in done if now.get(r.id) != (r.pred, r.explanation)]
    if changed:
        shown = ", ".join(map(str, changed[:5])) + (", ..." if len(changed) > 5 else "")
        raise ConfigError(
            f"{verdicts} judged predictions that are no longer the run's ({len(changed)} "
            f"items: {shown}); delete {folder} to judge the run's predictions again"
        )


def verdict(
    item: Prediction,
    name: str,
    answer: str | None,
    probs: dict[str, float] | None = None,
    said: str | None = None,
    note: str | None = None,
) -> Verdict:
    """The judge's verdict on `item`: read from the judge's `answer` (or `said`, for items not put to it), its
    e-ViL score, the raw answer, and what was judged."""
    if answer is not None:
        said = parse_verdict(answer)
    return Verdict(
        id=item.id,
        verdict=said,
        score=item_score(said),
        raw=answer,
        correct=is_correct(item) if item.gold is not None else None,
        pred=item.pred,
        explanation=item.explanation,
        judge=name,
        prompt_version=JUDGE_PROMPT_VERSION,
        probs=probs,
        note=note,
    )


def unasked(item: Prediction, name: str) -> Verdict | None:
    """The verdict on an item the judge is not asked about, or None: no predicted label leaves nothing to justify
    (no verdict); an empty explanation justifies nothing (no)."""
    if item.pred is None:
        return verdict(item, name, None, note="no predicted label: nothing to justify, not asked")
    if not item.has_explanation:
        return verdict(item, name, None, said="no", note="empty explanation: scored no, not asked")
    return None


def as_example(item: Prediction, line: int, source: Path) -> Example:
    """A prediction as the item the judge is asked about: its image and text, the label and explanation as fields of
    the judge's prompt."""
    return Example(
        id=item.id,
        image=Path(str(item.image)),
        text=item.text or "",
        label=None,
        source=f"{source}:{line}",
        fields=(("pred", str(item.pred)), ("explanation", str(item.explanation).strip())),
    )


def judge_run(
    cfg: DictConfig,
    run_path: Path,
    folder: Path,
    name: str,
    model_cfg: DictConfig,
    rows: list[Prediction],
    info: RunInfo,
) -> tuple[dict[str, Any], list[Verdict]]:
    """Judges the items not yet judged in `folder`, then writes judge.json; returns it and every verdict."""
    labels = info.labels or {str(v) for r in rows for v in (r.gold, r.pred) if v is not None}
    kind = prompt_kind(labels)
    prompt = JUDGE_PROMPTS[kind]
    run = RunDir(run_path)
    store = open_verdicts(run, name, output_config(cfg, name, model_cfg, prompt), rows)
    rules, todo = items_to_judge(store, rows, name, run.predictions_file)
    todo, skipped = check_images(todo, cfg.task.get("on_bad_image", "fail"), BAD_IMAGE_REMEDY)
    # the judge loads before the first row is written: one that fails to load leaves no file behind that only its
    # settings may continue
    model = load_judge(cfg, name, model_cfg, len(todo)) if todo else None
    if rules:  # items with nothing to ask the judge about
        store.append(rules)
    loop = ask(cfg, name, model, prompt, store, todo, rows) if model is not None else LoopResult()
    ordered = finish_verdicts(store, rows)
    summary = summarize(
        as_eval(ordered, rows, cfg, info),
        cfg,
        name,
        model_cfg,
        info,
        kind,
        len(todo),
        loop.seconds,
        skipped + loop.skipped,
    )
    if loop.batch_size is not None:
        summary["batch_size"] = loop.batch_size
    run.write_judge_results(name, summary)
    score = "n/a" if summary["judge_score"] is None else f"{summary['judge_score']:.3f}"
    log.info(
        "judge %s: judge_score %s on %d correctly labelled items, all_judge_score %s on %d; %d unparsed; %s",
        name,
        score,
        summary["judge_n"],
        _fmt(summary["all_judge_score"]),
        summary["all_judge_n"],
        summary["unparsed"],
        folder,
    )
    return summary, ordered


# what to do about a judged item whose image is missing or undecodable
BAD_IMAGE_REMEDY = (
    "The judge needs the images the run predicted on: put them back at that path, or run with "
    "task.on_bad_image=skip to leave such items unjudged"
)


def open_verdicts(run: RunDir, name: str, current: dict[str, Any], rows: list[Prediction]) -> JsonlStore:
    """Judge `name`'s verdicts file, checked to be continuable with `current` settings (judge_config.json, written
    with prompt.txt as the judging begins)."""
    store = JsonlStore(run.verdicts_file(name))
    check_writable(store.path)
    check_continuable(run, name, read_verdicts(store, repair=True), current, {r.id: r for r in rows})
    write_json(run.judge_config_file(name), current)
    with writing(run.judge_prompt_file(name)):
        run.judge_prompt_file(name).write_text(current["prompt"] + "\n", encoding="utf-8")
    return store


def items_to_judge(
    store: JsonlStore, rows: list[Prediction], name: str, source: Path
) -> tuple[list[Verdict], list[Example]]:
    """Of the predictions not yet in `store`: the verdicts of those not put to the judge (`unasked`), and the
    others as the items the judge is asked about."""
    finished = store.done_ids()
    if finished:
        log.info("resuming: %d of %d items already judged in %s", len(finished), len(rows), store.path)
    left = [r for r in rows if r.id not in finished]
    rules = [row for r in left if (row := unasked(r, name)) is not None]
    ruled = {r.id for r in rules}
    line = {r.id: i for i, r in enumerate(rows, start=1)}
    return rules, [as_example(r, line[r.id], source) for r in left if r.id not in ruled]


def load_judge(cfg: DictConfig, name: str, model_cfg: DictConfig, items: int) -> VLMAdapter:
    """The judge's adapter, quantized as `cfg.quant` says."""
    spec = plain_dict(model_cfg, "judge_model")
    log.info("judge %s: %s (%s), %d items to judge", name, spec["checkpoint"], spec["_target_"], items)
    # partial first: Hydra would turn the BitsAndBytesConfig (a dataclass) into a config node
    with as_judge(judge_option(cfg)):
        model = instantiate(spec, _partial_=True)(quantization=build_quantization(cfg.quant))
    return model


def judge_task(name: str, prompt: str) -> Task:
    """The judge's question as a task: its prompt is the question about each item, its labels the four verdicts,
    each answered as ANSWER_TEXTS writes it (what decode=score scores)."""
    questions = Task(
        name=f"judge-{name}", split="verdicts", labels=VERDICTS, prompt=prompt, answer="{Label} {explanation}"
    )
    assert all(questions.label_text(v) == ANSWER_TEXTS[v] for v in VERDICTS)
    return questions


def ask(
    cfg: DictConfig,
    name: str,
    model: VLMAdapter,
    prompt: str,
    store: JsonlStore,
    todo: list[Example],
    rows: list[Prediction],
) -> LoopResult:
    """Puts `todo` to the judge batch by batch, appending each batch's verdicts to `store` (greedy: one answer)."""
    by_id = {r.id: r for r in rows}
    settings = LoopSettings(
        decode=cfg.stage.decode,
        generation={"do_sample": False, "max_new_tokens": int(cfg.stage.max_new_tokens)},
        batch_size=cfg.batch_size,
        batching=cfg.batching,
        seed=cfg.seed,
        workers=cfg.loader_workers,
        on_bad_image=cfg.task.get("on_bad_image", "fail"),
    )

    def row(answer: Answer) -> Verdict:
        return verdict(by_id[answer.example.id], name, answer.text, answer.scores)

    return run_batches(
        model,
        judge_task(name, prompt),
        todo,
        store,
        row,
        settings,
        desc=f"judge {name}",
        total=len(rows),
        in_this_run="answered by the judge in this run",
        rows_name="verdicts",
    )


def finish_verdicts(store: JsonlStore, rows: list[Prediction]) -> list[Verdict]:
    """Every verdict, once, in the run's order (the file rewritten so when batching by length shuffled it)."""
    verdicts = unique_rows(read_verdicts(store), store.path)
    order = {r.id: i for i, r in enumerate(rows)}
    ordered = sorted(verdicts, key=lambda r: order.get(r.id, len(order)))
    if ordered != verdicts:  # batched by length: back into the run's order
        store.rewrite(ordered)
    return ordered


def as_eval(verdicts: list[Verdict], rows: list[Prediction], cfg: DictConfig, info: RunInfo) -> list[Verdict]:
    """The verdicts with `correct` as eval counts it, under the run's own scoring rule (VQA-X's soft score,
    ScienceQA's guesses): S_E covers those items. The verdict rows keep what was judged."""
    settings = plain_dict(cfg.eval, "eval")
    scoring = Scoring.from_settings(str(info.task or cfg.task.name), settings)
    by_id = {r.id: r for r in rows}
    return [
        replace(v, correct=is_correct(by_id[v.id], scoring=scoring)) if v.correct is not None and v.id in by_id else v
        for v in verdicts
    ]


def summarize(
    verdicts: list[Verdict],
    cfg: DictConfig,
    name: str,
    model_cfg: DictConfig,
    info: RunInfo,
    kind: str,
    asked_now: int,
    seconds: float,
    skipped: list[dict[str, str]],
) -> dict[str, Any]:
    """judge.json: the scores with their intervals, the counts, the judge and the prompt, throughput."""
    settings = plain_dict(cfg.eval, "eval")
    asked = [r for r in verdicts if r.raw is not None]
    unparsed = [r for r in asked if r.verdict is None]
    counts = {v: sum(r.verdict == v for r in verdicts) for v in VERDICTS}
    spec = plain_dict(model_cfg, "judge_model")
    notes = []
    if unparsed:
        notes.append(
            f"{len(unparsed)} of {len(asked)} answers say no verdict that vlx can read: they are left out "
            f"of the scores (their raw text is in {RunDir.VERDICTS})"
        )
    if not any(r.correct is not None for r in verdicts):
        notes.append(
            "no gold labels: judge_score (correctly labelled items, e-ViL's S_E) is undefined; "
            "all_judge_score covers every judged item"
        )
    empty = sum((r.note or "").startswith("empty explanation") for r in verdicts)
    if empty:
        notes.append(f"{empty} items have an empty explanation: scored no without asking the judge")
    summary: dict[str, Any] = {
        "judge": name,
        "judge_model": {
            "option": judge_option(cfg),
            "checkpoint": spec.get("checkpoint"),
            "adapter": spec.get("adapter"),
            "class": spec.get("_target_"),
        },
        "quant": plain_dict(cfg.quant, "quant") if cfg.quant else None,
        "prompt_version": JUDGE_PROMPT_VERSION,
        "prompt_kind": kind,
        "decode": cfg.stage.decode,
        "judged_run": {k: getattr(info, k) for k in ("task", "split", "model", "checkpoint", "adapter", "shots")},
        "items": len(verdicts),
        "asked": len(asked),
        "verdicts": counts,
        "unparsed": len(unparsed),
        "unparsed_rate": len(unparsed) / len(asked) if asked else None,
        "no_label": sum((r.note or "").startswith("no predicted label") for r in verdicts),
        "empty_explanations": empty,
        **judge_scores(verdicts, settings["resamples"], settings["level"], settings["seed"]),
        "level": settings["level"],
        "resamples": settings["resamples"],
        "new_items": asked_now,
        "seconds": seconds,
        "items_per_s": asked_now / seconds if seconds > 0 and asked_now else None,
        "skipped": len(skipped),
        "skipped_items": skipped,
        "notes": notes,
    }
    for note in notes:
        log.info("note: %s", note)
    return summary


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
