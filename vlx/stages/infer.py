"""The infer stage: a task split through a VLM, predictions appended to the run directory as they are made.

    vlx model=llava task=esnli task.split=test              # zero-shot on e-SNLI-VE
    vlx model=tiny_llava task=shapes task.limit=20          # the built-in demo data, a tiny model, on a CPU

Writes `predictions.jsonl` (one row per item: id, image, text, gold, pred, explanation, raw), `predictions.csv` in
the seed's format, and `summary.json`. A run restarted into the same directory skips the ids already written.
"""

from __future__ import annotations

import logging
import time
from itertools import islice
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from vlx.errors import ConfigError
from vlx.records import Example
from vlx.stages._common import build_quantization, check_adapter_path, resolved_config, run_dir, write_json
from vlx.store import PredictionStore, write_csv
from vlx.tasks import Task
from vlx.tasks._base import load_rgb
from vlx.tracking import tracking

log = logging.getLogger(__name__)


def validate(cfg: DictConfig) -> None:
    """Rules that span config fields, checked before any data or weights load."""
    if cfg.shots.k != 0:
        raise ConfigError(f"shots={cfg.shots.k}: few-shot prompting is not available yet; use shots=0")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ConfigError(f"batch_size={cfg.batch_size!r}: use a positive integer")
    check_adapter_path(cfg.model.adapter)


def batched(items: list[Example], size: int):
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


def prediction_row(task: Task, example: Example, answer: str) -> dict[str, Any]:
    label, explanation = task.parse(answer)
    return {
        "id": example.id,
        "image": str(example.image),
        "text": example.text,
        "gold": example.label,
        "pred": label,
        "explanation": explanation,
        "raw": answer,
    }


def seed_csv_row(row: dict[str, Any]) -> dict[str, str]:
    """A prediction in the seed's CSV columns (each task keeps the ones it had: `Task.csv_columns`)."""
    return {"img_path": row["image"], "hypothesis": row["text"], "explanation": row["raw"]}


def summarize(rows: list[dict[str, Any]], skipped: list[dict[str, str]], seconds: float, new: int) -> dict[str, Any]:
    """Items, parsed share, accuracy where gold labels exist, throughput."""
    gold = [r for r in rows if r["gold"] is not None]
    summary: dict[str, Any] = {
        "items": len(rows),
        "parsed": sum(r["pred"] is not None for r in rows) / max(len(rows), 1),
        "accuracy": sum(r["pred"] == r["gold"] for r in gold) / len(gold) if gold else None,
        "new_items": new,
        "items_per_s": new / seconds if seconds > 0 and new else None,
        "skipped": len(skipped),
    }
    return summary


def run(cfg: DictConfig) -> dict[str, Any]:
    """Runs the model over the task split; returns the summary (also in summary.json)."""
    validate(cfg)
    out = run_dir(cfg)
    task: Task = instantiate(cfg.task)
    split = task.load()  # every file, row and image checked before the model loads
    store = PredictionStore(out / "predictions.jsonl")
    done = store.done_ids()
    todo = [ex for ex in split.examples if ex.id not in done]
    if done:
        log.info(
            "resuming: %d of %d items already in %s", len(split.examples) - len(todo), len(split.examples), store.path
        )
    generation = OmegaConf.to_container(cfg.generation, resolve=True)
    logger_cfg = OmegaConf.to_container(cfg.logger, resolve=True) if cfg.logger else None
    with tracking(logger_cfg, resolved_config(cfg), name=out.name) as tracker:
        start = time.perf_counter()
        if todo:
            log.info("model %s (%s), %d items to run", cfg.model.checkpoint, cfg.model._target_, len(todo))
            # partial first: Hydra would turn the BitsAndBytesConfig (a dataclass) into a config node
            model = instantiate(cfg.model, _partial_=True)(quantization=build_quantization(cfg.quant))
            with tqdm(total=len(todo), desc=f"infer {task.name}/{task.split}", unit="item", dynamic_ncols=True) as bar:
                for batch in batched(todo, cfg.batch_size):
                    images = [load_rgb(ex.image) for ex in batch]
                    prompts = [model.render_prompt(ex, task.instruction(ex)) for ex in batch]
                    answers = model.generate(prompts, images, **generation)
                    store.append(prediction_row(task, ex, answer) for ex, answer in zip(batch, answers, strict=True))
                    bar.update(len(batch))
        seconds = time.perf_counter() - start

        rows = store.rows()
        write_csv(out / "predictions.csv", [seed_csv_row(r) for r in rows], task.csv_columns)
        summary = summarize(rows, split.skipped, seconds, len(todo))
        write_json(out / "summary.json", {**summary, "skipped_items": split.skipped})
        accuracy = "n/a" if summary["accuracy"] is None else f"{summary['accuracy']:.3f}"
        rate = "n/a" if summary["items_per_s"] is None else f"{summary['items_per_s']:.2f}"
        log.info(
            "done: %d items, %.1f%% parsed, accuracy %s, %s items/s, %d skipped -> %s",
            summary["items"], 100 * summary["parsed"], accuracy, rate, summary["skipped"], out,
        )  # fmt: skip
        tracker.log_summary(summary)
        tracker.log_predictions(rows, images=int(cfg.logger.get("log_images", 0)) if cfg.logger else 0)
    return summary
