"""The infer stage: a task split through a VLM, predictions appended to the run directory as they are made.

    vlx model=llava task=esnli task.split=test              # zero-shot on e-SNLI-VE
    vlx model=tiny_llava task=shapes task.limit=20          # the built-in demo data, a tiny model, on a CPU

Writes `predictions.jsonl` (one row per item: id, image, text, gold, pred, explanation, raw), `predictions.csv` in
the seed's format, and `summary.json`. A run restarted into the same directory skips the ids already written.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from vlx import distributed
from vlx.config_data import plain_dict
from vlx.engine.loop import Answer, LoopResult, LoopSettings, run_batches
from vlx.engine.shots import ShotSelector, correct_ids_from_predictions, minilm_embedder
from vlx.errors import ConfigError
from vlx.metrics.coco import check_java
from vlx.models.hf import VLMAdapter, check_images_per_prompt, check_trained_prompt
from vlx.models.loading import check_adapter_path
from vlx.run.directory import RunDir, read_predictions
from vlx.run.lock import exclusive
from vlx.run.records import Prediction, RunInfo
from vlx.run.store import (
    JsonlStore,
    check_writable,
    describe_differences,
    item_differences,
    unique_rows,
    write_csv,
)
from vlx.stages import evaluation
from vlx.stages._common import (
    build_quantization,
    check_generation,
    config_choices,
    resolved_config,
    run_dir,
)
from vlx.stages._resume import check_manifest, check_resumable, infer_manifest
from vlx.tasks import Task
from vlx.tasks.answers import is_correct, most_probable
from vlx.tasks.items import Example
from vlx.tracking import Tracker, tracking

log = logging.getLogger(__name__)


def validate(cfg: DictConfig) -> None:
    """Rules that span config fields, checked before any data or weights load."""
    # the family's own limit (PaliGemma's one image) is checked by load_adapter, once config.json names the family
    check_images_per_prompt(cfg.model.get("max_images"), "the model (model.max_images)", cfg.shots)
    check_adapter_path(cfg.model.adapter)
    check_generation(plain_dict(cfg.generation, "generation"))
    if cfg.eval_after_infer:
        evaluation.check_settings(plain_dict(cfg.eval, "eval"))


def build_shot_selector(cfg: DictConfig, task: Task) -> ShotSelector | None:
    """The demonstration selector for `cfg.shots` demonstrations drawn as `cfg.fewshot` says (None for zero-shot),
    its pool read from `fewshot.split`."""
    k, fewshot = cfg.shots, cfg.fewshot
    if k == 0:
        return None
    strategy = task.shot_strategy if fewshot.strategy == "auto" else fewshot.strategy
    if fewshot.source is not None and strategy != "from_correct":  # it would be ignored: say so rather than guess
        raise ConfigError(
            f"fewshot.source is read by fewshot.strategy=from_correct only, and this run's strategy is {strategy}: "
            f"add fewshot.strategy=from_correct, or leave fewshot.source out"
        )
    if fewshot.split == task.split:
        log.warning(
            "demonstrations come from the queries' own split %r (each query is kept out of its own)", task.split
        )
    pool = instantiate(cfg.task, split=fewshot.split, limit=None).examples()
    if not any(ex.explanations for ex in pool):
        log.info(
            "the %s pool has no explanations: demonstrations show the label alone (add task.references)", fewshot.split
        )
    correct = None
    if strategy == "from_correct" and fewshot.source is not None:
        correct = correct_ids_from_predictions(fewshot.source)
    log.info("few-shot: k=%d, strategy %s, pool %s (%d items)", k, strategy, fewshot.split, len(pool))
    return ShotSelector(
        pool,
        task.labels,
        k,
        strategy,
        seed=fewshot.seed,
        per_query=fewshot.per_query,
        correct_ids=correct,
        ids=list(fewshot.ids),
        balanced=fewshot.balanced,
        embed=minilm_embedder() if strategy == "similar" else None,
    )


def in_dataset_order(rows: list[Prediction], examples: list[Example]) -> list[Prediction]:
    """Predictions in the split's order (those of items outside it, from an earlier larger run, last)."""
    position = {ex.id: i for i, ex in enumerate(examples)}
    return sorted(rows, key=lambda r: position.get(r.id, len(position)))


def prediction(
    task: Task, example: Example, answer: str, demos: list[Example], scores: dict[str, float] | None = None
) -> Prediction:
    """The model's answer to `example` as a prediction. With label scores the label is the most probable one and
    the explanation what follows the label in the answer; otherwise both are parsed from the answer."""
    label, explanation = task.parse(answer, example)
    choices = dict(zip(example.options, example.choices, strict=True)) if example.choices else None
    if scores is not None:
        label = most_probable(scores, choices)
        after = task.answer_format.explanation_after(label, answer)
        explanation = explanation if after is None else after
    return Prediction(
        id=example.id,
        image=str(example.image),
        text=example.text,
        gold=example.label,
        pred=label,
        explanation=explanation,
        raw=answer,
        refs=tuple(example.explanations),
        demos=tuple(d.id for d in demos),
        # a multiple-choice item's option texts: the chosen text is scored (A-OKVQA repeats some)
        choices=choices or None,
        answers=tuple(example.answers) or None,  # an open question: right when the answer is one of these
        scores=scores,
    )


def seed_csv_row(row: Prediction) -> dict[str, str | None]:
    """A prediction in the seed's CSV columns (each task keeps the ones it had: `Task.csv_columns`)."""
    return {"img_path": row.image, "hypothesis": row.text, "explanation": row.raw}


def summarize(
    rows: list[Prediction],
    skipped: list[dict[str, str]],
    seconds: float,
    new: int,
    loop: LoopResult | None = None,
) -> dict[str, Any]:
    """Items, parsed share, accuracy where gold labels exist, throughput; with the batch loop's result, the batch
    size (chosen, and at the end) and the prompts' mean length."""
    gold = [r for r in rows if r.gold is not None]
    summary: dict[str, Any] = {
        "items": len(rows),
        "parsed": sum(r.pred is not None for r in rows) / max(len(rows), 1),
        "accuracy": sum(map(is_correct, gold)) / len(gold) if gold else None,
        "new_items": new,
        "items_per_s": new / seconds if seconds > 0 and new else None,
        "skipped": len(skipped),
    }
    if loop is not None and loop.choice is not None:
        summary["batch_size"] = loop.batch_size  # at the end: lower than chosen after out-of-memory errors
        summary["batch"] = {**loop.choice.record(), "final": loop.batch_size}
    if loop is not None and loop.prompt_tokens:  # what the prompts cost: image tokens dominate LLaVA-NeXT's
        summary["prompt_tokens_mean"] = statistics.fmean(loop.prompt_tokens)
        summary["image_tokens_mean"] = statistics.fmean(loop.image_tokens) if loop.image_tokens else None
    return summary


def run_info(cfg: DictConfig, task: Task) -> RunInfo:
    """What the run was (summary.json's `run`): eval and report read it instead of re-composing the config."""
    choices = config_choices()
    return RunInfo(
        task=task.name,
        split=task.split,
        labels=tuple(task.labels),
        positive=task.positive,
        model=choices.get("model", cfg.model._target_),
        checkpoint=cfg.model.checkpoint,
        adapter=cfg.model.adapter,
        shots=cfg.shots,
        shot_strategy=(task.shot_strategy if cfg.fewshot.strategy == "auto" else cfg.fewshot.strategy)
        if cfg.shots
        else None,
        quant=choices.get("quant", "none" if not cfg.quant else "custom"),
        generation=choices.get("generation"),
        seed=cfg.seed,
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Runs the model over the task split; returns the summary (also in summary.json)."""
    validate(cfg)
    resume = cfg.stage.get("resume")
    out = RunDir.find(resume, "stage.resume").path if resume else run_dir(cfg)
    with exclusive(out):  # one writer per run directory
        task = build_task(cfg)
        split = task.load()  # every file, row and image checked before the model loads
        if cfg.eval_after_infer:  # the scoring at the end needs Java for explanations: said now, not after inference
            check_java(cfg.eval.get("java", True), needed=any(ex.explanations for ex in split.examples))
        run = RunDir(out)
        store = run.prediction_store()
        # under a multi-process launcher, each rank appends its share to its own shard file; rank 0 merges at the end
        shard = JsonlStore(run.shard_file(distributed.rank())) if parallel() else store
        todo, everyone = items_to_run(cfg, out, store, shard, split.examples)
        selector = build_shot_selector(cfg, task) if todo else None  # its checks (k, the pool) before the model loads
        logger_cfg = plain_dict(cfg.logger, "logger") if cfg.logger and distributed.is_main() else None
        with tracking(logger_cfg, resolved_config(cfg), name=out.name) as tracker:
            start = time.perf_counter()
            done_before = len(split.examples) - everyone
            loop = (
                predict(cfg, task, todo, shard, selector, len(split.examples), done_before, out, split.examples[0])
                if todo
                else None
            )
            if parallel():
                distributed.barrier()  # every rank has finished its share
                if not distributed.is_main():
                    return {"items": len(todo), "rank": distributed.rank()}
            seconds = time.perf_counter() - (loop.started if loop else start)
            rows = finish_predictions(out, store, split.examples, task)
            skipped = split.skipped + (loop.skipped if loop else [])
            summary = summarize(rows, skipped, seconds, everyone, loop)
            run.write_summary(summary, run_info(cfg, task), skipped)
            log_done(summary, out)
            tracker.log_summary(summary)
            tracker.log_predictions(rows, images=int(cfg.logger.get("log_images", 0)) if cfg.logger else 0)
            if cfg.eval_after_infer:
                summary = {**summary, **evaluate_run(cfg, task, out, tracker)}
    return summary


def build_task(cfg: DictConfig) -> Task:
    """The task of `cfg.task`, refused where the decoding cannot answer it (scores need labels)."""
    task: Task = instantiate(cfg.task)
    if task.open_answers and cfg.decode != "generate":
        raise ConfigError(
            f"decode={cfg.decode}: task {task.name!r} has open answers (task.labels is empty), so "
            f"there are no labels to score; use decode=generate"
        )
    return task


def items_to_run(
    cfg: DictConfig, out: Path, store: JsonlStore, shard: JsonlStore, examples: list[Example]
) -> tuple[list[Example], int]:
    """This process's share of the items not yet predicted in `out`, and how many are left for every process,
    after checking that the finished rows belong to this run (same config, same items)."""
    check_writable(shard.path)
    earlier = finished_rows(out, store, shard)
    done = set(earlier)
    check_resumable(out, cfg, has_outputs=bool(done))
    check_done_in_split(done, examples, out)
    check_done_same_items(earlier, examples, out)
    todo = [ex for ex in examples if ex.id not in done]
    if done:
        log.info("resuming: %d of %d items already in %s", len(examples) - len(todo), len(examples), out)
    return todo[distributed.rank() :: distributed.world_size()], len(todo)  # this rank's share, interleaved


def load_model(cfg: DictConfig, task: Task) -> VLMAdapter:
    """The adapter of `cfg.model`, quantized as `cfg.quant` says (`load_adapter` refuses a family that cannot take
    the shots), with a warning where the task's prompt is not the one an adapter was trained with."""
    # partial first: Hydra would turn the BitsAndBytesConfig (a dataclass) into a config node
    model: VLMAdapter = instantiate(cfg.model, _partial_=True)(
        quantization=build_quantization(cfg.quant), shots=cfg.shots
    )
    check_trained_prompt(model.trained_prompt, task.prompt)
    return model


def predict(
    cfg: DictConfig,
    task: Task,
    todo: list[Example],
    shard: JsonlStore,
    selector: ShotSelector | None,
    total: int,
    done_before: int,
    out: Path,
    first: Example,
) -> LoopResult:
    """Loads the model, records its manifest in `out` (or checks it against the one of the rows already there),
    and appends a prediction row per item of `todo` to `shard`, batch by batch. `first`: the split's first item,
    whose rendered prompt the manifest holds."""
    log.info(
        "model %s (%s), %d items to run%s",
        cfg.model.checkpoint,
        cfg.model._target_,
        len(todo),
        f" (rank {distributed.rank()} of {distributed.world_size()})" if parallel() else "",
    )
    model = load_model(cfg, task)
    # what the outputs depend on, as loaded (weights, resolved dtype, the rendered prompt): recorded, or compared
    # with the record of the predictions already made
    check_manifest(
        out,
        infer_manifest(cfg, model, task, selector, first),
        done_before > 0,
        f"stage.resume={cfg.stage.resume}" if cfg.stage.get("resume") else str(out),
    )
    settings = LoopSettings(
        decode=cfg.decode,
        generation=plain_dict(cfg.generation, "generation"),
        batch_size=cfg.batch_size,
        batching=cfg.batching,
        seed=cfg.seed,
        workers=cfg.loader_workers,
        on_bad_image=task.on_bad_image,
        selector=selector,
        demo_image_size=cfg.fewshot.demo_image_size,
    )

    def row(answer: Answer) -> Prediction:
        return prediction(task, answer.example, answer.text, answer.demos, answer.scores)

    return run_batches(
        model,
        task,
        todo,
        shard,
        row,
        settings,
        desc=f"infer {task.name}/{task.split}",
        total=total,
        done_before=done_before,
        rows_name="predictions",
    )


def finish_predictions(out: Path, store: JsonlStore, examples: list[Example], task: Task) -> list[Prediction]:
    """predictions.jsonl whole and in the split's order (the ranks' shard files merged into it), and
    predictions.csv in the seed's format; returns its rows."""
    if shard_files(out):  # also those a killed multi-process run left for a single process to finish
        merge_shards(store, out)
    written = read_predictions(store)
    rows = in_dataset_order(unique_rows(written, store.path), examples)
    if rows != written:  # batched by length: put the finished file back in the split's order
        store.rewrite(rows)
    write_csv(RunDir(out).predictions_csv, [seed_csv_row(r) for r in rows], task.csv_columns)
    return rows


def log_done(summary: dict[str, Any], out: Path) -> None:
    """The run's line in the log: items, parsed share, accuracy, throughput, prompt lengths, items left out."""
    accuracy = "n/a" if summary["accuracy"] is None else f"{summary['accuracy']:.3f}"
    rate = "n/a" if summary["items_per_s"] is None else f"{summary['items_per_s']:.2f}"
    log.info(
        "done: %d items, %.1f%% parsed, accuracy %s, %s items/s, %s prompt tokens/item (%s image), %d skipped: %s",
        summary["items"],
        100 * summary["parsed"],
        accuracy,
        rate,
        _mean(summary, "prompt_tokens_mean"),
        _mean(summary, "image_tokens_mean"),
        summary["skipped"],
        out,
    )


def evaluate_run(cfg: DictConfig, task: Task, out: Path, tracker: Tracker) -> dict[str, Any]:
    """eval_after_infer: the run scored (metrics.json, and the tracker), as flat numbers for the summary."""
    settings = plain_dict(cfg.eval, "eval")
    metrics = evaluation.evaluate(out, run_info(cfg, task), settings)
    evaluation.log_to_tracker(tracker, metrics, out)
    return evaluation.flat_metrics(metrics)


def check_done_in_split(done: set[str], examples: list[Example], out: Path) -> None:
    """Refuses to continue a run whose finished items are not all in the split as configured now (a lower
    task.limit, another split): they would be scored with it, or have to be dropped. Raising the limit is fine."""
    ids = {ex.id for ex in examples}
    extra = sorted(done - ids)
    if extra:
        shown = ", ".join(extra[:5]) + (", ..." if len(extra) > 5 else "")
        raise ConfigError(
            f"{out} already holds {len(extra)} predictions for items outside the split as configured now ({shown}), "
            f"e.g. because task.limit is lower than when the run began. Keep task.limit at least as high as before, "
            f"or write into a new directory"
        )


def check_done_same_items(finished: dict[str, Prediction], examples: list[Example], out: Path) -> None:
    """Refuses to continue a run whose finished rows are no longer the items the task has under their ids (image,
    text or gold changed in the data, or a row inserted that shifts row-number ids): they would be kept, and scored,
    as answers to items they never saw."""
    found = item_differences(
        (ex.id, finished[ex.id], Prediction(id=ex.id, image=str(ex.image), text=ex.text, gold=ex.label))
        for ex in examples
        if ex.id in finished
    )
    if found:
        raise ConfigError(
            f"{out} holds finished predictions for {describe_differences(found)} whose image, text or gold is "
            f"not what the task has under that id now: the data changed since the run began. Run into a new "
            f"directory, or restore the data the run was made with"
        )


def parallel() -> bool:
    """Whether this process is one of several ranks (under a launcher), which share the split between them."""
    return distributed.world_size() > 1


def finished_rows(out: Path, store: JsonlStore, shard: JsonlStore) -> dict[str, Prediction]:
    """Rows already predicted in this run directory, by id: in predictions.jsonl and, under a launcher, in every
    rank's shard file. All ranks read the same files before any writes, so they agree on what is left and how it is
    shared."""
    mine = read_predictions(shard, repair=True)  # repairs this process's own file after a kill
    if not parallel() and not shard_files(out):
        return {r.id: r for r in mine}  # one process, one file: nothing else to read
    distributed.barrier()  # every rank has repaired its own shard
    rows = read_predictions(store) + [r for p in shard_files(out) for r in read_predictions(JsonlStore(p))]
    distributed.barrier()  # nobody appends before everyone has read
    found: dict[str, Prediction] = {}
    for r in rows:
        found.setdefault(r.id, r)
    return found


def shard_files(out: Path) -> list[Path]:
    """The ranks' own prediction files in the run directory `out`, in rank order (merged when the run ends)."""
    return RunDir(out).shard_files()


def merge_shards(store: JsonlStore, out: Path) -> None:
    """Moves every rank's rows into predictions.jsonl (put in dataset order afterwards) and removes the shards. A
    row already there (a merge cut short before the shards were removed) is kept once."""
    paths = shard_files(out)
    rows: dict[str, Prediction] = {}
    for row in read_predictions(store) + [row for path in paths for row in read_predictions(JsonlStore(path))]:
        rows.setdefault(row.id, row)
    store.rewrite(list(rows.values()))
    for path in paths:
        path.unlink()
    log.info("merged %d shard files into %s (%d rows)", len(paths), store.path, len(rows))


def _mean(summary: dict[str, Any], key: str) -> str:
    return "n/a" if summary.get(key) is None else f"{summary[key]:.0f}"
