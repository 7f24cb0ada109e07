"""What a run can be refused for before its stage's module is imported: torch, transformers and datasets take
seconds to import, tens of seconds on a loaded machine, and a missing folder should not wait for them.

Checked here, with the same messages the stages give later: the run directories a command names (`stage.run=`,
`stage.resume=`, `stage.runs=`, `fewshot.source=`, `finetune.only_correct_from=`) exist; the directory a stage writes
into, and the runs that eval, judge, review, select_correct and compare read, are not being written by another vlx run;
the task's data files are there (and e-SNLI-VE's image folder); and Java is there where the infer run will score
explanations with it. Everything else is checked where it always was.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from vlx.configs import check_removed_keys
from vlx.errors import DataError
from vlx.run.directory import RunDir
from vlx.run.lock import check_idle

# stages that read the run named by `stage.run=`
_RUN_READERS = ("eval", "judge", "review", "select_correct")


def early_checks(cfg: DictConfig) -> None:
    """Refuses, with the stage's own one-line message, what can be known without the heavy imports.

    Raises:
        ConfigError, DataError: as the stage would, later.
    """
    check_removed_keys(cfg)  # a key that is gone (model.prompt_template), added with + or from a user's YAML
    stage = cfg.stage.name
    if stage in _RUN_READERS and cfg.stage.get("run"):
        check_run_idle(cfg.stage.run, "stage.run")
    if stage == "compare":
        for path in cfg.stage.get("runs") or []:
            check_run_idle(path, "stage.runs")
    if stage == "infer":
        resume = cfg.stage.get("resume")
        out = RunDir.find(resume, "stage.resume").path if resume else Path(cfg.paths.output_dir)
        check_idle(out)
        if cfg.shots and cfg.fewshot.get("source"):
            RunDir.find(cfg.fewshot.source, "fewshot.source")
    if stage == "finetune" and cfg.finetune.get("only_correct_from"):
        RunDir.find(cfg.finetune.only_correct_from, "finetune.only_correct_from")
    if stage in ("infer", "finetune"):
        _check_task(cfg, java=stage == "infer" and bool(cfg.get("eval_after_infer")))


def check_run_idle(path: str | Path, key: str) -> Path:
    """The folder of the run `path` names (see `RunDir.find`), refused while another vlx process writes it (its
    predictions, or its scores: an infer, eval, judge or fine-tune run holding its lock); a fine-tune run's root is
    checked as well as its `infer/`.

    Raises:
        ConfigError: no such run, or a live process holds it (named in the message).
    """
    folder = RunDir.find(path, key).path
    for candidate in dict.fromkeys((Path(path).expanduser(), folder)):
        if candidate.is_dir():
            check_idle(candidate)
    return folder


def _check_task(cfg: DictConfig, java: bool) -> None:
    """The task's data files exist (the task's own message where one does not) and, for an infer run that scores
    its explanations at the end, Java is there."""
    from vlx.metrics.coco import check_java, java_missing
    from vlx.tasks.catalog import task_from_config
    from vlx.tasks.esnli_ve import EsnliVeTask

    task = task_from_config(cfg.task)
    if any(not path.exists() for path in task.files()):
        task.read_examples()  # raises the task's own message for what is missing (task=shapes generates its files)
    if isinstance(task, EsnliVeTask) and not Path(task.image_dir).is_dir():
        raise DataError(
            f"task.image_dir={str(task.image_dir)!r}: no such folder; set task.image_dir to the folder "
            f"of the images (for e-SNLI-VE, flickr30k-images)"
        )
    use_java = cfg.eval.get("java", True)
    if java and use_java and java_missing():  # reading the items is paid only on a machine without Java
        check_java(use_java, needed=any(ex.explanations for ex in task.examples()))
