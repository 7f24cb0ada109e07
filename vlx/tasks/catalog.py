"""A task by its name in conf/task, outside a Hydra run: `build_task("esnli", csv_dir=..., image_dir=...)`."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from vlx.configs import group_option
from vlx.errors import user_error
from vlx.tasks._base import Task


def build_task(name: str, **overrides: Any) -> Task:
    """The task of `conf/task/<name>.yaml` (its labels, prompt, answer format, ...), keys overridden by `overrides`.

    Raises:
        ConfigError: no such task, or a setting the task refuses.
        DataError: as the task's constructor raises it.
    """
    return task_from_config(
        group_option("task", name, **{k: str(v) if hasattr(v, "__fspath__") else v for k, v in overrides.items()})
    )


def task_from_config(node: DictConfig, **overrides: Any) -> Task:
    """The task a `task` config node describes, with the constructor's own error (Hydra wraps it) raised as it is."""
    try:
        return instantiate(node, **overrides)
    except Exception as err:  # noqa: BLE001 - Hydra wraps what the constructor raised
        raise (user_error(err) or err) from err
