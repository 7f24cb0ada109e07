"""Resuming an infer run safely: only with the config that made its predictions.

A run directory records the config keys that change outputs (`run_config.json`). A rerun into a directory that
already holds predictions continues only if those keys are the same; otherwise it stops and names the differences,
so a file never mixes predictions of two setups. Keys that do not change any prediction (batch size, limit, logging,
scoring) may differ: raising `task.limit` extends a finished run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vlx.errors import ConfigError
from vlx.stages._common import resolved_config

RUN_CONFIG = "run_config.json"
# config sections whose values change the predictions
OUTPUT_SECTIONS = ("model", "task", "shots", "generation", "quant", "decode", "seed")
# keys inside them that do not: how many items, how bad images are handled, where the weights are placed, how
# attention and decoding are computed (same outputs, tested)
NEUTRAL_KEYS = {
    "task.limit",
    "task.on_bad_image",
    "model.device_map",
    "model.attn_implementation",
    "model.compile",
}


def _flatten(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: node}


def output_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config keys that change predictions, flattened (`model.checkpoint`, `generation.top_p`, ...)."""
    resolved = resolved_config(cfg)
    data = {s: resolved[s] for s in OUTPUT_SECTIONS if s in resolved}
    return {k: v for k, v in _flatten(data, "").items() if k not in NEUTRAL_KEYS}


def check_resumable(run_dir: Path, cfg: DictConfig, has_predictions: bool) -> None:
    """Records the run's output config, or, when predictions exist, refuses a config that differs from theirs.

    Raises:
        ConfigError: the directory holds predictions made with other output-changing settings (listed).
    """
    path = run_dir / RUN_CONFIG
    current = output_config(cfg)
    if path.is_file() and has_predictions:
        saved = json.loads(path.read_text())
        keys = sorted(set(saved) | set(current))
        diff = [
            f"{k}: {saved.get(k)!r} (saved) vs {current.get(k)!r} (now)" for k in keys if saved.get(k) != current.get(k)
        ]
        if diff:
            raise ConfigError(
                f"{run_dir} holds predictions made with other settings, so they cannot be continued: "
                + "; ".join(diff)
                + ". Rerun with the same settings, or write into a new directory."
            )
        return
    path.write_text(json.dumps(current, indent=2, sort_keys=True, default=str) + "\n")


def batch_seed(seed: int, first_id: str) -> int:
    """The sampling seed of a batch, from the run seed and its first item's id.

    Predictions are appended batch by batch, so a killed run stops at a batch boundary and a resumed run (same
    batch_size) forms the same batches: seeding each batch this way makes a resumed sampling run equal an
    uninterrupted one. Python's hash() is salted per process, hence sha256.
    """
    digest = hashlib.sha256(f"{seed}\x1f{first_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)
