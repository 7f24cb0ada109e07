"""Times the classification metrics with their bootstrap intervals (vlx.metrics.classification) on a split's size:
accuracy, macro-F1, binary F1 and AUROC, each with `--resamples` draws, over random binary predictions (10% unparsed,
overlapping scores so that AUROC is below 1), in this process, after one warm-up call.

    python scripts/bench_classification.py                          # 15,000 items, 1000 resamples, 5 repeats
    python scripts/bench_classification.py --items 1000 15000 100000 --resamples 1000

Prints one table row per size: the median and the slowest of the repeats. (The test suite checks what the intervals
hold, tests/test_classification_metrics.py; this is where their time is measured: docs/PERFORMANCE.md.)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

LABELS = ["not offensive", "offensive"]


def binary_case(n: int, seed: int) -> tuple[list[str], list[str | None], list[dict[str, float]]]:
    """Gold and predicted labels (correct about half the time, 10% unparsed) and a score per item."""
    rng = np.random.default_rng(seed)
    gold = [LABELS[i] for i in rng.integers(0, 2, n)]
    pred: list[str | None] = [LABELS[i] for i in rng.integers(0, 2, n)]
    for i in np.flatnonzero(rng.random(n) < 0.1):
        pred[i] = None
    signal = 0.5 * np.array([g == "offensive" for g in gold])
    scores = [{"offensive": float(s)} for s in (rng.random(n) + signal) / 1.5]
    return gold, pred, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[15_000])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from vlx.metrics.classification import classification_metrics

    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, "
        f"{args.resamples} resamples, {args.repeats} repeats"
    )
    print("| items | median s | slowest s |")
    print("| ---: | ---: | ---: |")
    for n in args.items:
        gold, pred, scores = binary_case(n, seed=n)
        kwargs = {"positive": "offensive", "scores": scores, "resamples": args.resamples, "seed": 0}
        classification_metrics(gold, pred, LABELS, **kwargs)  # warm-up: imports, first allocations
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            metrics, _ = classification_metrics(gold, pred, LABELS, **kwargs)
            seconds.append(time.perf_counter() - start)
            assert all(metrics[f"{k}_ci"] is not None for k in ("accuracy", "macro_f1", "binary_f1", "auroc"))
        print(f"| {n:,} | {statistics.median(seconds):.3f} | {max(seconds):.3f} |", flush=True)


if __name__ == "__main__":
    main()
