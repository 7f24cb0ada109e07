"""Where vlx's configs are, and one config group's option read on its own (a task by name, outside a Hydra run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vlx.errors import ConfigError

# keys that are gone, each with the one line that says what replaced it: a user's old override is refused with it,
# never dropped (the README's migration table lists the same)
_PROMPT = ("the model is asked with task.prompt alone, in training too; write 'task.prompt=\"<your prompt>\"' ({text} "
           "is the item's text; where the old template had {prompt}, write the task's prompt text)")  # fmt: skip
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
    """`conf/<group>/<name>.yaml` with the options its defaults list names in the same group merged under it (as
    Hydra composes them), `overrides` on top, and `${paths.*}` resolvable (the default paths; `paths.output_dir`,
    which only a run has, left out).

    Raises:
        ConfigError: no such option.
    """
    root = Path(config_dir())
    node = _with_defaults(root / group, name, seen=())
    paths = OmegaConf.load(root / "paths" / "default.yaml")
    del paths["output_dir"]  # unresolved: it names Hydra's run directory
    composed = OmegaConf.create({"paths": paths, group: node})
    for key, value in overrides.items():  # a key's value replaced, as a command line's `task.sizes=...` does
        composed[group][key] = value
    return composed[group]


def _with_defaults(folder: Path, name: str, seen: tuple[str, ...]) -> DictConfig:
    path = folder / f"{name}.yaml"
    if not path.is_file():
        options = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise ConfigError(f"{folder.name}={name!r} is not an option; choose one of {options}")
    if name in seen:
        raise ConfigError(f"{path}: its defaults list comes back to itself ({' -> '.join((*seen, name))})")
    node = OmegaConf.load(path)
    merged = OmegaConf.create({})
    own_placed = False
    for entry in node.pop("defaults", []):
        if entry == "_self_":
            merged, own_placed = OmegaConf.merge(merged, node), True
        else:
            merged = OmegaConf.merge(merged, _with_defaults(folder, str(entry), (*seen, name)))
    return merged if own_placed else OmegaConf.merge(merged, node)
