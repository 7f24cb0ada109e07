"""Judge throughput (items/s) of `vlx stage=judge` with a tiny judge on this machine's CPU.

Makes a finished run of N items of the built-in shapes task by hand (its images, hypotheses and template
explanations; the gold label as the prediction for about 70% of the items, another label for the rest), then judges
it with each variant: a fresh judge folder each, in this one process (the tiny model and the shapes data are built
once into vlx's cache beforehand, so that no variant pays for it).

    python scripts/bench_judge.py                                   # 48 items, tiny_llava, batch 1 and 8
    python scripts/bench_judge.py --items 96 --judge tiny_paligemma --batch-sizes 1 4 8 16 --threads 2

Items/s counts the judging (the judge stage's own `items_per_s`: prompts, images, the model's answers, the verdicts
written), not the loading; the wall column is the whole stage, loading included. Prints a markdown table, the
machine, the versions and the command.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

from bench_eval import cpu_name  # this folder is on sys.path when the script runs

REPO = Path(__file__).resolve().parent.parent


def finished_run(folder: Path, items: int) -> Path:
    """A run directory holding predictions.jsonl and summary.json for the first `items` shapes test items."""
    from vlx.tasks import build_task

    # the default split sizes (test: 60 items, as tests and the demo build them) unless more are asked for
    more = {"sizes": {"train": 6, "dev": 6, "test": items}} if items > 60 else {}
    task = build_task("shapes", split="test", limit=items, **more)
    rows = []
    for i, ex in enumerate(task.load().examples):
        pred = ex.label if i % 10 < 7 else next(label for label in task.labels if label != ex.label)
        explanation = ex.explanations[0] if ex.explanations else ""
        rows.append(
            {
                "id": ex.id,
                "image": str(ex.image),
                "text": ex.text,
                "gold": ex.label,
                "pred": pred,
                "explanation": explanation,
                "raw": f"{pred.capitalize()}. {explanation}",
                "refs": list(ex.explanations),
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    info = {"task": task.name, "split": task.split, "labels": list(task.labels), "model": "hand-made"}
    (folder / "summary.json").write_text(json.dumps({"items": len(rows), "run": info}))
    return folder


def composed_stage(overrides: list[str], out: Path) -> tuple[dict, float]:
    """A stage in this process, composed as the command line would compose it: its result and wall seconds."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from vlx.__main__ import run_stage
    from vlx.configs import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[*overrides, f"hydra.run.dir={out}", f"hydra.runtime.output_dir={out}"],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    start = time.perf_counter()
    result = run_stage(cfg)
    return result, time.perf_counter() - start


def judge(run: Path, out: Path, overrides: list[str]) -> dict:
    """`vlx stage=judge stage.run=<run> ...` in this process (composed as the command line would be)."""
    result, seconds = composed_stage(["stage=judge", f"stage.run={run}", *overrides], out)
    return {**result, "wall_s": seconds}


def versions() -> str:
    names = ("torch", "transformers")
    return ", ".join(f"{n} {importlib.metadata.version(n)}" for n in names) + f", python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48, help="items to judge (default 48)")
    parser.add_argument("--judge", default="tiny_llava", help="the judge, a conf/model option (default tiny_llava)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    parser.add_argument("--decodes", nargs="+", default=["generate", "score"], help="stage.decode values")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="stage.max_new_tokens (default 20)")
    parser.add_argument("--threads", default="auto", help="cpu_threads (default auto: 1 for a tiny model)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    with tempfile.TemporaryDirectory(prefix="vlx-bench-judge-") as tmp:
        run = finished_run(Path(tmp) / "run", args.items)
        common = [
            f"judge_model={args.judge}",
            f"cpu_threads={args.threads}",
            "eval.resamples=0",
            f"stage.max_new_tokens={args.max_new_tokens}",
        ]
        judge(run, Path(tmp) / "warm-up", [*common, "batch_size=1", "stage.judge_name=warm-up"])  # builds, warms
        results = []
        for decode in args.decodes:
            for size in args.batch_sizes:
                name = f"{decode}-b{size}"
                out = judge(
                    run,
                    Path(tmp) / name,
                    [*common, f"batch_size={size}", f"stage.decode={decode}", f"stage.judge_name={name}"],
                )
                results.append((decode, size, out))

    import torch

    print(f"\n## judge throughput: {args.items} shapes items, judge_model={args.judge}\n")
    print("| stage.decode | batch_size | items/s | s/item | unparsed | wall s (with loading) |")
    print("|---|---:|---:|---:|---:|---:|")
    for decode, size, out in results:
        rate = out["items_per_s"]
        print(f"| {decode} | {size} | {rate:.2f} | {1 / rate:.3f} | {out['unparsed']} | {out['wall_s']:.1f} |")
    print(
        f"\nmachine: {os.cpu_count()} cores, {cpu_name()}, {platform.platform()}; torch threads "
        f"{torch.get_num_threads()}"
    )
    print(f"versions: {versions()}")
    print("command: " + shlex.join([Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
