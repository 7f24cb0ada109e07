"""The judge stage: a local model judges the explanations of a finished run on e-ViL's four-level scale.

    vlx stage=judge run=outputs/2026-11-30/12-00-00 judge=llava quant=4bit      # LLaVA-v1.6-Mistral-7B, 4-bit
    vlx stage=judge run=<run dir> judge=hf judge_model.checkpoint=/models/my-vlm # any model vlx loads
    vlx stage=judge run=<run dir> judge=tiny_llava                                # a tiny model, to try it on a CPU

For every prediction the judge sees the item's image, its text, the predicted label and the explanation, and is
asked whether the explanation justifies the label: yes / weak yes / weak no / no (`vlx.judging`). Its greedy answer
is parsed (`stage.decode=generate`), or the most likely of the four answers taken (`stage.decode=score`).

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
import difflib
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from vlx import distributed
from vlx._runtime import set_cpu_threads
from vlx.configs import config_dir, group_option
from vlx.errors import ConfigError, DataError, interrupted, os_error_message, writing
from vlx.judging import (
    ANSWER_TEXTS,
    JUDGE_PROMPT_VERSION,
    JUDGE_PROMPTS,
    VERDICTS,
    item_score,
    judge_scores,
    parse_verdict,
    prompt_kind,
)
from vlx.models.loading import check_adapter_path, resolve_checkpoint
from vlx.prediction import BATCHING, batching_order, choose_batch_size, predict_batches
from vlx.records import Example
from vlx.run.directory import RunDir, read_verdicts
from vlx.run.lock import exclusive
from vlx.run.records import Prediction, RunInfo, Verdict
from vlx.run.store import PredictionStore, check_writable, read_json, unique_rows, write_json
from vlx.stages import evaluation
from vlx.stages._common import build_quantization, resolved_config
from vlx.tasks import Task
from vlx.tasks._base import image_problems
from vlx.tasks.answers import Scoring, is_correct
from vlx.tracking import tracking

log = logging.getLogger(__name__)

DECODES = ("generate", "score")
# judge model keys that change no verdict (placement and how attention is computed: same outputs, as for infer)
NEUTRAL_MODEL_KEYS = frozenset({"device_map", "attn_implementation", "compile"})
# the W&B table: each verdict beside its prediction
TABLE_COLUMNS = ("id", "text", "gold", "pred", "explanation", "verdict", "judge_score", "judge_raw")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def validate(cfg: DictConfig) -> None:
    """Settings checked before anything is read or loaded."""
    if not cfg.get("run"):
        raise ConfigError("stage=judge needs run=<run dir>: the directory of a finished infer run to judge")
    if not cfg.get("judge"):
        raise ConfigError(
            "stage=judge needs judge=<model>: the conf/model option that judges, e.g. judge=llava quant=4bit "
            "(judge=tiny_llava tries it on a CPU)"
        )
    if distributed.world_size() > 1:  # every rank would judge every item into the one verdicts file
        raise ConfigError(
            "stage=judge runs in one process: start it with `vlx ...`, not under accelerate launch or torchrun "
            "(judge_model.device_map=auto already spreads a judge too large for one GPU over several)"
        )
    if cfg.batch_size != "auto" and (not isinstance(cfg.batch_size, int) or cfg.batch_size < 1):
        raise ConfigError(f"batch_size={cfg.batch_size!r}: use a positive integer or auto")
    if cfg.batching not in BATCHING:
        raise ConfigError(f"batching={cfg.batching!r}: use one of {', '.join(BATCHING)}")
    if not isinstance(cfg.loader_workers, int) or cfg.loader_workers < 0:
        raise ConfigError(f"loader_workers={cfg.loader_workers!r}: use 0 (a thread) or a number of processes")
    stage = cfg.stage
    if stage.decode not in DECODES:
        raise ConfigError(f"stage.decode={stage.decode!r}: use one of {', '.join(DECODES)}")
    tokens = stage.max_new_tokens
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ConfigError(f"stage.max_new_tokens={tokens!r}: use a positive whole number")
    if stage.judge_name is not None and not _NAME.match(str(stage.judge_name)):
        raise ConfigError(f"stage.judge_name={stage.judge_name!r}: use a folder name (letters, digits, . _ -)")
    evaluation.check_settings(OmegaConf.to_container(cfg.eval, resolve=True))


def judge_model(cfg: DictConfig) -> DictConfig:
    """The judge's model config: conf/model/<judge>.yaml (with its defaults), `judge_model.*` on top, resolved
    against this run's `paths`.

    Raises:
        ConfigError: no such model option, or a `judge_model` key that the option does not have.
    """
    name = str(cfg.judge)
    options = sorted(p.stem for p in (Path(config_dir()) / "model").glob("*.yaml"))
    if name not in options:
        close = difflib.get_close_matches(name, options, n=2)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ConfigError(f"judge={name}: no such model option{hint}; choose one of {', '.join(options)} (conf/model)")
    own = group_option("model", name)
    given = cfg.get("judge_model")
    overrides = OmegaConf.to_container(given, resolve=True) if given else {}
    for key in overrides:
        if key not in own:
            close = difflib.get_close_matches(key, list(own), n=2)
            hint = f" (did you mean {' or '.join('judge_model.' + c for c in close)}?)" if close else ""
            raise ConfigError(f"judge_model.{key}: judge={name} has no setting {key!r}{hint}; its settings are "
                              f"those of conf/model/{name}.yaml")  # fmt: skip
    # under the name the command line sets its keys with, so that a message about one of them names it so
    root = OmegaConf.create({"paths": OmegaConf.to_container(cfg.paths, resolve=True),
                             "judge_model": OmegaConf.to_container(own, resolve=False)})  # fmt: skip
    for key, value in overrides.items():
        root.judge_model[key] = value
    if missing := sorted(OmegaConf.missing_keys(root)):  # full keys: judge_model.checkpoint
        raise ConfigError(f"judge={name}: {missing[0]} is not set; add {missing[0]}=... to the command (e.g. "
                          f"judge_model.checkpoint=<hub id or folder> for judge=hf)")  # fmt: skip
    return root.judge_model


@contextlib.contextmanager
def as_judge(option: str) -> Iterator[None]:
    """The model code's config errors, which name its keys model.*, as the judge's (judge_model.*)."""
    try:
        yield
    except ConfigError as err:
        raise ConfigError(
            f"judge={option}: {err} (for the judge, a model.<key> named here is judge_model.<key>)"
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
    """Judges `cfg.run` with `cfg.judge`; returns judge.json's scalar numbers."""
    validate(cfg)
    run_path = RunDir.find(cfg.run, "run").path
    model_cfg = judge_model(cfg)
    set_cpu_threads(cfg.get("cpu_threads", "auto"), tiny=model_cfg.get("tiny") is not None)  # the judge's size
    with as_judge(str(cfg.judge)):  # a folder that is not there: before anything is read or written
        check_adapter_path(model_cfg.get("adapter"))
        resolve_checkpoint(str(model_cfg.checkpoint), model_cfg.get("tiny"), model_cfg.get("tiny_dir"))
    name = str(cfg.stage.judge_name or cfg.judge)
    with exclusive(run_path):  # not while an infer run still writes its predictions
        rows, info = read_predictions(run_path)
    folder = RunDir(run_path).judge_dir(name)
    logger_cfg = OmegaConf.to_container(cfg.logger, resolve=True) if cfg.logger else None
    config = {**resolved_config(cfg), "judge_model": OmegaConf.to_container(model_cfg, resolve=True)}
    with exclusive(folder), tracking(logger_cfg, config, name=f"judge-{run_path.name}-{name}") as tracker:
        summary, verdicts = judge_run(cfg, run_path, folder, name, model_cfg, rows, info)
        tracker.log_summary(summary)
        by_id = {r.id: r for r in rows}
        tracker.log_table("judge_verdicts", TABLE_COLUMNS, [
            [v.id, by_id[v.id].text, by_id[v.id].gold, v.pred, v.explanation, v.verdict, v.score, v.raw]
            for v in verdicts])  # fmt: skip
    return {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def output_config(cfg: DictConfig, name: str, model_cfg: DictConfig, prompt: str) -> dict[str, Any]:
    """What makes the verdicts (judge_config.json): a stopped judge run continues only with the same."""
    model = {k: v for k, v in OmegaConf.to_container(model_cfg, resolve=True).items() if k not in NEUTRAL_MODEL_KEYS}
    quant = OmegaConf.to_container(cfg.quant, resolve=True) if cfg.quant else None
    return {"judge": name, "prompt_version": JUDGE_PROMPT_VERSION, "prompt": prompt, "decode": cfg.stage.decode,
            "max_new_tokens": cfg.stage.max_new_tokens, "judge_model": model, "quant": quant}  # fmt: skip


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def check_continuable(run: RunDir, name: str, done: list[Verdict], current: dict[str, Any],
                      predictions: dict[str, Prediction]) -> None:  # fmt: skip
    """Refuses to add verdicts to a file made by another judge, prompt or setting, or of other predictions.

    Raises:
        ConfigError: the differences, and what to do.
    """
    folder, verdicts = run.judge_dir(name), run.verdicts_file(name)
    remedy = (f"judge with the same settings, write the new verdicts under another name with "
              f"stage.judge_name=<name>, or delete {folder} to judge again")  # fmt: skip
    other = next((r for r in done if r.prompt_version != current["prompt_version"]
                  or r.judge != current["judge"]), None)  # fmt: skip
    if other is not None:
        raise ConfigError(
            f"{verdicts} holds verdicts of judge {other.judge!r} with prompt version "
            f"{other.prompt_version!r} (id {other.id}), and this run is judge {current['judge']!r} with "
            f"prompt version {current['prompt_version']!r}: they cannot be mixed; {remedy}"
        )
    path = run.judge_config_file(name)
    if done and path.is_file():  # (a run that stopped before its first verdict left nothing to continue)
        saved, now = _flat(read_json(path, "written when the judging began")), _flat(current)
        diff = [("prompt: its text differs (see prompt.txt)" if k == "prompt" else
                 f"{k}: {saved.get(k)!r} (saved) vs {now.get(k)!r} (now)")
                for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]  # fmt: skip
        if diff:
            raise ConfigError(f"{folder} holds verdicts made with other settings, so they cannot be continued: "
                              + "; ".join(diff) + f". To go on: {remedy}")  # fmt: skip
    now = {i: (r.pred, r.explanation) for i, r in predictions.items()}
    changed = [r.id for r in done if now.get(r.id) != (r.pred, r.explanation)]
    if changed:
        shown = ", ".join(map(str, changed[:5])) + (", ..." if len(changed) > 5 else "")
        raise ConfigError(f"{verdicts} judged predictions that are no longer the run's ({len(changed)} "
                          f"items: {shown}); delete {folder} to judge the run's predictions again")  # fmt: skip


def verdict(item: Prediction, name: str, answer: str | None, probs: dict[str, float] | None = None,
            said: str | None = None, note: str | None = None) -> Verdict:  # fmt: skip
    """The judge's verdict on `item`: read from the judge's `answer` (or `said`, for items not put to it), its
    e-ViL score, the raw answer, and what was judged."""
    if answer is not None:
        said = parse_verdict(answer)
    return Verdict(id=item.id, verdict=said, score=item_score(said), raw=answer,
                   correct=is_correct(item) if item.gold is not None else None, pred=item.pred,
                   explanation=item.explanation, judge=name, prompt_version=JUDGE_PROMPT_VERSION, probs=probs,
                   note=note)  # fmt: skip


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
    return Example(id=item.id, image=Path(str(item.image)), text=item.text or "", label=None,
                   source=f"{source}:{line}", fields=(("pred", str(item.pred)),
                                                      ("explanation", str(item.explanation).strip())))  # fmt: skip


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
    store = PredictionStore(run.verdicts_file(name))
    check_writable(store.path)
    done = read_verdicts(store, repair=True)
    by_id = {r.id: r for r in rows}
    current = output_config(cfg, name, model_cfg, prompt)
    check_continuable(run, name, done, current, by_id)
    write_json(run.judge_config_file(name), current)
    with writing(run.judge_prompt_file(name)):
        run.judge_prompt_file(name).write_text(prompt + "\n", encoding="utf-8")
    finished = {r.id for r in done}
    if finished:
        log.info("resuming: %d of %d items already judged in %s", len(finished), len(rows), store.path)
    left = [r for r in rows if r.id not in finished]
    # items with nothing to ask the judge about are written with the first verdicts (so that a judge that fails to
    # load leaves no file behind that only its settings may continue)
    rules = [row for r in left if (row := unasked(r, name)) is not None]
    ruled = {r.id for r in rules}
    source = run.predictions_file
    line = {r.id: i for i, r in enumerate(rows, start=1)}
    todo = [as_example(r, line[r.id], source) for r in left if r.id not in ruled]
    todo, skipped = check_images(todo, cfg.task.get("on_bad_image", "fail"))
    seconds, size = 0.0, None
    if todo:
        seconds, size, skipped = ask(cfg, name, model_cfg, prompt, store, todo, rules, by_id, skipped, len(rows))
    elif rules:
        store.append(rules)
    verdicts = unique_rows(read_verdicts(store), store.path)
    order = {r.id: i for i, r in enumerate(rows)}
    ordered = sorted(verdicts, key=lambda r: order.get(r.id, len(order)))
    if ordered != verdicts:  # batched by length: back into the run's order
        store.rewrite(ordered)
    # S_E covers the items eval counts right, under the run's own scoring rule (VQA-X's soft score, ScienceQA's
    # guesses); the verdict rows keep what was judged
    settings = OmegaConf.to_container(cfg.eval, resolve=True)
    assert isinstance(settings, dict)
    scoring = Scoring.from_settings(str(info.task or cfg.task.name), settings)
    as_eval = [replace(v, correct=is_correct(by_id[v.id], scoring=scoring)) if v.correct is not None
               and v.id in by_id else v for v in ordered]  # fmt: skip
    summary = summarize(as_eval, cfg, name, model_cfg, info, kind, len(todo), seconds, skipped)
    if size is not None:
        summary["batch_size"] = size
    run.write_judge_results(name, summary)
    score = "n/a" if summary["judge_score"] is None else f"{summary['judge_score']:.3f}"
    log.info("judge %s: judge_score %s on %d correctly labelled items, all_judge_score %s on %d; %d unparsed; %s",
             name, score, summary["judge_n"], _fmt(summary["all_judge_score"]), summary["all_judge_n"],
             summary["unparsed"], folder)  # fmt: skip
    return summary, ordered


def check_images(todo: list[Example], policy: str) -> tuple[list[Example], list[dict[str, str]]]:
    """Every image decoded before the judge loads; a bad one fails the run (naming it) or, with
    task.on_bad_image=skip, leaves its item unjudged and listed."""
    problems = image_problems(list(dict.fromkeys(ex.image for ex in todo)))
    kept, skipped = [], []
    for ex in todo:
        problem = problems[ex.image]
        if problem is None:
            kept.append(ex)
        elif policy == "skip":
            log.warning("skipping %s (%s): image %s: %s", ex.id, ex.source, ex.image, problem)
            skipped.append({"id": ex.id, "image": str(ex.image), "source": ex.source, "reason": problem})
        else:
            raise DataError(
                f"{ex.source}: image {ex.image}: {problem}. The judge needs the images the run predicted on: put them "
                f"back at that path, or run with task.on_bad_image=skip to leave such items unjudged"
            )
    return kept, skipped


def ask(cfg: DictConfig, name: str, model_cfg: DictConfig, prompt: str, store: PredictionStore, todo: list[Example],
        unasked_rows: list[Verdict], by_id: dict[str, Prediction], skipped: list[dict[str, str]],
        total: int) -> tuple[float, int, list[dict[str, str]]]:  # fmt: skip
    """Loads the judge, writes `unasked_rows`, then puts the items to the judge batch by batch, appending each
    batch's verdicts; returns the seconds it took (loading not counted), the batch size at the end and the items
    left out."""
    # the judge's question as a task: its prompt is the question about each item, its labels the four verdicts, each
    # answered as ANSWER_TEXTS writes it (what decode=score scores)
    questions = Task(name=f"judge-{name}", split="verdicts", labels=VERDICTS, prompt=prompt,
                     answer="{Label} {explanation}")  # fmt: skip
    assert all(questions.label_text(v) == ANSWER_TEXTS[v] for v in VERDICTS)
    spec = OmegaConf.to_container(model_cfg, resolve=True)
    log.info("judge %s: %s (%s), %d items to judge", name, spec["checkpoint"], spec["_target_"], len(todo))
    # partial first: Hydra would turn the BitsAndBytesConfig (a dataclass) into a config node
    with as_judge(str(cfg.judge)):
        model = instantiate(spec, _partial_=True)(quantization=build_quantization(cfg.quant))
    if "{prompt}" not in model.prompt_template:
        raise ConfigError(
            f"the judge's prompt template {model.prompt_template!r} (from its config or its adapter's "
            f"vlx_adapter.json) leaves out {{prompt}}, so the judge would never see the question; set "
            f"judge_model.prompt_template='{{prompt}}'"
        )
    if unasked_rows:
        store.append(unasked_rows)
    generation = {"do_sample": False, "max_new_tokens": int(cfg.stage.max_new_tokens)}  # greedy: one answer
    queue = batching_order(todo, cfg.batching)
    start = time.perf_counter()  # items/s counts the judging (and batch_size=auto's probe), not the loading
    size = choose_batch_size(cfg.batch_size, model, questions, queue, cfg.stage.decode, generation).size
    on_bad_image = cfg.task.get("on_bad_image", "fail")
    batches = predict_batches(model, questions, queue, size, cfg.stage.decode, generation, seed=cfg.seed,
                              workers=cfg.loader_workers, on_bad_image=on_bad_image)  # fmt: skip
    bar = tqdm(total=len(todo), desc=f"judge {name}", unit="item", dynamic_ncols=True)
    before = len(store.done_ids())
    try:
        for batch in batches:
            store.append(
                verdict(by_id[ex.id], name, answer, probs)
                for ex, answer, probs in zip(batch.examples, batch.answers, batch.scores, strict=True)
            )
            skipped = skipped + batch.skipped
            size = batch.batch_size
            bar.update(len(batch.examples) + len(batch.skipped))
    except KeyboardInterrupt as err:
        judged = len(store.done_ids())
        raise interrupted(err, f"interrupted after {judged} of {total} items ({judged - before} answered by the "
                               f"judge in this run, all saved in {store.path}); run the same command again to "
                               f"continue") from None  # fmt: skip
    except OSError as err:
        message = os_error_message(err)
        if message is None:
            raise
        raise ConfigError(f"{message}; the verdicts so far are saved in {store.path}") from err
    finally:
        bar.close()
    return time.perf_counter() - start, size, skipped


def summarize(verdicts: list[Verdict], cfg: DictConfig, name: str, model_cfg: DictConfig,
              info: RunInfo, kind: str, asked_now: int, seconds: float,
              skipped: list[dict[str, str]]) -> dict[str, Any]:  # fmt: skip
    """judge.json: the scores with their intervals, the counts, the judge and the prompt, throughput."""
    settings = OmegaConf.to_container(cfg.eval, resolve=True)
    asked = [r for r in verdicts if r.raw is not None]
    unparsed = [r for r in asked if r.verdict is None]
    counts = {v: sum(r.verdict == v for r in verdicts) for v in VERDICTS}
    spec = OmegaConf.to_container(model_cfg, resolve=True)
    notes = []
    if unparsed:
        notes.append(f"{len(unparsed)} of {len(asked)} answers say no verdict that vlx can read: they are left out "
                     f"of the scores (their raw text is in {RunDir.VERDICTS})")  # fmt: skip
    if not any(r.correct is not None for r in verdicts):
        notes.append("no gold labels: judge_score (correctly labelled items, e-ViL's S_E) is undefined; "
                     "all_judge_score covers every judged item")  # fmt: skip
    empty = sum((r.note or "").startswith("empty explanation") for r in verdicts)
    if empty:
        notes.append(f"{empty} items have an empty explanation: scored no without asking the judge")
    summary: dict[str, Any] = {
        "judge": name,
        "judge_model": {
            "option": str(cfg.judge),
            "checkpoint": spec.get("checkpoint"),
            "adapter": spec.get("adapter"),
            "class": spec.get("_target_"),
        },
        "quant": OmegaConf.to_container(cfg.quant, resolve=True) if cfg.quant else None,
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
