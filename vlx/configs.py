"""Where vlx's configs are, and one config group's option read on its own (a task by name, outside a Hydra run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from vlx.errors import ConfigError

# keys that are gone, each with the one line that says what replaced it: a user's old override is refused with it,
# never dropped (the README's migration table lists the same)
_PROMPT = (
    "the model is asked with task.prompt alone, in training too; write 'task.prompt=\"<your prompt>\"' ({text} "
    "is the item's text; where the old template had {prompt}, write the task's prompt text)"
)
REMOVED_KEYS = {
    "model.prompt_template": f"model.prompt_template is gone: {_PROMPT}",
    "finetune.prompt_template": f"finetune.prompt_template is gone: {_PROMPT}",
    "judge_model.prompt_template": "judge_model.prompt_template is gone: the judge is asked its own question alone",
}


def removed_key(key: str) -> str | None:
    """The line that says what replaced `key` (`model.prompt_template`, `+model.prompt_template`), or None for a key
    that was never removed."""
    return REMOVED_KEYS.get(key.lstrip("+~"))


def check_removed_keys(cfg: DictConfig) -> None:
    """Refuses a composed config that still holds a removed key (added with `+`, or from a user's own YAML).

    Raises:
        ConfigError: the first removed key found, with what replaced it.
    """
    for key, line in REMOVED_KEYS.items():
        section, name = key.split(".", 1)
        node = cfg.get(section)
        if isinstance(node, DictConfig) and name in node:
            raise ConfigError(line)


def config_dir() -> str:
    """The configs: inside the package in an installed wheel (vlx/conf), beside it in a source checkout (conf/, for
    `pip install -e .`). An absolute path, so that `vlx` works from any directory."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"vlx's configs are missing: no config.yaml in {here / 'conf'} or {here.parent / 'conf'}")


def group_option(group: str, name: str, **overrides: Any) -> DictConfig:
    """`conf/<group>/<name>.yaml` as Hydra composes it (its defaults list included), `overrides` on top, and
    `${paths.*}` resolvable (the default paths; `paths.output_dir`, which only a run has, left out).

    Raises:
        ConfigError: no such option, or one Hydra cannot compose (named in Hydra's words).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, MissingConfigException

    try:
        if GlobalHydra.instance().is_initialized():  # inside a run: the run's own search path
            composed = compose("config", overrides=[f"{group}={name}"])
        else:
            with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
                composed = compose("config", overrides=[f"{group}={name}"])
    except MissingConfigException as err:
        options = ", ".join(err.options or [])
        raise ConfigError(f"{group}={name!r} is not an option; choose one of {options}") from err
    except HydraException as err:
        raise ConfigError(f"{group}={name}: {' '.join(str(err).split())}") from err
    with open_dict(composed):
        del composed.paths["output_dir"]  # unresolved: it names Hydra's run directory
        for key, value in overrides.items():  # a key's value replaced, as a command line's `task.sizes=...` does
            composed[group][key] = value
    return composed[group]
