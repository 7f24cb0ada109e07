"""transformers' TrainingArguments for the finetune stage: the config's keys, the effective batch split over the
processes, FSDP, vlx's defaults and `finetune.trainer_args`."""

from __future__ import annotations

import dataclasses
import difflib
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import TrainingArguments

from vlx import compat
from vlx.config_data import plain_dict
from vlx.errors import ConfigError

log = logging.getLogger(__name__)


def split_batch(per_device: int, accumulation: int, processes: int) -> tuple[int, int]:
    """The per-process micro-batch and accumulation that keep the config's effective batch (per_device x
    accumulation, as written for one GPU) when `processes` GPUs each take a share of every optimizer step.
    Accumulation is divided first (the micro-batch, and so the memory per GPU, stays as configured); if it cannot be,
    the micro-batch is.

    Raises:
        ConfigError: neither divides by the number of processes.
    """
    if processes == 1:
        return per_device, accumulation
    if accumulation % processes == 0:
        return per_device, accumulation // processes
    if per_device % processes == 0 and accumulation == 1:
        return per_device // processes, 1
    raise ConfigError(
        f"{processes} processes cannot share an effective batch of {per_device} x {accumulation} evenly: make "
        f"finetune.gradient_accumulation_steps (or, at 1, finetune.per_device_batch_size) a multiple of {processes}"
    )


def use_bf16(setting: str | bool) -> bool:
    """Whether to train in bfloat16: `auto` where the GPU has it, else the setting as given."""
    if setting == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(setting)


# TrainingArguments that vlx fills from its own finetune keys (set those instead) ...
FROM_FINETUNE_KEYS = {
    "num_train_epochs": "finetune.epochs", "max_steps": "finetune.max_steps",
    "per_device_train_batch_size": "finetune.per_device_batch_size",
    "gradient_accumulation_steps": "finetune.gradient_accumulation_steps",
    "learning_rate": "finetune.learning_rate", "weight_decay": "finetune.weight_decay",
    "warmup_steps": "finetune.warmup_steps", "lr_scheduler_type": "finetune.lr_scheduler", "bf16": "finetune.bf16",
    "save_strategy": "finetune.save_strategy", "save_steps": "finetune.save_steps",
    "logging_steps": "finetune.logging_steps", "dataloader_num_workers": "finetune.dataloader_num_workers",
    "seed": "seed", "fsdp": "finetune.fsdp", "gradient_checkpointing": "finetune.gradient_checkpointing",
    "torch_compile": "finetune.compile", "output_dir": "the run directory (hydra.run.dir)",
    "report_to": "logger (logger=none turns W&B off)", "use_cpu": "CUDA_VISIBLE_DEVICES",
}  # fmt: skip
# ... and those vlx's collator needs as they are
REQUIRED = {"remove_unused_columns": False}


def trainer_arguments(
    ft: DictConfig, per_device: int, accumulation: int, checkpoints: Path, seed: int, report: bool
) -> dict[str, Any]:
    """transformers' TrainingArguments for this run: vlx's finetune keys (the micro-batch and accumulation already
    split over the processes), vlx's defaults, then `finetune.trainer_args` (any other TrainingArguments field,
    e.g. `+finetune.trainer_args.max_grad_norm=0.3`).

    Raises:
        ConfigError: a trainer_args key is no TrainingArguments field, or one that vlx sets from its own keys.
    """
    args = {
        "output_dir": str(checkpoints),
        "num_train_epochs": ft.epochs,
        "max_steps": ft.max_steps,
        "per_device_train_batch_size": per_device,
        "gradient_accumulation_steps": accumulation,
        "learning_rate": ft.learning_rate,
        "weight_decay": ft.weight_decay,
        "warmup_steps": ft.warmup_steps,
        "lr_scheduler_type": ft.lr_scheduler,
        "bf16": use_bf16(ft.bf16),
        "save_strategy": ft.save_strategy,
        "save_steps": ft.save_steps,
        "logging_steps": ft.logging_steps,
        "dataloader_num_workers": ft.dataloader_num_workers,
        "seed": seed,
        **fsdp_arguments(ft.get("fsdp")),
        "report_to": ["wandb"] if report else "none",
        "use_cpu": not torch.cuda.is_available(),
        **REQUIRED,
        # vlx's defaults, which trainer_args may change:
        "logging_first_step": True,
        # the filter checks every micro-batch's loss for NaN/inf with a GPU sync, and hides such a loss by logging an
        # average instead; without it a NaN shows in the logs
        "logging_nan_inf_filter": False,
        "ddp_find_unused_parameters": False,  # LoRA trains the same parameters every step
        # the base's buffers (rotary frequencies, position ids) never change: broadcasting them from rank 0 before
        # every forward is a collective per micro-batch that keeps the processes in lockstep for nothing
        "ddp_broadcast_buffers": False,
    }
    extra = plain_dict(ft.get("trainer_args") or {}, "finetune.trainer_args")
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    for key, value in extra.items():
        if key in FROM_FINETUNE_KEYS:
            raise ConfigError(
                f"finetune.trainer_args.{key}: vlx sets {key} from {FROM_FINETUNE_KEYS[key]}; set that instead"
            )
        if key in REQUIRED and value != REQUIRED[key]:
            raise ConfigError(f"finetune.trainer_args.{key}={value!r}: vlx's collator needs {REQUIRED[key]!r}")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"finetune.trainer_args.{key} is not a field of transformers' TrainingArguments{hint}")
    if "fsdp_config" in extra:  # merged into the one finetune.fsdp makes
        args["fsdp_config"] = {**args.get("fsdp_config", {}), **extra.pop("fsdp_config")}
    return {**args, **extra}


# the words of finetune.fsdp, as settings of transformers' fsdp_config (FSDP2: torch's fully_shard)
FSDP_WORDS = {
    "full_shard": {"reshard_after_forward": True},  # each block's parameters gathered again for the backward
    "shard_grad_op": {"reshard_after_forward": False},  # kept gathered from the forward to the backward
    "offload": {"cpu_offload": True},  # parameters, gradients and optimizer state in CPU memory between uses
    "auto_wrap": {},  # vlx always shards block by block
}


def fsdp_arguments(setting: str | None) -> dict[str, Any]:
    """TrainingArguments for `finetune.fsdp` (e.g. "full_shard auto_wrap"): nothing when it is unset. The words
    become FSDP2 settings, as transformers' deprecated `fsdp` string would have made them.

    Raises:
        ConfigError: a word that is not in FSDP_WORDS.
    """
    if not setting:
        return {}
    config: dict[str, Any] = {}
    for word in str(setting).split():
        if word not in FSDP_WORDS:
            raise ConfigError(
                f"finetune.fsdp={setting!r}: {word!r} is not one of {', '.join(FSDP_WORDS)} (for "
                f"FSDP1's other strategies, set +finetune.trainer_args.fsdp_config)"
            )
        config.update(FSDP_WORDS[word])
    return {"fsdp": True, "fsdp_config": config}


def one_gpu_per_process(args: TrainingArguments) -> TrainingArguments:
    """`args` for one GPU when this process sees several without a launcher. transformers would wrap the model in
    nn.DataParallel, which multiplies the batch of every step by the GPUs (the config's effective batch is lost) and
    is slower than one process per GPU. Before the Trainer is made: it reads the batch size once."""
    if args.n_gpu > 1:
        log.warning(
            "%d GPUs visible to one process: training on %s only; for all of them, one process per GPU: "
            "accelerate launch --num_processes=%d -m vlx stage=finetune ...",
            args.n_gpu,
            args.device,
            args.n_gpu,
        )
        compat.train_on_one_gpu(args)
    return args
