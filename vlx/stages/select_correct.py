"""The seed's filter as a stage: the items an infer run classified correctly, as an explainer training CSV.

vlx stage=select_correct run=<infer run on the train split>       # -> <run>/correct.csv
vlx stage=finetune task=explainer_csv task.path=<run>/correct.csv ...
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from vlx.errors import ConfigError, DataError
from vlx.run_dirs import exclusive, predictions_dir
from vlx.store import PredictionStore, unique_rows, write_csv
from vlx.tasks.answers import is_correct
from vlx.tasks.explainer_csv import EXPLAINER_COLUMNS

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Writes <run>/correct.csv (id, image_path, hypothesis, exp) from rows with pred == gold and a reference."""
    if not cfg.run:
        raise ConfigError("stage=select_correct needs run=<infer run dir>")
    run_path = predictions_dir(cfg.run, "run")
    store = PredictionStore(run_path / "predictions.jsonl")
    if not store.path.is_file():
        raise ConfigError(f"{store.path} not found: pass the directory of an infer run")
    with exclusive(run_path):  # not while an infer run still writes there: its correct items are not all in yet
        rows = unique_rows(store.rows(), store.path)
        kept = [r for r in rows if is_correct(r) and r.get("refs")]
        if not kept:
            raise DataError(
                f"{store.path}: none of its {len(rows)} items was classified correctly with a reference explanation "
                f"to keep; nothing to write to correct.csv"
            )
        out = run_path / "correct.csv"
        write_csv(out, [{"id": r["id"], "image_path": r["image"], "hypothesis": r["text"], "exp": r["refs"][0]}
                        for r in kept], ["id", *EXPLAINER_COLUMNS])  # fmt: skip
    log.info("%d of %d items were classified correctly (and have a reference) -> %s", len(kept), len(rows), out)
    return {"kept": len(kept), "total": len(rows)}
