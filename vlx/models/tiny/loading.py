"""Loading one of vlx's tiny random-weight models: the factory builds it into its own cache folder on first use, then
it loads through `vlx.models.load_adapter` as any checkpoint does (`conf/model/tiny*.yaml` target this)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def tiny_checkpoint(checkpoint: str, tiny: str, tiny_dir: str) -> str:
    """The folder to load: the tiny model of architecture `tiny`, built on first use, where `checkpoint` is the
    factory's own folder `tiny_dir` (its cache); any other `checkpoint` (a merged fine-tune of it) as it is, never
    written.

    Raises:
        ValueError: `tiny` is not one of `TINY_ARCHITECTURES`.
        ConfigError: `tiny_dir` holds files the factory did not make.
    """
    from vlx.models.tiny import ensure_tiny_model

    path = Path(checkpoint).expanduser()
    if path.resolve() != Path(tiny_dir).expanduser().resolve():
        return checkpoint
    # said once per load, so that a tiny zero-shot run's near-random labels and unparsed answers read as expected
    log.info(
        "model.tiny=%s: vlx's tiny test model with random weights, not a trained checkpoint; without a "
        "fine-tuned adapter (vlx experiment=demo trains one) its answers are random",
        tiny,
    )
    return str(ensure_tiny_model(tiny, path))


def load_tiny_adapter(checkpoint: str, tiny: str, tiny_dir: str, **options: Any) -> Any:
    """`vlx.models.load_adapter` for a tiny model (`tiny_checkpoint`); `options` as load_adapter's.

    Args:
        checkpoint: the folder to load; the factory's own `tiny_dir` builds the tiny model there first.
        tiny: the architecture (`vlx.models.tiny.TINY_ARCHITECTURES`).
        tiny_dir: the factory's folder for it, in vlx's cache.
        **options: load_adapter's keyword arguments.
    """
    from vlx.models.families import load_adapter

    return load_adapter(tiny_checkpoint(checkpoint, tiny, tiny_dir), **options)
