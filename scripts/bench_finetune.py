"""Fine-tuning throughput and peak memory on a GPU: the seed's QLoRA setting against vlx's settings, in one run.

Builds the full-size PaliGemma-3b-448 architecture (with --model qwen2_5_vl, Qwen2.5-VL-7B's, through the generic
adapter) with random weights (scripts/full_size_model.py), then trains
LoRA r64 (the seed's, all linear layers) through vlx's own finetune code (build_model, Collator, transformers'
Trainer) on the same synthetic items for each variant: 1,024 image tokens + the text tokens reported in the table.

    python scripts/bench_finetune.py --model-dir /tmp/paligemma-3b            # builds it there first if missing
    python scripts/bench_finetune.py --tiny --warmup 1 --steps 1 --only 3     # vlx's tiny model on the CPU: a check
                                                                              # that the variants run, not a figure

Samples/s counts optimizer steps after the warm-up steps; peak memory is torch's max_memory_allocated (on a GPU).
tests/test_bench_scripts.py composes every variant and builds its items as this script does.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent

# name, overrides (vlx config), what it is
# the seed as written: QLoRA nf4 with double quantization (quant=nf4), LoRA r64 / alpha 256 / dropout 0.1 on all
# linear layers (lora=r64), batch 1 x 8, bf16, full logits and no gradient checkpointing (its TrainingArguments set
# none)
SEED = [
    "quant=nf4",
    "finetune.per_device_batch_size=1",
    "finetune.gradient_accumulation_steps=8",
    "finetune.gradient_checkpointing=false",
    "finetune.target_logits_only=false",
]
MB8 = ["quant=none", "finetune.per_device_batch_size=8", "finetune.gradient_accumulation_steps=1"]
COMPILE = ["finetune.compile=true"]
GC = ["finetune.gradient_checkpointing=true"]

# name, overrides (vlx config), what it is
VARIANTS = [
    ("seed as written: QLoRA nf4, batch 1 x 8, no grad. checkpointing, full logits", SEED),
    ("the seed's recipe with grad. checkpointing (not the seed's setting)",
     [*SEED[:-2], "finetune.gradient_checkpointing=true", "finetune.target_logits_only=false"]),
    ("bf16, micro-batch 8, full logits", [*MB8, "finetune.target_logits_only=false"]),
    ("bf16, micro-batch 8, target logits only", MB8),
    ("bf16, micro-batch 4 x 2, target logits only (finetune=fast before compile)", ["finetune=fast", "quant=none",
                                                                                     "finetune.compile=false"]),
    ("bf16, micro-batch 8, grad. checkpointing, target logits only", [*MB8, *GC]),
    ("QLoRA nf4, micro-batch 4 x 2, grad. checkpointing, target logits only (finetune=qlora_fast)",
     ["finetune=qlora_fast", "quant=nf4"]),
    ("finetune=fast: bf16, micro-batch 4 x 2, target logits only, compiled blocks", ["finetune=fast", "quant=none",
                                                                                      *COMPILE]),
    ("bf16, micro-batch 8, target logits only, compiled blocks", [*MB8, *COMPILE]),
    ("bf16, micro-batch 8, grad. checkpointing, target logits only, compiled blocks", [*MB8, *GC, *COMPILE]),
    ("QLoRA nf4, micro-batch 4 x 2, grad. checkpointing, target logits only, compiled blocks",
     ["finetune=qlora_fast", "quant=nf4", *COMPILE]),
    ("bf16, micro-batch 16, grad. checkpointing, target logits only, compiled blocks",
     ["quant=none", "finetune.per_device_batch_size=16", "finetune.gradient_accumulation_steps=1", *GC, *COMPILE]),
]  # fmt: skip


# --model: vlx's model config and scripts/full_size_model.py's architecture
MODELS = {"paligemma": "paligemma-3b-448", "qwen2_5_vl": "qwen2.5-vl-7b"}
# --tiny: vlx's tiny model of the same architecture (vlx.models.tiny), loaded through the same model config
TINY = {"paligemma": "paligemma", "qwen2_5_vl": "qwen2_5_vl"}
# what every variant learns: the label and its explanation in the task's answer format
TARGET = "label_and_explanation"


def compose(model: str, model_dir: Path, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from vlx.__main__ import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        base = [
            "stage=finetune",
            f"model={model}",
            f"model.checkpoint={model_dir}",
            "task=shapes",
            "task.split=train",
            "task.prompt='explain en {text}'",  # the seed's PaliGemma prefix, as the measured runs trained on
            "lora=r64",
        ]
        return hydra_compose("config", overrides=[*base, *overrides])


def items_for(cfg, steps: int) -> list:
    """The training items of `steps` optimizer steps of this variant, built as stage=finetune builds them (the task's
    answer format for the label and explanation)."""
    from hydra.utils import instantiate

    from vlx.finetuning.items import training_items

    ft = cfg.finetune
    task = instantiate(cfg.task)
    per_step = ft.per_device_batch_size * ft.gradient_accumulation_steps
    return training_items(task.examples()[: per_step * steps], TARGET, task.instruction, answer=task.answer)


def run_variant(model: str, model_dir: Path, overrides: list[str], warmup: int, steps: int, workers: int = 4) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from vlx.finetuning.arguments import use_bf16
    from vlx.finetuning.items import Collator
    from vlx.stages.finetune import build_model

    cfg = compose(model, model_dir, overrides)
    ft = cfg.finetune
    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    adapter = build_model(cfg)
    per_step = ft.per_device_batch_size * ft.gradient_accumulation_steps
    items = items_for(cfg, warmup + steps)
    collator = Collator(adapter, target_logits_only=ft.target_logits_only)
    sample = collator(items[:1])
    image_id = adapter.processor.tokenizer.image_token_id
    text_tokens = int(sample["attention_mask"].sum() - (sample["input_ids"] == image_id).sum())
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            if gpu:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

    args = TrainingArguments(
        output_dir="/tmp/bench_ft",
        max_steps=warmup + steps,
        per_device_train_batch_size=ft.per_device_batch_size,
        gradient_accumulation_steps=ft.gradient_accumulation_steps,
        learning_rate=2e-4,
        bf16=use_bf16("auto"),
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        remove_unused_columns=False,
        dataloader_num_workers=workers,
        seed=0,
    )
    trainer = Trainer(model=adapter.model, args=args, train_dataset=items, data_collator=collator, callbacks=[Clock()])
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    seconds = marks[-1] - marks[warmup]  # marks[0] is the start, marks[k] the end of step k
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan")
    result = {
        "samples_per_s": steps * per_step / seconds,
        "peak_gib": peak_gib,
        "warmup_s": marks[warmup] - marks[0],
        "text_tokens": text_tokens,
        "loss_first": losses[0],
        "loss_last": losses[-1],
    }
    del trainer, adapter
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="paligemma")
    parser.add_argument("--model-dir", type=Path, help="default /tmp/paligemma-3b, with --tiny /tmp/vlx-tiny-<model>")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="vlx's tiny model of the architecture, on the CPU or GPU: checks that the variants run",
    )
    parser.add_argument("--warmup", type=int, default=2, help="optimizer steps not timed")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps timed")
    parser.add_argument("--only", type=int, nargs="*", help="variant numbers to run (default all)")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    if args.tiny:
        from vlx.models.tiny import ensure_tiny_model

        args.model_dir = ensure_tiny_model(TINY[args.model], args.model_dir or Path(f"/tmp/vlx-tiny-{args.model}"))
    elif not gpu:
        sys.exit("bench_finetune needs a CUDA GPU (or --tiny, a check on vlx's tiny model)")
    else:
        args.model_dir = args.model_dir or Path("/tmp/paligemma-3b")
        if not (args.model_dir / "config.json").is_file():
            subprocess.run(
                [sys.executable, str(REPO / "scripts" / "full_size_model.py"), MODELS[args.model], str(args.model_dir)],
                check=True,
            )
    rows = []
    failed = []
    for i, (name, overrides) in enumerate(VARIANTS):
        if args.only and i not in args.only:
            continue
        try:
            r = run_variant(args.model, args.model_dir, overrides, args.warmup, args.steps, workers=4 if gpu else 0)
        except Exception as err:  # one variant failing must not lose the others' figures
            print(f"[{i}] {name}: FAILED {type(err).__name__}: {str(err)[:800]}", flush=True)
            failed.append(i)
            gc.collect()
            if gpu:
                torch.cuda.empty_cache()
            continue
        rows.append((i, name, r))
        print(f"[{i}] {name}: {r}", flush=True)
    seed = next((r for i, _, r in rows if i == 0), None)
    import transformers

    device = torch.cuda.get_device_name() if gpu else "CPU"
    print(
        f"\n{device} | torch {torch.__version__} | transformers {transformers.__version__} | "
        f"peft {__import__('peft').__version__} | bitsandbytes {__import__('bitsandbytes').__version__}"
    )
    print(f"command: {' '.join(sys.argv)}\n")
    print("| variant | samples/s | vs seed | peak GiB | warm-up steps s | text tokens | loss first -> last |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for _, name, r in rows:
        ratio = f"{r['samples_per_s'] / seed['samples_per_s']:.1f}x" if seed else ""
        print(
            f"| {name} | {r['samples_per_s']:.2f} | {ratio} | {r['peak_gib']:.1f} | {r['warmup_s']:.0f} | "
            f"{r['text_tokens']} | {r['loss_first']:.2f} -> {r['loss_last']:.2f} |"
        )
    if failed:
        sys.exit(f"variants {failed} failed")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
