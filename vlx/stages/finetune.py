"""The finetune stage: LoRA (or QLoRA on a 4-bit base) with transformers' Trainer; the adapter lands in the run.

    vlx stage=finetune model=paligemma task=esnli task.split=train lora=r64 quant=nf4      # the seed's recipe
    vlx stage=finetune model=paligemma task=explainer_csv task.path=<correct.csv>         # the seed's CSV
    vlx stage=finetune ... finetune.only_correct_from=<infer run on train>                 # only items it got right
    vlx model=paligemma model.adapter=<run>/adapter task=esnli                              # inference with it

Checkpoints go to <run>/checkpoints/ (every epoch by default); a run restarted into the same directory (or with
finetune.resume=true) continues from the last one. The final adapter and vlx_adapter.json (base, prompt, target)
go to <run>/adapter/.

On several GPUs (`accelerate launch -m vlx stage=finetune ...` or `torchrun`) the Trainer runs DDP (or FSDP, with
finetune.fsdp); the config's effective batch is kept by dividing the accumulation between the processes
(`vlx.finetuning.arguments.split_batch`).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from transformers import Trainer, TrainingArguments

from vlx import distributed
from vlx.config_data import plain_dict
from vlx.config_schema import check_value
from vlx.engine.shots import correct_ids_from_predictions
from vlx.errors import ConfigError, interrupted
from vlx.finetuning.arguments import one_gpu_per_process, split_batch, trainer_arguments
from vlx.finetuning.items import Collator, training_items
from vlx.finetuning.profiling import StepProfiler, check_profile_steps
from vlx.finetuning.trainer import Diverged, StatsTrainer
from vlx.metrics.coco import check_java
from vlx.models import fast
from vlx.models.fast.compiling import block_classes, compile_blocks
from vlx.models.hf import ADAPTER_META
from vlx.run.directory import RunDir
from vlx.run.lock import exclusive
from vlx.run.store import read_json, write_json
from vlx.stages._common import (
    build_group,
    build_quantization,
    check_generation,
    config_choices,
    resolved_config,
    run_dir,
)
from vlx.stages._resume import (
    FINETUNE_KEYS,
    check_manifest,
    check_resumable,
    finetune_manifest,
    last_complete_checkpoint,
)
from vlx.stages.evaluation import check_settings as check_eval_settings
from vlx.stages.faithfulness import config_after_infer
from vlx.tracking import tracking

log = logging.getLogger(__name__)


def validate(cfg: DictConfig) -> None:
    """Rules that span config fields, checked before any weights load: a LoRA preset, no adapter and no shots, a
    training length, and (with finetune.infer_split) what the inference after training needs, its split included.

    Raises:
        ConfigError: a setting breaks one of these rules; the message names it and what to use.
    """
    if not cfg.lora:
        raise ConfigError(
            "stage=finetune needs LoRA settings: lora=r64 (or lora=r64_lm); full fine-tuning is not offered"
        )
    if cfg.model.adapter is not None:
        raise ConfigError("model.adapter is set: fine-tuning starts a new adapter from the base; unset it")
    if cfg.shots:
        raise ConfigError("shots>0 has no meaning for fine-tuning; use shots=0")
    ft = cfg.finetune  # each value against its rule: vlx.config_schema, before the stage runs
    if ft.save_strategy == "steps" and (not is_number(ft.save_steps) or ft.save_steps <= 0):
        raise ConfigError(f"finetune.save_steps={ft.save_steps!r}: use a positive number of steps")
    steps, epochs = ft.max_steps, ft.epochs
    if (
        isinstance(steps, bool)
        or not isinstance(steps, int)
        or steps == 0
        or (steps < 0 and not (is_number(epochs) and epochs > 0))
    ):
        raise ConfigError(
            f"finetune.epochs={ft.epochs!r}, finetune.max_steps={ft.max_steps!r}: train for epochs > 0, or a number "
            f"of steps > 0 (max_steps=-1 runs the epochs)"
        )
    lora = build_group("lora", cfg.lora)  # a setting peft.LoraConfig refuses, before any weights load
    check_value("lora.r", lora.r)  # peft refuses it only on the model
    if ft.infer_split:  # what the inference after training needs, before hours of training
        check_generation(plain_dict(cfg.generation, "generation"))
        if cfg.eval_after_infer:
            check_eval_settings(plain_dict(cfg.eval, "eval"))
        examples = instantiate(after_training_config(cfg).task).examples()  # the split's file is there and reads
        if cfg.eval_after_infer:  # scoring the explanations after training needs Java: said before hours of it
            check_java(cfg.eval.get("java", True), needed=any(ex.explanations for ex in examples))
    if ft.get("faithfulness"):  # the tests after the inference: their settings checked before training
        if not ft.infer_split:
            raise ConfigError("finetune.faithfulness tests the inference after training: set finetune.infer_split")
        config_after_infer(cfg, ft.faithfulness, "finetune.faithfulness", "the inference after training")


# finetune settings and the seed's values, named in the messages about them
DEFAULTS = {"learning_rate": 2e-4, "weight_decay": 1e-6, "warmup_steps": 2}


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool, NaN or inf)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def build_model(cfg: DictConfig) -> Any:
    """The model adapter with a trainable LoRA around its base (prepared for k-bit training when 4-bit)."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    quantization = build_quantization(cfg.quant)
    adapter = instantiate(cfg.model, _partial_=True)(quantization=quantization)
    model = adapter.model
    # non-reentrant checkpointing: the reentrant kind breaks DDP's gradient hooks for LoRA
    checkpointing = {"use_reentrant": False}
    if quantization is not None:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cfg.finetune.gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpointing,
        )
    elif cfg.finetune.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
        model.enable_input_require_grads()
    model = get_peft_model_or_explain(get_peft_model, model, build_group("lora", cfg.lora))
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA: %s trainable of %s parameters (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    if cfg.finetune.get("compile") and not fast.compiles_in_training(model):
        log.warning(
            "finetune.compile: %s is not on the fast-path allow-list (vlx.models.fast.ALLOWED, COMPILED_TRAINING), "
            "whose compiled blocks are proven unchanged; training it uncompiled",
            fast.model_architecture(model),
        )
    elif cfg.finetune.get("compile"):
        compile_blocks(model, mode=check_compile_mode(cfg.finetune.get("compile_mode")))
    adapter.model = model
    return adapter


def get_peft_model_or_explain(get_peft_model: Any, model: Any, lora: Any) -> Any:
    """peft's `get_peft_model`, with one line naming lora.target_modules and some module names the base has where
    no module matches them (peft's own error is a traceback)."""
    from peft.utils.error import NoMatchingPeftModuleError

    try:
        return get_peft_model(model, lora)
    except NoMatchingPeftModuleError:
        names = sorted(
            {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
            - {"lm_head"}
        )
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise ConfigError(
            f"lora.target_modules={lora.target_modules!r} matches no module of {type(model).__name__}: name some of "
            f"its linear layers (e.g. {shown}), or all-linear"
        ) from None


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile_mode(mode: str | None) -> str | None:
    """`finetune.compile_mode`: None or one of torch.compile's modes."""
    if mode is not None and mode not in COMPILE_MODES:
        raise ConfigError(f"finetune.compile_mode={mode!r}: use null or one of {', '.join(COMPILE_MODES)}")
    return mode


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tunes, saves the adapter, and (finetune.infer_split) infers and scores with it."""
    validate(cfg)
    ft = cfg.finetune
    profile = check_profile_steps(ft.get("profile_steps"), ft.max_steps)
    check_compile_mode(ft.get("compile_mode"))  # before the model loads
    with exclusive(run_dir(cfg)) as out:  # one writer per run directory
        if finished(out):
            check_resumable(out, cfg, has_outputs=True, keys=FINETUNE_KEYS)
            log.info("%s holds a finished fine-tune: the adapter is kept, nothing is trained again", out)
            metrics = read_json(RunDir(out).train_summary, "written when the training finished")
            metrics = {k: v for k, v in metrics.items() if k != "log_history"}
        else:
            metrics = train(cfg, out, profile)
    return {**metrics, **infer_with_adapter(cfg, RunDir(out).adapter_dir, RunDir(out).infer_dir)}


def finished(out: Path) -> bool:
    """Whether `out` holds a whole fine-tune: its adapter and the summary written after it."""
    return (RunDir(out).adapter_dir / "adapter_config.json").is_file() and RunDir(out).train_summary.is_file()


def train(cfg: DictConfig, out: Path, profile: tuple[int, int] | None) -> dict[str, Any]:
    """The training itself (from the last complete checkpoint in `out`, if any); writes the adapter and summary."""
    ft = cfg.finetune
    checkpoints = RunDir(out).checkpoints_dir
    started = checkpoints.is_dir() and any(checkpoints.iterdir())
    check_resumable(out, cfg, has_outputs=started, keys=FINETUNE_KEYS)  # before anything in `out` changes
    resume_from = last_complete_checkpoint(checkpoints) if started else None
    task = instantiate(cfg.task)
    only = None
    if ft.only_correct_from:
        only = correct_ids_from_predictions(ft.only_correct_from, "finetune.only_correct_from")
    items = training_items(task.load().examples, ft.target, task.instruction, only, answer=task.answer)
    processes = distributed.world_size()
    per_device, accumulation = split_batch(ft.per_device_batch_size, ft.gradient_accumulation_steps, processes)
    log.info(
        "fine-tuning on %d items of %s/%s, target %s; %d process(es) x micro-batch %d x accumulation %d",
        len(items),
        task.name,
        task.split,
        ft.target,
        processes,
        per_device,
        accumulation,
    )
    main = distributed.is_main()
    logger_cfg = plain_dict(cfg.logger, "logger") if cfg.logger and main else None
    arguments = trainer_arguments(ft, per_device, accumulation, checkpoints, cfg.seed, report=bool(logger_cfg))
    adapter = build_model(cfg)
    check_manifest(out, finetune_manifest(cfg, adapter, task), started, str(out))  # the base model as loaded
    if arguments.get("fsdp"):
        # accelerate otherwise shards the classes in the model's `_no_split_modules` and stops at a name the model
        # lacks (PaliGemma's list names SiglipTextEmbeddings, which its vision-only SigLIP has not)
        arguments["fsdp_config"].setdefault("transformer_layer_cls_to_wrap", block_classes(adapter.model))
    if ft.resume and resume_from is None:
        log.warning("finetune.resume=true, but %s holds no complete checkpoint: training from the base", checkpoints)
    with tracking(logger_cfg, resolved_config(cfg), name=out.name) as tracker:
        args = one_gpu_per_process(TrainingArguments(**arguments))
        trainer = StatsTrainer(
            model=adapter.model,
            args=args,
            train_dataset=items,
            data_collator=Collator(adapter, target_logits_only=ft.target_logits_only),
            samples_per_step=per_device * accumulation * processes,
        )
        if ft.get("fsdp") and not trainer.is_fsdp_enabled:
            log.warning(
                "finetune.fsdp=%r is not applied: accelerate shards with FSDP on GPUs only, so this run (%s) "
                "keeps a full copy of the model per process, as DDP does",
                ft.fsdp,
                trainer.accelerator.distributed_type.value,
            )
        if profile:
            suffix = f".rank{distributed.rank()}" if processes > 1 else ""
            trainer.add_callback(StepProfiler(*profile, out, suffix=suffix))
        if resume_from is not None:
            log.info("resuming from %s", resume_from)
        try:
            result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        except KeyboardInterrupt as err:
            raise interrupted(err, interrupted_training(trainer, checkpoints)) from None
        except Diverged as err:
            raise Diverged(err.step, err.what, diverged_training(err, trainer, checkpoints, ft)) from None
        adapter_dir = RunDir(out).adapter_dir
        if trainer.is_fsdp_enabled:
            trainer.save_model(str(adapter_dir))  # every rank: gathers the sharded LoRA weights, rank 0 writes them
        elif main:
            adapter.model.save_pretrained(adapter_dir)
        if not main:  # rank 0 writes the adapter's record and the summaries
            distributed.barrier()
            return {"steps": trainer.state.global_step, "rank": distributed.rank()}
        history = trainer.state.log_history  # restored from the checkpoint on a resume: the whole training
        losses = [h["loss"] for h in history if "loss" in h]
        meta = {
            "base": cfg.model.checkpoint,
            "model": config_choices().get("model"),
            "prompt_template": task.prompt,  # the task.prompt trained on (the key's name as adapters before it had)
            "target": ft.target,
            "task": task.name,
            "split": task.split,
            "items": len(items),
            "quant": config_choices().get("quant"),
            "lora": plain_dict(cfg.lora, "lora"),
        }
        write_json(adapter_dir / ADAPTER_META, meta)
        metrics = {
            "train_items": len(items),
            "steps": trainer.state.global_step,
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "train_loss": mean_logged_loss(history),
            "resumed_from_step": int(resume_from.name.split("-")[-1]) if resume_from else None,
            # this session's (since the resume, where there was one)
            "train_samples_per_s": result.metrics.get("train_samples_per_second"),
            "processes": processes,
            "distributed": str(trainer.accelerator.distributed_type.value),  # NO, MULTI_GPU (DDP), FSDP, ...
            "gpu_peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        }
        write_json(RunDir(out).train_summary, {**metrics, "log_history": history})
        tracker.log_summary(metrics)
        tracker.log_artifact(adapter_dir, name=f"adapter-{out.name}", kind="model")
        log.info("adapter -> %s (%s)", adapter_dir, json.dumps(metrics))
        distributed.barrier()  # the adapter is on disk for the other ranks
    return metrics


def mean_logged_loss(history: list[dict[str, Any]]) -> float | None:
    """The training loss averaged over every step of the training, resumes included: each logged loss (the mean
    over its logging interval) weighted by the steps it covers. The Trainer's own `training_loss` covers only the
    steps since the last resume."""
    total, steps, previous = 0.0, 0, 0
    for entry in history:
        if "loss" in entry:
            span = entry["step"] - previous
            total, steps, previous = total + entry["loss"] * span, steps + span, entry["step"]
    return total / steps if steps else None


def interrupted_training(trainer: Trainer, checkpoints: Path) -> str:
    """The line said when Ctrl-C or SIGTERM stops the training: where it was, and where a rerun continues from."""
    step, total = trainer.state.global_step, trainer.state.max_steps
    last = last_complete_checkpoint(checkpoints) if checkpoints.is_dir() else None
    where = (
        f"the last complete checkpoint is {last.name}: run the same command again to continue from it"
        if last is not None
        else "no checkpoint was written yet (finetune.save_strategy / save_steps): the same command starts over"
    )
    return f"interrupted at step {step} of {total}; {where}"


def diverged_training(err: Diverged, trainer: Trainer, checkpoints: Path, ft: DictConfig) -> str:
    """The line said when the loss or the LoRA weights stop being finite: the step, what to change, and the last
    checkpoint of finite weights (each checkpoint's step was checked before it was written)."""
    last = last_complete_checkpoint(checkpoints) if checkpoints.is_dir() else None
    where = f"the last finite checkpoint is {last}" if last is not None else "no checkpoint was written before it"
    return (
        f"{err.what} at step {err.step} of {trainer.state.max_steps}: the training diverged and stopped, and no "
        f"adapter was saved; lower finetune.learning_rate (now {ft.learning_rate!r}; the seed's is "
        f"{DEFAULTS['learning_rate']}) or check finetune.weight_decay ({ft.weight_decay!r}), then train in a new run "
        f"directory; {where}"
    )


def after_training_config(cfg: DictConfig) -> DictConfig:
    """The infer stage's config for the inference after training: `finetune.infer_split` and `infer_limit`, asked with
    the task.prompt it trained on (infer_with_adapter adds the adapter and the output folder)."""
    sub = cfg.copy()
    with open_dict(sub):
        sub.stage.name = "infer"
        sub.task.split = cfg.finetune.infer_split
        sub.task.limit = cfg.finetune.get("infer_limit")
    return sub


def infer_with_adapter(cfg: DictConfig, adapter_dir: Path, out: Path) -> dict[str, Any]:
    """The infer stage (and its scoring) with the new adapter on `finetune.infer_split`, into `out`, then the
    faithfulness tests of `finetune.faithfulness` on its predictions; nothing when that split is unset. Under a
    launcher every rank takes part in the inference (data-parallel), the first alone in the tests."""
    if not cfg.finetune.infer_split:
        return {}
    from vlx.stages import infer

    sub = after_training_config(cfg)
    with open_dict(sub):
        sub.model.adapter = str(adapter_dir)
        sub.paths.output_dir = str(out)
    summary = infer.run(sub)
    numbers = {f"infer_{k}": v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if cfg.finetune.get("faithfulness") and distributed.is_main():  # on its predictions, in <out>/faithfulness
        from vlx.stages import faithfulness

        tested = faithfulness.run(config_after_infer(cfg, cfg.finetune.faithfulness, "finetune.faithfulness", str(out)))
        numbers |= {
            f"faithfulness_{name}_{k}": v["value"]
            for name, result in tested.items()
            for k, v in result.items()
            if isinstance(v, dict) and isinstance(v.get("value"), float)
        }
    return numbers
