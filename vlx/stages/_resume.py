"""Resuming a run safely: only with the config and the model that made its outputs, and only from complete
checkpoints.

A run directory records the config keys that change outputs (`run_config.json`). A rerun into a directory that
already holds predictions (infer) or checkpoints (finetune) continues only if those keys are the same; otherwise it
stops and names the differences, so a file never mixes predictions of two setups and an adapter never mixes two
recipes. Keys that change no output (batch size, limit for infer, logging, scoring) may differ: raising `task.limit`
extends a finished infer run. That check runs before any weights load.

Once the model is loaded, before the first batch, the run's manifest (`vlx.run.manifest`: the weights' identity, the
dtype `auto` resolved to, the prompt as rendered, the processor's settings, versions, ...) is compared with the one
the outputs were made with, which catches what the config cannot show: weights or an adapter replaced in the same
folder, another chat template, `dtype=auto` on another GPU. Another library version, or another batch size for a
sampling run, is said as a warning, not refused: upgrading a package mid-run is common, and rarely changes an
answer. A directory written before vlx recorded manifests has none: only the config check applies to it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vlx.config_data import plain_dict
from vlx.engine.batches import render_prompt
from vlx.errors import ConfigError
from vlx.run import manifest
from vlx.run.directory import RunDir
from vlx.run.store import read_json, write_json
from vlx.stages._common import resolved_config

log = logging.getLogger(__name__)


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
        "finetune.logging_steps", "finetune.save_strategy", "finetune.save_steps",
        "finetune.dataloader_num_workers", "finetune.infer_split", "finetune.infer_limit", "finetune.profile_steps",
        "finetune.resume", "finetune.gradient_checkpointing", "finetune.target_logits_only", "finetune.compile",
        "finetune.compile_mode", "finetune.fsdp", "finetune.faithfulness",
    }),
)  # fmt: skip


def _flatten(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: node}


def shot_settings(cfg: DictConfig) -> dict[str, Any]:
    """The demonstrations as one section, `k` (the root `shots`) and the `fewshot` group's keys: the shape of the
    `shots` group before it split, so that a run made then compares equal (`shots.k`, `shots.strategy`, ...)."""
    fewshot = plain_dict(cfg.fewshot, "fewshot")
    return {"k": cfg.shots, **fewshot}


def output_config(cfg: DictConfig, keys: OutputKeys = INFER_KEYS) -> dict[str, Any]:
    """The resolved config keys that change outputs, flattened (`model.checkpoint`, `generation.top_p`, ...), and
    the stage that writes them."""
    resolved = {**resolved_config(cfg), "shots": shot_settings(cfg)}
    data = {s: resolved[s] for s in keys.sections if s in resolved}
    flat = {
        k: v
        for k, v in _flatten(data, "").items()
        if not any(k == n or k.startswith(f"{n}.") for n in keys.neutral)  # a neutral section's keys too
    }
    return {"stage.name": cfg.stage.name, **flat}


def check_resumable(run_dir: Path, cfg: DictConfig, has_outputs: bool, keys: OutputKeys = INFER_KEYS) -> None:
    """Records the run's output config, or, when outputs exist, refuses a config that differs from theirs.

    Raises:
        ConfigError: the directory holds outputs made with other output-changing settings (listed).
    """
    path = RunDir(run_dir).run_config_file
    current = json.loads(json.dumps(output_config(cfg, keys), default=str))  # as it reads back from the file
    if path.is_file() and has_outputs:
        saved = prompt_as_today(read_json(path, "written when the run began"))
        names = sorted(set(saved) | set(current))
        diff = [
            f"{k}: {saved.get(k)!r} (saved) vs {current.get(k)!r} (now)"
            for k in names
            if saved.get(k) != current.get(k)
        ]
        if diff:
            what = "predictions" if keys is INFER_KEYS else "checkpoints"
            raise ConfigError(
                f"{run_dir} holds {what} made with other settings, so they cannot be continued: "
                + "; ".join(diff)
                + ". Rerun with the same settings, or write into a new directory."
            )
        return
    write_json(path, current)  # every rank of a launched run writes the same record


# manifest keys whose differences a resume warns about rather than refuses (the module's docstring says why)
WARNED = ("versions", "batches")


def check_manifest(out: Path, current: manifest.Manifest, has_outputs: bool, label: str) -> None:
    """Records the run's manifest, or, when outputs exist, refuses a manifest that differs from theirs (`label`
    names the run directory in the message: `stage.resume=<dir>` or the folder).

    Raises:
        ConfigError: the outputs were made with another model, prompt or decoding (every difference listed).
    """
    if not has_outputs:
        manifest.write(out, current)  # every rank of a launched run writes the same record
        return
    saved = manifest.read(out)
    if saved is None:
        log.info(
            "%s has no %s (a run from before vlx recorded them): checked against %s only",
            out,
            manifest.MANIFEST,
            RunDir.RUN_CONFIG,
        )
        return
    refused = manifest.differences(saved, current, skip=WARNED)
    if refused:
        raise ConfigError(
            f"{label}: the run was made with different settings (saved -> now): "
            + "; ".join(refused)
            + ". Rerun with the same settings, or write into a new directory"
        )
    warned = manifest.differences(saved, current, only=WARNED)
    if warned:
        log.warning(
            "%s: continued with other library versions or batches than its first part (saved -> now): %s",
            label,
            "; ".join(warned),
        )


def infer_manifest(cfg: DictConfig, model: Any, task: Any, selector: Any, first: Any) -> manifest.Manifest:
    """The manifest of an infer run: the loaded model `model`, the task, and the prompt rendered for the split's
    first item `first` with its demonstrations from `selector` (None for zero-shot), as the batches render it."""
    prompt = render_prompt(model, task, first, selector.select(first) if selector is not None else [])
    generation = plain_dict(cfg.generation, "generation")
    sampling = bool(generation.get("do_sample"))
    return manifest.build(
        model,
        stage=cfg.stage.name,
        task={"name": task.name, "split": task.split},
        seed=cfg.seed,
        prompt=prompt,
        lora_adapter=cfg.model.adapter,
        shots=shot_settings(cfg),
        decode=cfg.decode,
        generation=generation,
        batches={"batch_size": cfg.batch_size, "batching": cfg.batching} if sampling else None,
    )


def finetune_manifest(cfg: DictConfig, adapter: Any, task: Any) -> manifest.Manifest:
    """The manifest of a fine-tune: the base model as loaded, the task, the LoRA and training settings."""
    settings = output_config(cfg, FINETUNE_KEYS)
    training = {k: v for k, v in settings.items() if k.startswith(("lora.", "finetune."))}
    return manifest.build(
        adapter, stage=cfg.stage.name, task={"name": task.name, "split": task.split}, seed=cfg.seed, training=training
    )


def prompt_as_today(saved: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded output config from before task.prompt was the one prompt key, as today's keys say it:
    `model.prompt_template` "{prompt}" (the default) drops; a template without {prompt} (or a fine-tune's
    `finetune.prompt_template`) was the text the model read, which task.prompt now holds. A template that wrapped
    {prompt} in more text stays, and shows as a difference."""
    saved = dict(saved)
    if saved.get("model.prompt_template") == "{prompt}":
        del saved["model.prompt_template"]
    for key in ("finetune.prompt_template", "model.prompt_template"):
        template = saved.get(key)
        if isinstance(template, str) and "{prompt}" not in template:
            saved["task.prompt"] = saved.pop(key)
    if "model.tiny" in saved and saved["model.tiny"] is None:  # hf.yaml's `tiny: null`, gone with the tiny knobs
        del saved["model.tiny"]
    return saved


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
