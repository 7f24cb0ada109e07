"""Resuming a run safely: only with the config that made its outputs, and only from complete checkpoints.

A run directory records the config keys that change outputs (`run_config.json`). A rerun into a directory that
already holds predictions (infer) or checkpoints (finetune) continues only if those keys are the same; otherwise it
stops and names the differences, so a file never mixes predictions of two setups and an adapter never mixes two
recipes. Keys that change no output (batch size, limit for infer, logging, scoring) may differ: raising `task.limit`
extends a finished infer run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vlx.errors import ConfigError
from vlx.run.store import read_json, write_json
from vlx.stages._common import resolved_config

log = logging.getLogger(__name__)

RUN_CONFIG = "run_config.json"


@dataclass(frozen=True)
class OutputKeys:
    """The config keys that change what a stage writes: whole sections, less the keys inside them that do not."""

    sections: tuple[str, ...]
    neutral: frozenset[str]


# predictions change with these; not with how many items, how bad images are handled, where the weights are placed,
# how attention and decoding are computed (same outputs, tested)
INFER_KEYS = OutputKeys(
    ("model", "task", "shots", "generation", "quant", "decode", "seed"),
    frozenset({"task.limit", "task.on_bad_image", "model.device_map", "model.attn_implementation", "model.compile"}),
)
# a fine-tune's weights change with these; not with logging, checkpointing, loader processes, how the same loss is
# computed (gradient checkpointing, target-only logits, compiled blocks, FSDP), or what happens after training
FINETUNE_KEYS = OutputKeys(
    ("model", "task", "lora", "quant", "finetune", "seed"),
    frozenset({
        "task.on_bad_image", "model.device_map", "model.attn_implementation", "model.compile",
        "model.prompt_template", "finetune.logging_steps", "finetune.save_strategy", "finetune.save_steps",
        "finetune.dataloader_num_workers", "finetune.infer_split", "finetune.infer_limit", "finetune.profile_steps",
        "finetune.resume", "finetune.gradient_checkpointing", "finetune.target_logits_only", "finetune.compile",
        "finetune.compile_mode", "finetune.fsdp",
    }),
)  # fmt: skip


def _flatten(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: node}


def output_config(cfg: DictConfig, keys: OutputKeys = INFER_KEYS) -> dict[str, Any]:
    """The resolved config keys that change outputs, flattened (`model.checkpoint`, `generation.top_p`, ...), and
    the stage that writes them."""
    resolved = resolved_config(cfg)
    data = {s: resolved[s] for s in keys.sections if s in resolved}
    flat = {k: v for k, v in _flatten(data, "").items() if k not in keys.neutral}
    return {"stage.name": cfg.stage.name, **flat}


def check_resumable(run_dir: Path, cfg: DictConfig, has_outputs: bool, keys: OutputKeys = INFER_KEYS) -> None:
    """Records the run's output config, or, when outputs exist, refuses a config that differs from theirs.

    Raises:
        ConfigError: the directory holds outputs made with other output-changing settings (listed).
    """
    path = run_dir / RUN_CONFIG
    current = json.loads(json.dumps(output_config(cfg, keys), default=str))  # as it reads back from the file
    if path.is_file() and has_outputs:
        saved = read_json(path, "written when the run began")
        names = sorted(set(saved) | set(current))
        diff = [f"{k}: {saved.get(k)!r} (saved) vs {current.get(k)!r} (now)" for k in names
                if saved.get(k) != current.get(k)]  # fmt: skip
        if diff:
            what = "predictions" if keys is INFER_KEYS else "checkpoints"
            raise ConfigError(
                f"{run_dir} holds {what} made with other settings, so they cannot be continued: "
                + "; ".join(diff)
                + ". Rerun with the same settings, or write into a new directory."
            )
        return
    write_json(path, current)  # every rank of a launched run writes the same record


# what a Trainer checkpoint must hold to be resumed from; trainer_state.json is written last
CHECKPOINT_FILES = ("trainer_state.json", "scheduler.pt")


def checkpoint_problem(folder: Path) -> str | None:
    """Why a Trainer checkpoint cannot be resumed from (a file missing, empty or unreadable), or None."""
    missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file() or not (folder / name).stat().st_size]
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*")):
        missing.append("the weights (*.safetensors)")
    if not any(folder.glob("optimizer*")):
        missing.append("optimizer.pt")
    if not any(folder.glob("rng_state*.pth")):
        missing.append("rng_state.pth")
    if missing:
        return "missing or empty: " + ", ".join(missing)
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (ValueError, OSError) as err:
        return f"trainer_state.json cannot be read ({err})"
    return None


def last_complete_checkpoint(checkpoints: Path) -> Path | None:
    """The newest checkpoint that can be resumed from. Newer ones that cannot (a save cut short) are moved aside
    (`incomplete-checkpoint-N`, which the Trainer neither resumes from nor rotates away), each with a warning."""
    found = sorted(
        (p for p in checkpoints.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    for folder in reversed(found):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        aside = folder.with_name(f"incomplete-{folder.name}")
        suffix = 1
        while aside.exists():
            aside, suffix = folder.with_name(f"incomplete-{folder.name}.{suffix}"), suffix + 1
        folder.rename(aside)
        log.warning("%s cannot be resumed from (%s, a save cut short?): moved to %s", folder, problem, aside.name)
    return None
