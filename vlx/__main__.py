"""The single entrypoint: `vlx [stage=...] [group=option ...] [key=value ...]` (or `python -m vlx ...`).

Hydra composes conf/, then the stage named by `stage` runs. Stage modules are imported only when chosen, so
`vlx --help` and `--cfg job` stay fast (no torch/transformers import).
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from vlx.errors import VlxError

log = logging.getLogger("vlx")

# stage name -> module exposing run(cfg) -> dict
# conf/ beside the package: an absolute path, so `vlx` works from any directory (install with `pip install -e .`)
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")

STAGES = {
    "infer": "vlx.stages.infer",
    "eval": "vlx.stages.evaluation",
    "report": "vlx.stages.report",
    "finetune": "vlx.stages.finetune",
    "merge": "vlx.stages.merge",
    "select_correct": "vlx.stages.select_correct",
}


def run_stage(cfg: DictConfig) -> dict[str, Any]:
    """Runs the configured stage and returns its metrics (tests call this directly)."""
    name = cfg.stage.name
    if name not in STAGES:
        raise VlxError(f"stage={name!r} is not a stage; choose one of {', '.join(STAGES)}")
    from vlx._runtime import seed_everything

    seed_everything(cfg.seed)
    return importlib.import_module(STAGES[name]).run(cfg)


# `shots=2` / `shots=0,3`: Hydra reads a bare number as an int, which cannot name a config group option, so the
# shorthand sets the number of shots inside the `shots` group instead.
_SHOTS_SHORTHAND = re.compile(r"^shots=(\d+(?:,\d+)*|range\(.*\))$")


def expand_shorthands(args: list[str]) -> list[str]:
    """Rewrites `shots=<k>` (or a sweep of k) into `shots.k=<k>`; other arguments pass unchanged."""
    return [f"shots.k={m.group(1)}" if (m := _SHOTS_SHORTHAND.match(a)) else a for a in args]


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        metrics = run_stage(cfg)
    except VlxError as err:
        # a problem the user can fix: one clear message, no traceback, non-zero exit
        log.error("%s", err)
        sys.exit(2)
    value = metrics.get(cfg.get("optimized_metric") or "")  # for Hydra sweepers that optimise a metric
    return float(value) if isinstance(value, (int, float)) else None


def launcher_overrides(args: list[str]) -> list[str]:
    """Under `accelerate launch` / `torchrun` (several processes): one run directory for all ranks, and the ranks
    other than 0 keep their own log file and leave the run's .hydra/ record to rank 0."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 or "-m" in args or "--multirun" in args:
        return []
    from vlx import distributed  # imports torch: only under a launcher, so that `vlx --help` stays quick

    extra = []
    if not any(a.startswith("hydra.run.dir=") for a in args):
        extra.append(f"hydra.run.dir={distributed.shared_run_dir()}")
    if not distributed.is_main():
        extra += [f"hydra.job.name=vlx.rank{distributed.rank()}", "hydra.output_subdir=null"]
    return extra


def main() -> None:
    """The `vlx` console script and `python -m vlx`."""
    sys.argv[1:] = expand_shorthands(sys.argv[1:])
    sys.argv += launcher_overrides(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
