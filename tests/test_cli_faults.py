"""The command line's mistakes that Hydra lets through or says in a traceback: a run (or sweep) directory that
cannot be written, a `+key=value` adding a key vlx never reads, and a config group given a number (`quant=4`). Each
is one line naming the argument or path and what to do, exit 2, before anything runs."""

from __future__ import annotations

import contextlib
import inspect
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import one_error_line, run_vlx, unwritable

from vlx._cli import OPEN_MAPPINGS, READ_UNSET, check_choices, known_keys
from vlx.configs import config_dir

CONF = Path(config_dir())
# fails before the weights load in every case here; where it got that far, it is quick anyway
TINY_RUN = ["model=tiny_llava", "task=shapes", "task.limit=1", "generation.max_new_tokens=2", "eval_after_infer=false"]
QUANT_OPTIONS = "4bit, nf4, none"


# --- a run directory that cannot be written -----------------------------------------------------------------------


def _reason() -> str:
    return "permission denied" if os.geteuid() != 0 else "operation not permitted"  # EACCES, or EPERM for chattr +i


def test_an_unwritable_run_directory_is_one_line(tmp_path):
    """Hydra opens `<run dir>/vlx.log` before vlx runs: it failed as logging's "Unable to configure handler 'file'"
    traceback."""
    run = tmp_path / "run"
    run.mkdir()
    with unwritable(run):
        res = run_vlx(*TINY_RUN, f"hydra.run.dir={run}")
    assert res.returncode == 2, res.stderr[-3000:]
    assert one_error_line(res) == (
        f"vlx: error: cannot write {run / 'vlx.log'} ({_reason()}): chmod u+w {run}, or choose another hydra.run.dir"
    )
    assert run.is_dir() and not any(run.iterdir())  # the user's folder is left as it was


def test_a_read_only_log_file_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "vlx.log").write_text("an earlier run's log\n")
    with unwritable(run / "vlx.log"):
        res = run_vlx(*TINY_RUN, f"hydra.run.dir={run}")
    assert res.returncode == 2, res.stderr[-3000:]
    log = run / "vlx.log"
    assert one_error_line(res) == (
        f"vlx: error: cannot write {log} ({_reason()}): chmod u+w {log}, or choose another hydra.run.dir"
    )
    assert log.read_text() == "an earlier run's log\n"


def test_a_folder_where_the_log_file_goes_is_one_line(tmp_path):
    """Root too: the log file cannot be opened."""
    run = tmp_path / "run"
    (run / "vlx.log").mkdir(parents=True)
    res = run_vlx(*TINY_RUN, f"hydra.run.dir={run}")
    assert res.returncode == 2, res.stderr[-3000:]
    assert one_error_line(res) == (
        f"vlx: error: cannot write {run / 'vlx.log'}: it is a folder; move it away or choose another hydra.run.dir"
    )


def test_a_file_where_the_run_folder_goes_is_one_line(tmp_path):
    """Root too: the run folder cannot be made (it said only `<path>: Not a directory`)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run_vlx(*TINY_RUN, f"hydra.run.dir={blocker / 'run'}")
    assert res.returncode == 2, res.stderr[-3000:]
    assert one_error_line(res) == (
        f"vlx: error: cannot make the folder {blocker / 'run'}: {blocker} is a file; move "
        "it away or choose another hydra.run.dir"
    )
    assert blocker.read_text() == "x"


def test_an_unwritable_sweep_directory_is_one_line(tmp_path):
    """The sweep's own folder (Hydra writes multirun.yaml there first) and a job's folder inside it."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    with unwritable(sweep):
        res = run_vlx("-m", *TINY_RUN, f"hydra.sweep.dir={sweep}")
    assert res.returncode == 2, res.stderr[-3000:]
    assert one_error_line(res) == (
        f"vlx: error: cannot write {sweep / 'multirun.yaml'} ({_reason()}): chmod u+w "
        f"{sweep}, or choose another hydra.sweep.dir"
    )
    (sweep / "0").mkdir()
    with unwritable(sweep / "0"):
        res = run_vlx("-m", *TINY_RUN, f"hydra.sweep.dir={sweep}")
    assert res.returncode == 2, res.stderr[-3000:]
    assert one_error_line(res) == (
        f"vlx: error: cannot write {sweep / '0' / 'vlx.log'} ({_reason()}): chmod u+w "
        f"{sweep / '0'}, or choose another hydra.sweep.dir"
    )


# --- `+key=value` adding a key vlx never reads --------------------------------------------------------------------

ADDS = "generation, quant, lora, model.processor_kwargs, finetune.trainer_args or hydra"


@contextlib.contextmanager
def full_disk(folder: Path) -> Iterator[Path]:
    """A real full disk at `folder`: a 64 KiB tmpfs filled up (root only; skipped where mounting is not allowed)."""
    folder.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True
        ).returncode
    ):
        pytest.skip("a real full disk needs a tmpfs, which only root can mount (and not in every container)")
    try:
        filler = folder / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_run_directory_on_a_full_disk_is_named(tmp_path):
    """Hydra writes `.hydra/` into the new run folder before vlx runs; a full disk there (a write into an open
    file, which carries no file name) names the run folder, not "a file"."""
    with full_disk(tmp_path / "disk") as disk:
        res = run_vlx(*TINY_RUN, f"hydra.run.dir={disk / 'run'}")
        line = one_error_line(res)
    assert res.returncode == 2
    assert f"cannot write {disk / 'run'}: the disk is full" in line, line


def test_adding_a_key_vlx_never_reads_is_refused_before_anything_runs(tmp_path):
    """`+foo=1` ran, and the run's record kept foo as if it had mattered."""
    run = tmp_path / "run"
    res = run_vlx(*TINY_RUN, "+foo=1", f"hydra.run.dir={run}")
    assert res.returncode == 2, res.stderr[-3000:]
    assert one_error_line(res) == (
        "vlx: error: +foo=1: vlx has no setting 'foo' and would never read it. `vlx <your settings> --cfg job` prints "
        f"every setting; + adds only keys vlx reads, such as any under {ADDS}"
    )
    assert not run.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["++foo=1"], "++foo=1: vlx has no setting 'foo' and would never read it"),
        (["+task.limt=3"], "+task.limt=3: vlx has no setting 'task.limt' (did you mean task.limit"),
        (["+model.foo=1"], "+model.foo=1: vlx has no setting 'model.foo'"),
        (["+eval.foo=1"], "+eval.foo=1: vlx has no setting 'eval.foo'"),
        (["+logger.foo=1"], "+logger.foo=1: vlx has no setting 'logger.foo'"),
        (["stage=finetune", "+finetune.foo=1"], "+finetune.foo=1: vlx has no setting 'finetune.foo'"),
        # a table task's own mappings, on a task that has none
        (["task=meme", "+task.where.split=test"], "+task.where.split=test: vlx has no setting 'task.where.split'"),
        (["task=meme", "+task.columns.answers=a"], "+task.columns.answers=a: vlx has no setting"),
        (["-m", "model=tiny_llava,tiny_paligemma", "+foo=1,2"], "+foo=1,2: vlx has no setting 'foo'"),
        # a group's option is chosen with group=option: Hydra said "Multiple values for quant"
        (["+quant=4bit"], "+quant=4bit: quant has an option already; write quant=4bit, without the +"),
        (["++experiment=demo"], "++experiment=demo: experiment has an option already; write experiment=demo"),
    ],
)
def test_adding_a_key_vlx_never_reads_is_named(args, message):
    problem = check_choices(CONF, args)
    assert problem is not None and problem.startswith(message), problem


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["+generation.num_beams=2"], "generation.num_beams"),  # generate()'s keywords
        (["quant=4bit", "+quant.llm_int8_threshold=5.0"], "quant.llm_int8_threshold"),  # BitsAndBytesConfig's
        (["lora=r64", "+lora.use_rslora=true"], "lora.use_rslora"),  # peft's LoraConfig
        (["+model.processor_kwargs.max_pixels=1000"], "model.processor_kwargs.max_pixels"),
        (["+finetune.trainer_args.optim=adamw_torch"], "finetune.trainer_args.optim"),
        (["stage=judge", "judge_model=hf", "judge_model.checkpoint=/models/x"], "judge_model.checkpoint"),
        (["stage=judge", "judge_model=hf", "+judge_model.processor_kwargs.max_pixels=1"], None),
        (["+optimized_metric=accuracy"], "optimized_metric"),  # what an optimising sweeper reads
        (["model=hf", "model.checkpoint=x", "+model.max_tiles=4"], "model.max_tiles"),  # a family's own option
        (["task=scienceqa", "+task.subset=x"], "task.subset"),  # the task class takes it; its YAML leaves it out
        (["task=table", "task.source=x", "+task.columns.answers=a"], "task.columns.answers"),
        (["task=table", "task.source=x", "+task.where.split=test"], "task.where.split"),
        (["++task.limit=3"], "task.limit"),
        (["+task.limit=3"], "task.limit"),
        (["-m", "task=meme,table", "+task.where.split=test"], None),  # read by the table job
        (["+hydra.job.env_set.X=1"], None),
    ],
)
def test_keys_vlx_reads_can_be_added(args, key):
    assert check_choices(CONF, args) is None
    if key is not None and "-m" not in args:
        assert key in known_keys(CONF, args)  # Hydra adds it


def test_the_keys_vlx_reads_unset_are_those_its_code_takes():
    """READ_UNSET's model keys are the options a model family's adapter takes beyond every adapter's (the model YAMLs
    of other families leave them out), and every open mapping is a node some composed config has."""
    from vlx.models.families import FAMILY_ADAPTERS
    from vlx.models.hf import HFAdapter

    def params(cls: type) -> set[str]:
        return {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")}

    family = set().union(*(params(cls) for cls in FAMILY_ADAPTERS.values())) - params(HFAdapter)
    assert {f"model.{p}" for p in family} == {k for k in READ_UNSET if k.startswith("model.")}
    assert {f"judge_model.{p}" for p in family} == {k for k in READ_UNSET if k.startswith("judge_model.")}
    keys = set(known_keys(CONF, ["task=aokvqa"])) | set(known_keys(CONF, ["task=table"]))
    keys |= set(known_keys(CONF, ["judge_model=llava"]))  # the judge's model, where stage=judge chooses one
    assert all(node == "hydra" or node in keys for node in OPEN_MAPPINGS)


def test_a_key_that_needs_a_plus_says_so():
    res = run_vlx("model=tiny_llava", "generation.num_beams=2", "--cfg", "job")
    assert res.returncode == 2
    assert one_error_line(res) == (
        "vlx: error: generation.num_beams=2: generation.num_beams is not set unless added; "
        "write +generation.num_beams=2"
    )


# --- a config group given a number ------------------------------------------------------------------------------


def test_a_group_given_a_number_names_that_argument():
    """`quant=4` was reported as `model=tiny_llava: model takes the name of an option` (the first group argument)."""
    res = run_vlx("model=tiny_llava", "task=shapes", "quant=4", "--cfg", "job")
    assert res.returncode == 2
    assert (
        one_error_line(res) == f"vlx: error: quant=4: quant takes the name of an option (did you mean 4bit?): "
        f"{QUANT_OPTIONS}"
    )


def test_a_sweep_giving_a_group_a_number_is_refused_before_any_job(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_vlx("-m", *TINY_RUN, "quant=4,8", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 2
    assert one_error_line(res) == (
        f"vlx: error: quant=4,8: quant takes the name of an option, not 4 (did you mean 4bit?): {QUANT_OPTIONS}"
    )
    assert not sweep.exists()


def test_a_sweep_naming_an_option_that_does_not_exist_is_refused_before_any_job(tmp_path):
    """Hydra finds it only when that job's turn comes, after the jobs before it have run."""
    sweep = tmp_path / "sweep"
    res = run_vlx("-m", "model=tiny_llava,tiny_palligemma", *TINY_RUN[1:], f"hydra.sweep.dir={sweep}")
    assert res.returncode == 2
    assert one_error_line(res).startswith(
        "vlx: error: model=tiny_llava,tiny_palligemma: there is no model 'tiny_palligemma' (did you mean tiny_paligemma"
    )
    assert not sweep.exists()


def _options(group: str) -> str:
    return ", ".join(sorted(p.stem for p in (CONF / group).glob("*.yaml")))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model=tiny_llava", "model=7"], "model=7: model takes the name of an option: " + _options("model")),
        (["model=tiny_llava", "task=1"], "task=1: task takes the name of an option: " + _options("task")),
        (["model=tiny_llava", "lora=64"], "lora=64: lora takes the name of an option (did you mean r64?): "
                                          + _options("lora")),
        (["task=shapes", "stage=1"], "stage=1: stage takes the name of an option: " + _options("stage")),
        (["task=shapes", "generation=1.5"], "generation=1.5: generation takes the name of an option: "
                                            + _options("generation")),
        (["task=shapes", "logger=true"], "logger=true: logger takes the name of an option: " + _options("logger")),
        (["task=shapes", "quant=null"], f"quant=null: quant takes the name of an option: {QUANT_OPTIONS}"),
        (["task=shapes", "quant=[4]"], f"quant=[4]: quant takes the name of an option: {QUANT_OPTIONS}"),
        (["task=shapes", "finetune=1"], "finetune=1: finetune takes the name of an option: " + _options("finetune")),
        (["task=shapes", "eval/bertscore=1"], "eval/bertscore=1: eval/bertscore takes the name of an option: "
                                              + _options("eval/bertscore")),
        (["task=shapes", "hydra/launcher=1"], "hydra/launcher=1: hydra/launcher takes the name of an option"),
        (["-m", "model=tiny_llava", "quant=4bit,8"], "quant=4bit,8: quant takes the name of an option, not 8: "
                                                     + QUANT_OPTIONS),
        (["-m", "lora=r64,64"], "lora=r64,64: lora takes the name of an option, not 64 (did you mean r64?): "
                                + _options("lora")),
        (["-m", "quant=choice(4,nf4)"], "quant=choice(4,nf4): quant takes the name of an option, not 4 (did you mean "
                                        f"4bit?): {QUANT_OPTIONS}"),
    ],
)  # fmt: skip
def test_every_group_given_a_number_is_named(args, message):
    assert check_choices(CONF, args) == message


def test_options_outside_conf_are_left_to_hydra():
    """With hydra.searchpath, options may live in another folder: a sweep value not in conf/ is not refused here."""
    assert check_choices(CONF, ["-m", "hydra.searchpath=[file:///elsewhere]", "task=mine,meme"]) is None
