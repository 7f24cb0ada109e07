"""A config section as plain Python data: what code below the stages, logs and run files take, not a DictConfig."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from vlx.errors import ConfigError


def plain_dict(node: Any, key: str, resolve: bool = True) -> dict[str, Any]:
    """The mapping a config section holds, as a plain dict with its interpolations resolved (or kept, with
    `resolve=False`).

    Args:
        node: the section (a DictConfig; a plain dict is copied).
        key: its dotted name in the config (`finetune.trainer_args`), for the error.
        resolve: resolve `${...}` interpolations.

    Returns:
        The section's keys and values, nested sections as plain dicts and lists.

    Raises:
        ConfigError: the section is a list, a single value or null rather than a mapping of keys to values.
    """
    if isinstance(node, dict):
        node = OmegaConf.create(node)
    data = OmegaConf.to_container(node, resolve=resolve) if isinstance(node, DictConfig | ListConfig) else node
    if not isinstance(data, dict):  # OmegaConf's return type is a union: lists and values are refused here
        kind = "a list" if isinstance(data, list) else repr(data)
        raise ConfigError(f"{key} must be a mapping of keys to values (key: value lines in YAML), not {kind}")
    return {str(k): v for k, v in data.items()}
