"""The seed's filter as a stage: the items an infer run classified correctly, as an explainer training CSV.

vlx stage=select_correct stage.run=<infer run on the train split>       # -> <this run's dir>/correct.csv
vlx stage=finetune task=explainer_csv task.path=<this run's dir>/correct.csv ...

The infer run is only read (nothing is written into it); the CSV goes into this run's own directory, and the log
says where. `finetune.only_correct_from=<infer run>` does the same selection inside a fine-tune, from the
predictions themselves.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vlx.errors import ConfigError, DataError
from vlx.run.directory import RunDir
from vlx.run.lock import check_idle, exclusive
from vlx.run.store import write_csv
from vlx.tasks.answers import is_correct
from vlx.tasks.explainer_csv import EXPLAINER_COLUMNS

log = logging.getLogger(__name__)

CORRECT_CSV = "correct.csv"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Writes <this run's dir>/correct.csv (id, image_path, hypothesis, exp) from the rows of `stage.run` with
    pred == gold and a reference; returns the counts and the CSV's path."""
    if not cfg.stage.run:
        raise ConfigError("stage=select_correct needs stage.run=<infer run dir>")
    run = RunDir.find(cfg.stage.run, "stage.run")
    run_path = run.path
    if not run.has_predictions():
        raise ConfigError(f"{run.predictions_file} not found: pass the directory of an infer run")
    check_idle(run_path)  # not while an infer run still writes there: its correct items are not all in yet
    rows = run.predictions("select from")
    kept = [r for r in rows if is_correct(r) and r.refs]
    if not kept:
        raise DataError(
            f"{run.predictions_file}: none of its {len(rows)} items was classified correctly with a reference "
            f"explanation to keep; nothing to write to {CORRECT_CSV}"
        )
    with exclusive(Path(cfg.paths.output_dir)) as out_dir:
        out = out_dir / CORRECT_CSV
        write_csv(
            out,
            [{"id": r.id, "image_path": r.image, "hypothesis": r.text, "exp": r.refs[0]} for r in kept],
            ["id", *EXPLAINER_COLUMNS],
        )
    log.info(
        "%d of %d items of %s were classified correctly (and have a reference) -> %s; train on them with "
        "task=explainer_csv task.path=%s",
        len(kept),
        len(rows),
        run_path,
        out,
        out,
    )
    return {"kept": len(kept), "total": len(rows), "csv": str(out)}
