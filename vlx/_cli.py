"""The command line's own mistakes (a typo in a key, an option that does not exist, an override Hydra cannot read) as
one line that says what to do, instead of Hydra's exception text and exit code 1."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any


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


def known_keys(config_dir: Path, args: list[str]) -> list[str]:
    """Every setting of the config the other arguments compose (the defaults where they do not compose)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    overrides = [a for a in args if "=" in a and not a.startswith(("-", "hydra.", "hydra/"))]
    for attempt in (overrides, []):
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
                cfg = compose("config", overrides=attempt)
            return _flat_keys(OmegaConf.to_container(cfg, resolve=False))
        except Exception:  # noqa: BLE001 - another mistake in the arguments: fall back to the defaults
            continue
        finally:
            GlobalHydra.instance().clear()
    return []


def check_choices(config_dir: Path, args: list[str]) -> str | None:
    """A `group=option` whose option does not exist where Hydra would not say so itself: `experiment` is an optional
    group, and Hydra silently runs the defaults for `experiment=<typo>`."""
    for arg in args:
        match = re.match(r"^\+*(experiment)=(.+)$", arg)
        if not match:
            continue
        group, value = match.groups()
        options = _options(config_dir, group)
        for choice in value.split(","):
            if choice not in options and choice != "null":
                return f"{arg}: there is no {group} {choice!r}{_did_you_mean(choice, options)}; {_one_of(options)}"
    return None


def config_mistake(err: BaseException, config_dir: Path, args: list[str]) -> str | None:
    """One line for a mistake Hydra found while composing the config from `args`, or None for anything else."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException

    text = str(err)
    if isinstance(err, MissingConfigException):
        match = re.search(r"Could not (?:find|load) '([^']+)/([^'/]+)'", text)
        if match:
            group, choice = match.groups()
            options = list(getattr(err, "options", None) or _options(config_dir, group))
            return f"{group}={choice}: no such option{_did_you_mean(choice, options)}; {_one_of(options)}"
        return text.splitlines()[0]
    if isinstance(err, OverrideParseException):
        lines = [line for line in text.splitlines() if line and not line.startswith("See https")]
        return (
            f"cannot read the command line ({'; '.join(lines)}). Settings are key=value; quote a value that holds "
            "spaces, brackets or commas, e.g. 'task.prompt=\"Is it, or not?\"'"
        )
    if isinstance(err, HydraException):
        match = re.search(r"Could not override '([^']+)'", text)
        if match:
            key = match.group(1)
            arg = next((a for a in args if a.split("=", 1)[0].lstrip("+~") == key), key)
            keys = known_keys(config_dir, [a for a in args if a != arg])
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            siblings = [k for k in keys if (k.rsplit(".", 1)[0] if "." in k else "") == parent]
            if not parent:
                siblings += _groups(config_dir)
            return (
                f"{arg}: vlx has no setting {key!r}{_did_you_mean(key, siblings)}. `vlx <your settings> --cfg job` "
                f"prints every setting; +{key}=... adds a new key on purpose"
            )
        return " ".join(line.strip() for line in text.splitlines() if line.strip())
    if isinstance(err, ValueError) and "Config group override must be a string" in text:
        groups = _groups(config_dir)
        for arg in args:
            name, _, value = arg.partition("=")
            if name in groups and value:
                return f"{arg}: {name} takes the name of an option: " + ", ".join(_options(config_dir, name))
        return text
    return None


def missing_value(err: BaseException, choices: dict[str, str]) -> str | None:
    """One line for a required setting (`???` in conf/) that the command did not give."""
    from omegaconf.errors import MissingMandatoryValue

    while err is not None and not isinstance(err, MissingMandatoryValue):
        err = err.__cause__ or err.__context__
    if err is None:
        return None
    key = getattr(err, "full_key", "") or "a required setting"
    group = key.split(".", 1)[0]
    needed_by = f" ({group}={choices[group]} needs it)" if group in choices else ""
    return f"{key} is not set{needed_by}: add {key}=... to the command"
