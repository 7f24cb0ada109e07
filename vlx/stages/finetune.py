"""The finetune stage: LoRA (or QLoRA on a 4-bit base) with transformers' Trainer; the adapter lands in the run.

    vlx stage=finetune model=paligemma task=esnli task.split=train lora=r64 quant=nf4      # the seed's recipe
    vlx stage=finetune model=paligemma task=explainer_csv task.path=<correct.csv>         # the seed's CSV
    vlx stage=finetune ... finetune.only_correct_from=<infer run on train>                 # only items it got right
    vlx model=paligemma model.adapter=<run>/adapter task=esnli                              # inference with it

Checkpoints go to <run>/checkpoints/ (every epoch by default); a run restarted into the same directory (or with
finetune.resume=true) continues from the last one. The final adapter and vlx_adapter.json (base, prompt, target)
go to <run>/adapter/.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from transformers import Trainer, TrainerCallback, TrainingArguments

from vlx.errors import ConfigError
from vlx.fewshot import correct_ids_from_predictions
from vlx.models._base import ADAPTER_META
from vlx.models.compiling import compile_blocks
from vlx.stages._common import build_quantization, config_choices, resolved_config, run_dir, write_json
from vlx.tracking import tracking
from vlx.training import Collator, training_items

log = logging.getLogger(__name__)


def validate(cfg: DictConfig) -> None:
    if not cfg.lora:
        raise ConfigError(
            "stage=finetune needs LoRA settings: lora=r64 (or lora=r64_lm); full fine-tuning is not offered"
        )
    if cfg.model.adapter is not None:
        raise ConfigError("model.adapter is set: fine-tuning starts a new adapter from the base; unset it")
    if cfg.shots.k:
        raise ConfigError("shots>0 has no meaning for fine-tuning; use shots=0")


def use_bf16(setting: str | bool) -> bool:
    if setting == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(setting)


class GpuMemory(TrainerCallback):
    """Adds peak GPU memory (GiB) to the Trainer's log history (W&B records GPU memory with its system metrics)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        # the Trainer has already stored this entry: add to the stored one (train_summary.json)
        if torch.cuda.is_available() and state.log_history:
            state.log_history[-1]["gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30


def build_model(cfg: DictConfig) -> Any:
    """The model adapter with a trainable LoRA around its base (prepared for k-bit training when 4-bit)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    quantization = build_quantization(cfg.quant)
    adapter = instantiate(cfg.model, _partial_=True)(quantization=quantization)
    model = adapter.model
    if quantization is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.finetune.gradient_checkpointing)
    elif cfg.finetune.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    model = get_peft_model(model, instantiate(cfg.lora))
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA: %s trainable of %s parameters (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    if cfg.finetune.get("compile"):
        compile_blocks(model)
    adapter.model = model
    return adapter


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tunes, saves the adapter, and (finetune.infer_split) infers and scores with it."""
    validate(cfg)
    ft = cfg.finetune
    out = run_dir(cfg)
    task = instantiate(cfg.task)
    only = correct_ids_from_predictions(ft.only_correct_from) if ft.only_correct_from else None
    items = training_items(task.load().examples, ft.target, ft.prompt_template, only)
    log.info("fine-tuning on %d items of %s/%s, target %s", len(items), task.name, task.split, ft.target)
    adapter = build_model(cfg)
    checkpoints = out / "checkpoints"
    resume = bool(ft.resume) or any(checkpoints.glob("checkpoint-*"))
    logger_cfg = OmegaConf.to_container(cfg.logger, resolve=True) if cfg.logger else None
    with tracking(logger_cfg, resolved_config(cfg), name=out.name) as tracker:
        args = TrainingArguments(
            output_dir=str(checkpoints),
            num_train_epochs=ft.epochs,
            max_steps=ft.max_steps,
            per_device_train_batch_size=ft.per_device_batch_size,
            gradient_accumulation_steps=ft.gradient_accumulation_steps,
            learning_rate=ft.learning_rate,
            weight_decay=ft.weight_decay,
            warmup_steps=ft.warmup_steps,
            lr_scheduler_type=ft.lr_scheduler,
            bf16=use_bf16(ft.bf16),
            save_strategy=ft.save_strategy,
            save_steps=ft.save_steps,
            logging_steps=ft.logging_steps,
            logging_first_step=True,
            report_to=["wandb"] if logger_cfg else "none",
            remove_unused_columns=False,  # the collator needs the raw items
            dataloader_num_workers=ft.dataloader_num_workers,
            seed=cfg.seed,
            use_cpu=not torch.cuda.is_available(),
        )
        trainer = Trainer(
            model=adapter.model, args=args, train_dataset=items,
            data_collator=Collator(adapter, target_logits_only=ft.target_logits_only),
            callbacks=[GpuMemory()],
        )  # fmt: skip
        if resume and any(checkpoints.glob("checkpoint-*")):
            log.info("resuming from the last checkpoint in %s", checkpoints)
        result = trainer.train(
            resume_from_checkpoint=True if resume and any(checkpoints.glob("checkpoint-*")) else None
        )
        adapter_dir = out / "adapter"
        adapter.model.save_pretrained(adapter_dir)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        meta = {
            "base": cfg.model.checkpoint,
            "model": config_choices().get("model"),
            "prompt_template": ft.prompt_template,
            "target": ft.target,
            "task": task.name,
            "split": task.split,
            "items": len(items),
            "quant": config_choices().get("quant"),
            "lora": OmegaConf.to_container(cfg.lora, resolve=True),
        }
        write_json(adapter_dir / ADAPTER_META, meta)
        metrics = {
            "train_items": len(items),
            "steps": trainer.state.global_step,
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "train_loss": result.training_loss,
            "train_samples_per_s": result.metrics.get("train_samples_per_second"),
            "gpu_peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        }
        write_json(out / "train_summary.json", {**metrics, "log_history": trainer.state.log_history})
        tracker.log_summary(metrics)
        tracker.log_artifact(adapter_dir, name=f"adapter-{out.name}", kind="model")
        log.info("adapter -> %s (%s)", adapter_dir, json.dumps(metrics))
    if ft.infer_split:
        metrics.update(infer_with_adapter(cfg, adapter_dir, out / "infer"))
    return metrics


def infer_with_adapter(cfg: DictConfig, adapter_dir: Path, out: Path) -> dict[str, Any]:
    """The infer stage (and its scoring) with the new adapter on `finetune.infer_split`, into `out`."""
    from vlx.stages import infer

    sub = cfg.copy()
    with open_dict(sub):
        sub.stage.name = "infer"
        sub.model.adapter = str(adapter_dir)
        sub.model.prompt_template = "{prompt}"  # take the trained one from the adapter
        sub.task.split = cfg.finetune.infer_split
        sub.task.limit = cfg.finetune.get("infer_limit")
        sub.paths.output_dir = str(out)
    summary = infer.run(sub)
    return {f"infer_{k}": v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
