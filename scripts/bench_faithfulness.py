"""Throughput of `vlx stage=faithfulness` (counterfactual edits, image reliance) on a tiny model, on the CPU.

Makes an infer run of N items of the built-in shapes task with a tiny model (labels scored, explanations
generated: `decode=score_then_explain`), then runs each faithfulness test on it in this one process, each in a fresh
stage (the tiny model and the shapes data are built once into vlx's cache by the infer run, so no test pays for it).

    python scripts/bench_faithfulness.py                                # 60 items, tiny_llava, batch 8
    python scripts/bench_faithfulness.py --items 150 --model tiny_paligemma --batch-size 16 --threads 2
    python scripts/bench_faithfulness.py --run <a finished infer run> --sample 250 --batch-size 32 --batching length

A test's rows are its answered edits (counterfactual: `positions` x `words_per_position` per item) or ablated items
(image_reliance: one per item); seconds are the whole stage (the run read, the model loaded, the rows answered and
written, the numbers with their intervals), so rows/s is what a user waits for. Prints a markdown table, the
machine, the versions and the command.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path

from bench_eval import cpu_name  # this folder is on sys.path when the script runs
from bench_judge import composed_stage, versions

REPO = Path(__file__).resolve().parent.parent
# the tests timed: the table's name, the test's output name (its rows file and its key in faithfulness.json), its
# stage overrides
TESTS = [
    ("counterfactual", "counterfactual", ["stage.tests=[counterfactual]"]),
    ("image_reliance, mean_colour", "image_reliance_mean_colour", ["stage.tests=[image_reliance]",
                                                                   "stage.ablation=mean_colour"]),
    ("image_reliance, other_item", "image_reliance_other_item", ["stage.tests=[image_reliance]",
                                                                 "stage.ablation=other_item"]),
]  # fmt: skip


def stage(overrides: list[str], out: Path) -> dict:
    """A stage in this process, composed as the command line would compose it; its result and wall seconds."""
    result, seconds = composed_stage(overrides, out)
    return {"result": result, "seconds": seconds}


def infer_run(
    out: Path, items: int, model: str, max_new_tokens: int, batch_size: int, batching: str, threads: str
) -> Path:
    """An infer run of the first `items` shapes test items (the split made larger where more are asked for)."""
    sizes = [f"task.sizes={{train:6,dev:6,test:{items}}}"] if items > 60 else []
    stage(
        [
            "stage=infer",
            f"model={model}",
            "task=shapes",
            *sizes,
            f"task.limit={items}",
            "decode=score_then_explain",
            f"generation.max_new_tokens={max_new_tokens}",
            f"batch_size={batch_size}",
            f"batching={batching}",
            f"cpu_threads={threads}",
            "eval_after_infer=false",
        ],
        out,
    )
    return out


def infer_figures(run: Path) -> dict:
    """The infer run's own items and items/s (its loop only, loading not counted), from its summary.json: what one
    answer costs outside the tests."""
    import json

    from vlx.run.directory import RunDir

    summary = json.loads(RunDir(run).summary_file.read_text())
    return {"items": summary["items"], "items_per_s": summary.get("items_per_s")}


def run_tests(run: Path, work: Path, common: list[str]) -> list[dict]:
    """Each test of TESTS on `run`, in a fresh stage: its name, items, rows, seconds and rows/s."""
    from vlx.run.directory import RunDir

    rows = []
    for name, output, overrides in TESTS:
        timed = stage(["stage=faithfulness", f"stage.run={run}", *common, *overrides], work / output)
        summary = timed["result"][output]
        lines = RunDir(run).faithfulness_file(output).read_text().splitlines()
        assert summary["new_rows"] == len(lines), (name, summary["new_rows"], len(lines))
        rows.append(
            {
                "test": name,
                "items": summary["items"],
                "rows": len(lines),
                "seconds": timed["seconds"],
                "rows_per_s": len(lines) / timed["seconds"],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=60, help="items of the infer run tested (default 60)")
    parser.add_argument("--model", default="tiny_llava", help="a conf/model option (default tiny_llava)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch_size of the run and the tests (default 8)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="explanation tokens (default 16)")
    parser.add_argument("--positions", type=int, default=4, help="stage.positions (default 4, the stage's)")
    parser.add_argument("--words-per-position", type=int, default=2, help="stage.words_per_position (default 2)")
    parser.add_argument("--threads", default="auto", help="cpu_threads (default auto: 1 for a tiny model)")
    parser.add_argument("--batching", default="dataset", help="batching of the run and the tests (default dataset)")
    parser.add_argument("--sample", type=int, help="stage.sample: test this many of the run's items (default all)")
    parser.add_argument("--run", type=Path, help="test this finished infer run instead of making one (its model)")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    if args.run and (args.run / "faithfulness").exists():
        sys.exit(f"--run {args.run}: has faithfulness/ already (its tests would answer nothing); give a fresh run")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    if args.out and args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"--out {args.out}: not empty; give a new folder (a test with rows already there answers nothing)")
    with tempfile.TemporaryDirectory(prefix="vlx-bench-faithfulness-") as tmp:
        work = args.out or Path(tmp)
        run = args.run or infer_run(
            work / "run", args.items, args.model, args.max_new_tokens, args.batch_size, args.batching, args.threads
        )
        common = [
            f"batch_size={args.batch_size}",
            f"batching={args.batching}",
            f"cpu_threads={args.threads}",
            f"stage.positions={args.positions}",
            f"stage.words_per_position={args.words_per_position}",
            *([f"stage.sample={args.sample}"] if args.sample else []),
        ]
        results = run_tests(run, work / "tests", common)
        infer = infer_figures(run)

    import torch

    made = "" if args.run else f"{args.items} shapes items, model={args.model}, decode=score_then_explain, "
    source = f"run {args.run}, " if args.run else made + f"{args.max_new_tokens} explanation tokens, "
    print(f"\n## faithfulness throughput: {source}batch {args.batch_size}, batching {args.batching}\n")
    print("| test | items | rows | seconds | rows/s |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['test']} | {r['items']} | {r['rows']} | {r['seconds']:.1f} | {r['rows_per_s']:.1f} |")
    if infer["items_per_s"]:
        print(
            f"\nthe infer run itself: {infer['items']} items at {infer['items_per_s']:.1f} items/s (its loop only, "
            "loading not counted)"
        )
    print(
        f"\nmachine: {os.cpu_count()} cores, {cpu_name()}, {platform.platform()}; torch threads "
        f"{torch.get_num_threads()}"
    )
    print(f"versions: {versions()}")
    print("command: " + shlex.join([Path(sys.executable).name, *sys.argv]))
    return results


if __name__ == "__main__":
    main()
