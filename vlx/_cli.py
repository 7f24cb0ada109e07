"""The command line's own mistakes (a typo in a key, an option that does not exist, an override Hydra cannot read, a
key added that vlx never reads, a run directory that cannot be written) as one line that says what to do, instead
of Hydra's exception text and exit code 1."""

from __future__ import annotations

import difflib
import errno
import inspect
from pathlib import Path
from typing import Any

from vlx.config_schema import moved_key
from vlx.configs import removed_key

# Where `+key=value` adds a key that vlx reads: mappings handed whole to a library, which checks their keys (generate(),
# BitsAndBytesConfig, peft's LoraConfig, AutoProcessor, TrainingArguments: vlx refuses one they do not take before the
# weights load; the judge's model has its processor_kwargs as the model has), mappings whose keys are the user's own
# names (columns, labels, splits, files), and Hydra's own settings
OPEN_MAPPINGS = (
    "hydra",
    "generation",
    "quant",
    "lora",
    "model.processor_kwargs",
    "judge_model.processor_kwargs",
    "finetune.trainer_args",
    "task.where",
    "task.aliases",
    "task.label_values",
    "task.split_names",
    "task.release.splits",
    "task.release.sha256",
)
# keys vlx reads that conf/ leaves unset: the metric Hydra's optimising sweepers are given, and a model family's own
# options (its adapter class is known only once the checkpoint is read: LLaVA-NeXT's max_tiles under model=hf)
READ_UNSET = ("optimized_metric", "model.max_tiles", "judge_model.max_tiles")
# `+key=value` is told where it works
_ADDS = "generation, quant, lora, model.processor_kwargs, finetune.trainer_args or hydra"


def _options(config_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def _groups(config_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(config_dir)) for p in config_dir.rglob("*") if p.is_dir())


def _did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _one_of(options: list[str]) -> str:
    return "choose one of " + ", ".join(options)


def _flat_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix]
    keys = [prefix] if prefix else []
    for key, value in node.items():
        keys += _flat_keys(value, f"{prefix}.{key}" if prefix else str(key))
    return keys


def _compose(config_dir: Path, overrides: list[str]) -> dict[str, Any] | None:
    """The config `overrides` compose (unresolved), or None where they do not compose."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from vlx.config_data import plain_dict

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        return plain_dict(cfg, "the config", resolve=False)
    except Exception:  # noqa: BLE001 - another mistake in the arguments, which Hydra names itself
        return None
    finally:
        GlobalHydra.instance().clear()


def known_keys(config_dir: Path, args: list[str]) -> list[str]:
    """Every setting of the config the other arguments compose (the defaults where they do not compose)."""
    overrides = [a for a in args if "=" in a and not a.startswith(("-", "hydra.", "hydra/"))]
    for attempt in (overrides, []):
        if (config := _compose(config_dir, attempt)) is not None:
            return _flat_keys(config)
    return []


def _parsed(args: list[str]) -> list[tuple[str, Any]]:
    """Each `key=value` argument with Hydra's reading of it (those Hydra cannot read are left to Hydra to name)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = []
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            parsed.append((arg, parser.parse_override(arg)))
        except Exception:  # noqa: BLE001 - Hydra says what it cannot read when it composes
            continue
    return parsed


def _values(override: Any) -> list[Any]:
    """The values an override gives: one, a list's items, or every value of a sweep (none for an interval)."""
    if override.is_sweep_override():
        try:
            return list(override.sweep_iterator())
        except Exception:  # noqa: BLE001 - an interval or glob sweep: nothing to enumerate
            return []
    value = override.value()
    return list(value) if isinstance(value, list) else [value]


def _typed(value: Any) -> str:
    """A value as the command line writes it (Hydra read `4` as an int, `true` as a bool, `null` as None)."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _close_options(choice: str, options: list[str]) -> str:
    """`4` -> 4bit: the options that start with what was typed, else those spelled alike."""
    close = [o for o in options if o.startswith(choice)]
    return f" (did you mean {' or '.join(close[:3])}?)" if close else _did_you_mean(choice, options)


def _not_a_name(arg: str, group: str, value: Any, sweep: bool, config_dir: Path) -> str:
    """`quant=4`: Hydra read a number (or true, null) that cannot name an option."""
    choice = _typed(value) if sweep else arg.split("=", 1)[1]
    not_this = f", not {choice}" if sweep else ""
    if group.startswith("hydra/"):  # Hydra's plugins add options that conf/ does not hold
        return f"{arg}: {group} takes the name of an option{not_this}"
    options = _options(config_dir, group)
    hint = _close_options(choice, options)
    return f"{arg}: {group} takes the name of an option{not_this}{hint}: {', '.join(options)}"


def _check_group_values(config_dir: Path, parsed: list[tuple[str, Any]], all_options_here: bool) -> str | None:
    """A `group=value` whose value cannot name an option: a number or a boolean (Hydra reads `quant=4` as the int 4,
    and says only "Config group override must be a string" without naming it), in a sweep too; and, where every
    option is in conf/, a sweep value that names none (Hydra would find it only when that job's turn comes)."""
    groups = {g for g in _groups(config_dir) if g != "hydra"}
    for arg, override in parsed:
        group = override.key_or_group
        if override.is_delete() or (group not in groups and not (group.startswith("hydra/") and "." not in group)):
            continue
        for value in _values(override):
            if isinstance(value, dict):
                continue  # the group's keys given as a mapping, which Hydra merges into it
            if not isinstance(value, str):
                return _not_a_name(arg, group, value, override.is_sweep_override(), config_dir)
            if (
                override.is_sweep_override()
                and all_options_here
                and not group.startswith("hydra/")
                and value not in (options := _options(config_dir, group))
            ):
                return f"{arg}: there is no {group} {value!r}{_close_options(value, options)}; {_one_of(options)}"
    return None


def _task_parameters(task: dict[str, Any]) -> set[str]:
    """The keyword arguments the task's class takes (a setting its YAML leaves out, e.g. `subset`), and for a table
    task the column roles."""
    from hydra.utils import get_class

    try:
        cls = get_class(str(task.get("_target_")))
    except Exception:  # noqa: BLE001 - not a class vlx can import: the run names it
        return set()
    names = set()
    for klass in cls.__mro__:
        if (init := vars(klass).get("__init__")) is not None:  # the class's own, not one it inherits
            params = inspect.signature(init).parameters.values()
            names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
    if isinstance(task.get("columns"), dict):
        from vlx.tasks.table import COLUMN_ROLES

        names |= {f"columns.{role}" for role in COLUMN_ROLES}
    return names


def _is_hydra(key: str) -> bool:
    """Hydra's own settings (`hydra.job.env_set.X`) and groups (`hydra/launcher`), which Hydra checks itself."""
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def _reads(key: str, config: dict[str, Any]) -> bool:
    """Whether vlx reads `key` where a command line sets or adds it, in a run composed as `config`."""
    keys = set(_flat_keys(config))
    if key in keys or key in READ_UNSET or _is_hydra(key):
        return True
    if any(key.startswith(f"{node}.") and node in keys for node in OPEN_MAPPINGS):
        return True
    task = config.get("task")
    return key.startswith("task.") and isinstance(task, dict) and key[len("task.") :] in _task_parameters(task)


def _compositions(config_dir: Path, parsed: list[tuple[str, Any]]) -> list[dict[str, Any]] | None:
    """The configs the arguments compose, other than the keys they add: one per option of a swept group (the other
    groups at their first), or None where they do not compose (Hydra then names the mistake)."""
    groups = set(_groups(config_dir))
    fixed, swept = [], []
    for arg, override in parsed:
        key = override.key_or_group
        if override.is_add() or override.is_force_add() or _is_hydra(key):
            continue
        if not override.is_sweep_override():
            fixed.append(arg)
        elif key in groups and (values := [v for v in _values(override) if isinstance(v, str)]):
            swept.append((key, values))
    firsts = [f"{key}={values[0]}" for key, values in swept]
    variants = [firsts] + [
        [*firsts[:i], f"{key}={value}", *firsts[i + 1 :]]
        for i, (key, values) in enumerate(swept)
        for value in values[1:]
    ]
    configs = [_compose(config_dir, fixed + variant) for variant in variants]
    composed = [c for c in configs if c is not None]
    return composed if len(composed) == len(configs) else None


def _check_added_keys(config_dir: Path, parsed: list[tuple[str, Any]]) -> str | None:
    """A `+key=value` (or `++`) that adds a key vlx never reads, which would run and be recorded as if it mattered,
    and a `+group=option` for a group that has its option already (Hydra's "Multiple values for" it)."""
    roots = {g for g in _groups(config_dir) if "/" not in g and g != "hydra"}
    added = [(arg, o) for arg, o in parsed if (o.is_add() or o.is_force_add()) and not _is_hydra(o.key_or_group)]
    for arg, override in added:
        if override.key_or_group in roots:
            return f"{arg}: {override.key_or_group} has an option already; write {arg.lstrip('+')}, without the +"
    added = [(arg, o) for arg, o in added if "/" not in o.key_or_group and o.package is None]
    if not added or (configs := _compositions(config_dir, parsed)) is None:
        return None
    for arg, override in added:
        key = override.key_or_group
        if (line := removed_key(key) or moved_key(key)) is not None:
            return f"{arg}: {line}"
        if any(_reads(key, config) for config in configs):
            continue
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        siblings = [k for k in _flat_keys(configs[0]) if (k.rsplit(".", 1)[0] if "." in k else "") == parent]
        return (
            f"{arg}: vlx has no setting {key!r}{_did_you_mean(key, siblings)} and would never read it. "
            f"`vlx <your settings> --cfg job` prints every setting; + adds only keys vlx reads, such as any under "
            f"{_ADDS}"
        )
    return None


def check_choices(config_dir: Path, args: list[str]) -> str | None:
    """What the command line gets wrong where Hydra would not say so itself, or not in one line naming the argument,
    before anything runs: an `experiment=<typo>` (an optional group: Hydra silently runs the defaults), a group
    given a number (`quant=4`) or, in a sweep, an option that does not exist, and a `+key=value` that adds a key vlx
    never reads."""
    parsed = _parsed(args)
    for arg, override in parsed:
        if override.key_or_group != "experiment":
            continue
        options = _options(config_dir, "experiment")
        for choice in _values(override):
            if choice is not None and choice not in options:
                hint = _did_you_mean(str(choice), options)
                return f"{arg}: there is no experiment {choice!r}{hint}; {_one_of(options)}"
    # options outside conf/ (hydra.searchpath, another config folder) are Hydra's to find
    all_options_here = not any(a.startswith(("hydra.searchpath", "-cp", "-cd", "--config")) for a in args)
    return _check_group_values(config_dir, parsed, all_options_here) or _check_added_keys(config_dir, parsed)


def config_mistake(err: BaseException, config_dir: Path, args: list[str]) -> str | None:
    """One line for a mistake Hydra found while composing the config from `args` or making the run directory, or
    None for anything else."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    text = str(err)
    if isinstance(err, MissingConfigException):
        missing = str(err.missing_cfg_file or "")
        if "/" in missing:  # an option of a group (`judge_model/tiny_lava`), and Hydra's list of the group's options
            group, choice = missing.rsplit("/", 1)
            options = list(err.options or _options(config_dir, group))
            return f"{group}={choice}: no such option{_did_you_mean(choice, options)}; {_one_of(options)}"
        return text.splitlines()[0]
    if isinstance(err, OverrideParseException):
        lines = [line for line in text.splitlines() if line and not line.startswith("See https")]
        return (
            f"cannot read the command line ({'; '.join(lines)}). Settings are key=value; quote a value that holds "
            "spaces, brackets or commas, e.g. 'task.prompt=\"Is it, or not?\"'"
        )
    if isinstance(err, HydraException):
        if isinstance(err.__cause__, OmegaConfBaseException) and text.startswith("Could not override"):
            # Hydra's override of a key the config lacks: OmegaConf's error names it (full_key)
            return _unknown_key(_overridden_key(err.__cause__, args), config_dir, args)
        return " ".join(line.strip() for line in text.splitlines() if line.strip())
    if isinstance(err, ValueError) and "Config group override must be a string" in text:
        return _check_group_values(config_dir, _parsed(args), all_options_here=False) or text
    if isinstance(err, ValueError) and text.startswith("Only one of --run, --multirun, --cfg"):
        return text  # `-m` with `--cfg job`: Hydra's own line says it
    return run_dir_problem(err)


def _overridden_key(err: Any, args: list[str]) -> str:
    """The key of the override Hydra could not apply: the argument whose key holds OmegaConf's `full_key` (the
    override `a.b.c` where `a.b` is missing names `a.b`)."""
    full_key = str(getattr(err, "full_key", "") or "")
    keys = [a.split("=", 1)[0].lstrip("+~") for a in args if "=" in a and not a.startswith("-")]
    return next((k for k in keys if k == full_key), None) or next(
        (k for k in keys if k.startswith(f"{full_key}.")), full_key
    )


def _stages_with(key: str, config_dir: Path) -> list[str]:
    """The stages whose option of the `stage` group has `key` (`run`)."""
    from omegaconf import OmegaConf

    return sorted(p.stem for p in (config_dir / "stage").glob("*.yaml") if key in OmegaConf.load(p))


def _unknown_key(key: str, config_dir: Path, args: list[str]) -> str:
    """`key=value` for a key the config does not have: a key that moved (said where it lives now), a stage's key
    given to another stage, `+key=value` where vlx reads it once added."""
    arg = next((a for a in args if a.split("=", 1)[0].lstrip("+~") == key), key)
    if (line := removed_key(key) or moved_key(key)) is not None:
        return f"{arg}: {line}"
    others = [a for a in args if a != arg]
    config = _compose(config_dir, [a for a in others if "=" in a and not a.startswith(("-", "hydra.", "hydra/"))])
    if key.startswith("stage.") and (stages := _stages_with(key.split(".")[1], config_dir)):
        stage = (config or {}).get("stage", {}).get("name", "this stage")
        return f"{arg}: stage={stage} has no setting {key!r}; it is a setting of stage={', '.join(stages)}"
    if key.startswith("judge_model.") and config is not None and config.get("judge_model") is None:
        return f"{arg}: choose the judge first, judge_model=<a conf/model option> (stage=judge)"
    if config is not None and isinstance(config.get(key), dict):
        # `quant={a: 1}`: a group's keys given as a mapping, one of which it does not have
        return (
            f"{arg}: set {key}'s settings one at a time, {key}.<setting>=<value>; `vlx <your settings> --cfg "
            "job` prints them"
        )
    if config is not None and _reads(key, config):
        return f"{arg}: {key} is not set unless added; write +{arg.lstrip('+~')}"
    keys = known_keys(config_dir, others)
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    siblings = [k for k in keys if (k.rsplit(".", 1)[0] if "." in k else "") == parent]
    if not parent:
        siblings += _groups(config_dir)
    return (
        f"{arg}: vlx has no setting {key!r}{_did_you_mean(key, siblings)}. `vlx <your settings> --cfg job` "
        "prints every setting"
    )


def _blocking_file(path: Path) -> Path:
    """The file that stands where a folder of `path` should be (ENOTDIR), or `path` itself."""
    for folder in (path, *path.parents):
        if folder.is_file():
            return folder
    return path


def run_dir_problem(err: BaseException) -> str | None:
    """One line for a run (or sweep) directory that Hydra cannot make or write its log and `.hydra/` record into,
    naming the path and what to do; None for another error.

    Hydra opens `<run dir>/vlx.log` before vlx runs: logging's dictConfig then raises ValueError("Unable to configure
    handler 'file'") from the OSError.
    """
    from vlx.errors import os_error_message
    from vlx.run.guard import RunDirGuard

    if isinstance(err, ValueError) and str(err).startswith("Unable to configure handler"):
        err = err.__cause__  # type: ignore[assignment]
    if not isinstance(err, OSError):
        return None
    folder, sweep = RunDirGuard.state.get("folder"), RunDirGuard.state.get("sweep", False)
    if err.filename is None and folder is not None:
        # a write into a file already open (Hydra's `.hydra/*.yaml`, the log; a full disk) names no file: the folder
        err.filename = str(folder)
    path = Path(str(err.filename)) if err.filename is not None else None
    if path is None or folder is None or not path.absolute().is_relative_to(folder):
        return os_error_message(err) or f"{err.filename or ''}: {err.strerror or err}".lstrip(": ")
    setting = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    if err.errno in (errno.EACCES, errno.EPERM):
        target = next((p for p in (path, *path.parents) if p.exists()), path)
        reason = (err.strerror or "permission denied").lower()
        return f"cannot write {path} ({reason}): chmod u+w {target}, or choose another {setting}"
    if err.errno == errno.EISDIR:
        return f"cannot write {path}: it is a folder; move it away or choose another {setting}"
    if err.errno in (errno.ENOTDIR, errno.EEXIST):
        return (
            f"cannot make the folder {path}: {_blocking_file(path)} is a file; move it away or choose another {setting}"
        )
    if err.errno == errno.EROFS:
        return f"cannot write {path}: the file system is read-only; choose another {setting}"
    return os_error_message(err) or f"cannot write {path} ({err.strerror or err}); choose another {setting}"


def missing_value(err: BaseException, choices: dict[str, str]) -> str | None:
    """One line for a required setting (`???` in conf/) that the command did not give."""
    from omegaconf.errors import MissingMandatoryValue

    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, MissingMandatoryValue):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    key = getattr(cause, "full_key", "") or "a required setting"
    group = key.split(".", 1)[0]
    needed_by = f" ({group}={choices[group]} needs it)" if group in choices else ""
    return f"{key} is not set{needed_by}: add {key}=... to the command"
