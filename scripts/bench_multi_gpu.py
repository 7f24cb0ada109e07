"""One GPU against several: DDP fine-tuning and data-parallel inference through `vlx` itself, on the same inputs.

Runs the real command lines (`python -m vlx ...` on one GPU; `accelerate launch` for fine-tuning and `torchrun` for
inference on N GPUs) with the full-size architectures and random weights (scripts/full_size_model.py):

- fine-tuning: PaliGemma-3b-448, LoRA r64, `finetune=fast` (effective batch --micro-batch x --accumulation: 4 x 2
  = 8 by default on one GPU, 4 x 1 per GPU on two; --compile-mode sets the compiled blocks' torch.compile mode), the
  same seed; samples/s is the median of the per-step throughput that vlx logs, after the warm-up steps; the loss
  curves are compared step by step;
- inference: LLaVA-NeXT-7B on the first e-SNLI-VE test pairs (500x375 JPEGs), batch 32 per GPU, 40 new tokens
  forced; items/s from each run's summary (the predicting, after the model is loaded); the predictions compared.

    python scripts/bench_multi_gpu.py --csv-dir ../shared/data/esnlive --gpus 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))


def run(command: list[str], gpus: int, log: Path, fatal: bool = True) -> float | None:
    """Seconds the command took; on failure, exits (or, not `fatal`, prints the log's end and returns None)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(gpus))}
    start = time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run(command, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode == 0:
        return time.perf_counter() - start
    if fatal:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}; see {log}")
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    print(f"failed ({done.returncode}): {' '.join(command)}\n{tail}\n")
    return None


def adapter_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """The saved adapter's tensor names and shapes (a sharded save gone wrong shows as flat or empty tensors)."""
    from safetensors import safe_open

    if not (folder / "adapter_model.safetensors").is_file():
        return {}
    with safe_open(folder / "adapter_model.safetensors", "pt") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 (safe_open is not iterable)


def launcher(kind: str, gpus: int) -> list[str]:
    if gpus == 1:
        return [sys.executable, "-m", "vlx"]
    if kind == "accelerate":
        return [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            f"--num_processes={gpus}",
            "--num_machines=1",
            "--dynamo_backend=no",
            "-m",
            "vlx",
        ]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", "-m", "vlx"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--csv-dir", type=Path, default=REPO.parent / "shared" / "data" / "esnlive")
    parser.add_argument("--work", type=Path, default=Path("/tmp/vlx-multi-gpu"))
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps of each fine-tuning run")
    parser.add_argument("--warmup", type=int, default=6, help="steps left out of the throughput")
    parser.add_argument("--logging-steps", type=int, default=1, help="fine-tuning: optimizer steps per log entry")
    parser.add_argument("--loader-workers", type=int, default=0, help="fine-tuning: DataLoader worker processes")
    parser.add_argument(
        "--profile-steps",
        type=int,
        nargs=2,
        metavar=("FIRST", "LAST"),
        help="fine-tuning: profile these optimizer steps (finetune.profile_steps) and print the GPU's busy fraction",
    )
    parser.add_argument(
        "--accumulation",
        type=int,
        default=2,
        help="fine-tuning: micro-batches per optimizer step on one GPU (split over the GPUs)",
    )
    parser.add_argument("--micro-batch", type=int, default=4, help="fine-tuning: samples per micro-batch per GPU")
    parser.add_argument("--compile-mode", help="fine-tuning: finetune.compile_mode (e.g. reduce-overhead)")
    parser.add_argument(
        "--ddp-variant",
        nargs="+",
        action="append",
        metavar=("NAME", "OVERRIDE"),
        help="fine-tuning: a run on --gpus GPUs named NAME, with these vlx overrides (repeatable; one GPU runs once). "
        "E.g. --ddp-variant ddp --ddp-variant fsdp \"finetune.fsdp='full_shard auto_wrap'\" finetune.compile=false",
    )
    parser.add_argument("--items", type=int, default=512, help="inference items of each run")
    parser.add_argument("--skip", choices=["finetune", "infer"], nargs="*", default=[])
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    models = {"paligemma-3b-448": work / "pg3b", "llava-v1.6-mistral-7b": work / "llava7b"}
    needed = {"paligemma-3b-448": "finetune", "llava-v1.6-mistral-7b": "infer"}
    for arch, folder in models.items():
        if needed[arch] not in args.skip and not (folder / "config.json").is_file():
            subprocess.run(
                [sys.executable, str(REPO / "scripts" / "full_size_model.py"), arch, str(folder)], check=True
            )
    rows = []
    if "finetune" not in args.skip:
        common = [
            "stage=finetune",
            "model=paligemma",
            f"model.checkpoint={models['paligemma-3b-448']}",
            "task=shapes",
            "task.split=train",
            f"task.limit={args.micro_batch * args.accumulation * args.steps}",
            "lora=r64",
            "finetune=fast",
            f"finetune.per_device_batch_size={args.micro_batch}",
            f"finetune.gradient_accumulation_steps={args.accumulation}",
            f"finetune.max_steps={args.steps}",
            f"finetune.logging_steps={args.logging_steps}",
            f"finetune.dataloader_num_workers={args.loader_workers}",
            "finetune.save_strategy=no",
            "eval_after_infer=false",
        ]
        if args.compile_mode:
            common.append(f"finetune.compile_mode={args.compile_mode}")
        if args.profile_steps:
            common.append(f"finetune.profile_steps=[{args.profile_steps[0]},{args.profile_steps[1]}]")
        variants = [("1 GPU", 1, [])] + [
            (f"{args.gpus} GPUs, {name}", args.gpus, overrides) for name, *overrides in args.ddp_variant or [["ddp"]]
        ]
        curves, adapters = {}, {}
        for index, (name, gpus, overrides) in enumerate(variants):
            out = work / f"finetune-{index}"
            command = [*launcher("accelerate", gpus), *common, *overrides, f"hydra.run.dir={out}"]
            seconds = run(command, gpus, work / f"ft{index}.log", fatal=False)
            if seconds is None:
                rows.append((f"fine-tuning, {name}: failed", float("nan"), float("nan"), None, None))
                continue
            summary = json.loads((out / "train_summary.json").read_text())
            steps = [h for h in summary["log_history"] if "loss" in h]
            curves[name] = [h["loss"] for h in steps]
            adapters[name] = adapter_shapes(out / "adapter")
            speed = statistics.median(h["samples_per_s"] for h in steps if h["step"] > args.warmup)
            memory = max(h.get("gpu_peak_gib", 0) for h in steps)
            base = rows[0][1] if rows else speed
            rows.append((f"fine-tuning, {name} ({summary['distributed']})", speed, speed / base, memory, seconds))
            print(f"{rows[-1][0]}: {speed:.2f} samples/s ({speed / base:.2f}x), {seconds:.0f} s", flush=True)
            for profile in sorted(out.glob("profile*.json")):
                if not profile.name.startswith("profile_trace"):
                    print(f"{name} {profile.name}: {profile.read_text()}")
        one = curves.get("1 GPU")
        for name, curve in curves.items():
            print(f"loss, {name}: {[round(x, 3) for x in curve]}")
            if one and name != "1 GPU":
                worst = max(abs(a - b) / abs(a) for a, b in zip(one, curve, strict=True))
                same = "the same tensors and shapes" if adapters[name] == adapters["1 GPU"] else "DIFFERENT tensors"
                print(
                    f"  largest relative difference per step from 1 GPU: {worst:.2%}; adapter: {same} "
                    f"({len(adapters[name])} tensors)"
                )
    if "infer" not in args.skip:
        from bench_infer import write_images

        images = work / "images"
        write_images(args.csv_dir, images, args.items)
        common = [
            "model=llava",
            f"model.checkpoint={models['llava-v1.6-mistral-7b']}",
            "model.compile=false",
            "task=esnli",
            f"task.csv_dir={args.csv_dir}",
            f"task.image_dir={images}",
            "task.split=test",
            f"task.limit={args.items}",
            "batch_size=32",
            "generation.max_new_tokens=40",
            "+generation.min_new_tokens=40",
            "eval_after_infer=false",
        ]
        answers = {}
        for gpus in (1, args.gpus):
            out = work / f"infer-{gpus}gpu"
            seconds = run([*launcher("torchrun", gpus), *common, f"hydra.run.dir={out}"], gpus, work / f"in{gpus}.log")
            summary = json.loads((out / "summary.json").read_text())
            answers[gpus] = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
            rate = summary["items_per_s"]
            ratio = rate / rows[-1][1] if gpus > 1 else 1.0
            rows.append((f"inference, {gpus} GPU{'s' if gpus > 1 else ''}", rate, ratio, None, seconds))
        one, many = answers[1], answers[args.gpus]
        assert [r["id"] for r in one] == [r["id"] for r in many], "the merged file must hold the same ids in order"
        same = sum(a["raw"] == b["raw"] for a, b in zip(one, many, strict=True)) / len(one)
        print(f"inference: {len(one)} items in dataset order in both; identical answers: {same:.1%}")
    import torch

    print(
        f"\n{torch.cuda.device_count()} x {torch.cuda.get_device_name()} | torch {torch.__version__} | "
        f"transformers {__import__('transformers').__version__} | accelerate {__import__('accelerate').__version__}"
    )
    print(f"command: {' '.join(sys.argv)}\n")
    print("| run | samples/s | vs 1 GPU | peak GiB per GPU | wall s (load and compile included) |")
    print("|---|---:|---:|---:|---:|")
    for name, rate, ratio, memory, seconds in rows:
        memory = "" if memory is None else f"{memory:.1f}"
        print(f"| {name} | {rate:.2f} | {ratio:.2f}x | {memory} | {'' if seconds is None else f'{seconds:.0f}'} |")


if __name__ == "__main__":
    main()
