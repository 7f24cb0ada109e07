"""The single entrypoint: `vlx [stage=...] [group=option ...] [key=value ...]` (or `python -m vlx ...`).

Hydra composes conf/, then the stage named by `stage` runs. Stage modules are imported only when chosen, so
`vlx --help` and `--cfg job` stay fast (no torch/transformers import).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, cast

import hydra
from omegaconf import DictConfig

from vlx.configs import config_dir
from vlx.errors import VlxError
from vlx.run.guard import RunDirGuard, discard_refused_run
from vlx.run.sweeps import (
    SweepJobFailed,
    clear_error_record,
    distinguishing_overrides,
    sweep_failures,
    write_error_record,
)

log = logging.getLogger("vlx")


CONFIG_DIR = config_dir()

# stage name -> module exposing run(cfg) -> dict


def run_stage(cfg: DictConfig) -> dict[str, Any]:
    """Runs the configured stage and returns its metrics (tests call this directly)."""
    path = stage_module_path(cfg.stage)  # (found, not imported: a stage's imports are the heavy ones)
    from vlx._runtime import quiet_progress_bars, route_library_logs, seed_everything, set_cpu_threads
    from vlx.config_schema import check_config
    from vlx.stages._early import early_checks

    check_config(cfg)  # every value vlx checks, against its rule, before anything is read or loaded
    early_checks(cfg)  # missing paths, a busy run directory, no Java: said before the seconds of heavy imports
    route_library_logs()  # each library warning once, in vlx.log too, not twice on the console
    quiet_progress_bars()
    set_cpu_threads(cfg.get("cpu_threads", "auto"), tiny=cfg.model.get("tiny") is not None)
    seed_everything(cfg.seed)
    return stage_module(cfg.stage, path).run(cfg)


def stage_module_path(stage: DictConfig) -> str:
    """The module whose `run(cfg)` the stage is: `module` in its conf/stage YAML (a new stage is that YAML and its
    module, vlx's or anyone's on the Python path), found on the path but not imported yet.

    Raises:
        VlxError: the YAML names no module, or one that is not on the Python path.
    """
    name, path = stage.get("name"), stage.get("module")
    if not path:
        raise VlxError(
            f"stage={name}: its config (conf/stage/{name}.yaml) names no module; add `module: <package."
            f"module>` whose run(cfg) the stage is"
        )
    try:
        found = importlib.util.find_spec(str(path))
    except ImportError as err:  # its package is missing
        found, why = None, f" ({err})"
    else:
        why = ""
    if found is None:
        raise VlxError(f"stage={name}: stage.module={path} is not on the Python path{why}")
    return str(path)


def stage_module(stage: DictConfig, path: str) -> Any:
    """The stage's module (`stage_module_path`), imported.

    Raises:
        VlxError: the module has no run(cfg) function.
    """
    module = importlib.import_module(path)
    if not callable(getattr(module, "run", None)):
        raise VlxError(f"stage={stage.get('name')}: {path} has no run(cfg) function")
    return module


def _exit_code(err: KeyboardInterrupt) -> int:
    return 128 + int(getattr(err, "signum", signal.SIGINT))  # 130 for Ctrl-C, 143 for SIGTERM, as shells report


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        metrics = run_stage(cfg)
    except KeyboardInterrupt as err:
        # the stage's own line says how far it got; the run directory keeps everything finished (a sweep stops here)
        log.error("%s", getattr(err, "message", "") or "interrupted; run the same command again to continue")
        sys.exit(_exit_code(err))
    except Exception as err:
        problem = _user_problem(err)
        if _sweep_job():
            _fail_sweep_job(err, problem)
        if problem is None:
            err.vlx_stage_error = True  # type: ignore[attr-defined]  # main() keeps its traceback
            raise
        # a problem the user can fix: one clear message, no traceback, non-zero exit
        log.error("%s", problem)
        discard_refused_run()  # a refused run leaves no directory of its own behind
        sys.exit(2)
    if _sweep_job():
        from hydra.core.hydra_config import HydraConfig

        clear_error_record(Path(HydraConfig.get().runtime.output_dir))  # an earlier failure of this job, now run
    value = metrics.get(cfg.get("optimized_metric") or "")  # for Hydra sweepers that optimise a metric
    return float(value) if isinstance(value, (int, float)) else None


def _sweep_job() -> bool:
    """Whether this is one job of a sweep (`vlx -m ...`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _fail_sweep_job(err: Exception, problem: str | None) -> None:
    """One failed job of a sweep: said, recorded in its folder, and raised as an Exception, which Hydra's launcher
    notes before it goes on with the next job (SystemExit would stop the whole sweep). Its folder stays: discarding
    it as a refused run's would act on the sweep's folder, and the report lists the job with its error."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    refused = problem is not None
    if problem is None:  # a bug: its type and message here, its traceback in the job's vlx.log
        problem = f"{type(err).__name__}: {err}"
        log.error("%s", problem, exc_info=err)
    else:
        log.error("%s", problem)
    # HydraConfig.get() is annotated as the HydraConf dataclass but gives its DictConfig, whose get() reads the job
    # number as None where Hydra left it unset (MISSING) rather than raising
    job = cast(DictConfig, hydra_cfg.job)
    write_error_record(
        Path(hydra_cfg.runtime.output_dir),
        problem,
        refused=refused,
        overrides=[str(o) for o in hydra_cfg.overrides.task],
        job=job.get("num"),
    )
    raise SweepJobFailed(problem, refused=refused, sweep_dir=str(Path(hydra_cfg.sweep.dir).absolute())) from err


def _user_problem(err: BaseException) -> str | None:
    """The one-line message for an error the user can mend (vlx's own, a required setting left unset, a full disk or
    an unwritable path), or None for a bug, whose traceback is kept."""
    from vlx._cli import missing_value
    from vlx.errors import os_error_message, user_error
    from vlx.stages._common import config_choices

    if (own := user_error(err)) is not None:
        return str(own)
    if (missing := missing_value(err, config_choices())) is not None:
        return missing
    if isinstance(err, OSError):
        return os_error_message(err)
    return None


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


def _on_sigterm(signum: int, frame: Any) -> None:
    from vlx.errors import Interrupted

    raise Interrupted(signum=signum)  # unwinds like Ctrl-C: files closed, W&B finished, one line said


def main() -> None:
    """The `vlx` console script and `python -m vlx`."""
    from vlx._cli import check_choices, config_mistake

    args = sys.argv[1:]  # as Hydra reads them: nothing is rewritten
    signal.signal(signal.SIGTERM, _on_sigterm)
    logging.raiseExceptions = False  # a full disk: the log file's writes fail quietly, the console says why
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    # Hydra re-raises what goes wrong, and vlx says it in one line (HYDRA_FULL_ERROR=1 keeps Hydra's tracebacks)
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        if (problem := check_choices(Path(CONFIG_DIR), args)) is not None:
            _fail(problem, 2)
        sys.argv[1:] = args + launcher_overrides(args)
        _hydra_main()
    except KeyboardInterrupt as err:  # before the stage began (composing the config, starting up)
        _fail("interrupted before the run began", _exit_code(err))
    except SweepJobFailed as err:  # Hydra passes on the first failed job once every job of the sweep has run
        _sweep_failed(err)
    except Exception as err:
        # Hydra's own errors, before or after the stage (the stage's reach here only when they are bugs)
        if full_error or getattr(err, "vlx_stage_error", False):
            raise
        # a mistake in the arguments, or a run directory Hydra cannot make or write its log into (an OSError)
        problem = config_mistake(err, Path(CONFIG_DIR), args)
        if problem is None:
            raise
        _fail(problem, 2)


def _sweep_failed(err: SweepJobFailed) -> None:
    """The end of a sweep some of whose jobs failed: a line per failed job (from the records in the job folders,
    which submitit's jobs, run in other processes, leave too) and the count; exit 2 where vlx refused every one,
    else 1. A sweep whose every job was refused leaves nothing behind, as a refused run."""
    state = dict(RunDirGuard.state)
    sweep = state["folder"] if state.get("sweep") else Path(err.sweep_dir)
    jobs, failed = sweep_failures(sweep, since=state.get("started"))
    if not failed:  # no record could be written (a full disk): what Hydra passed on
        sys.stderr.write(f"vlx: error: a sweep job failed: {err}\n")
        sys.exit(2 if err.refused else 1)
    overrides = distinguishing_overrides(jobs)
    for job, record in failed:
        number = record.get("job") if record.get("job") is not None else job.name
        sys.stderr.write(f"vlx: error: job {number} ({' '.join(overrides.get(job, []))}): {record['error']}\n")
    refused = all(record.get("kind") == "refused" for _, record in failed)
    if len(failed) < len(jobs):
        summary = f"the others finished: vlx stage=report stage.sweep={sweep}"
    elif refused and discard_refused_run():
        summary = "nothing was kept"
    else:
        summary = f"each job's vlx.log under {sweep} says more"
    sys.stderr.write(f"vlx: error: {len(failed)} of {len(jobs)} sweep jobs failed; {summary}\n")
    sys.exit(2 if refused else 1)


def _fail(message: str, code: int) -> None:
    """Says what went wrong before Hydra's logging exists (composing the config, making the run directory)."""
    sys.stderr.write(f"vlx: error: {message}\n")
    if code == 2:
        discard_refused_run()
    sys.exit(code)


if __name__ == "__main__":
    main()
