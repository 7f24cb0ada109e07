"""Times the review page on a large run: from `vlx stage=review` to a usable page, and the server's answers.

    python scripts/bench_eval.py --write-run /tmp/bigrun && vlx stage=eval stage.run=/tmp/bigrun task=esnli
    python scripts/bench_review.py /tmp/bigrun --ratings 300

Starts the real server (`vlx stage=review stage.run=<run> review.port=0`) in a subprocess, waits for its URL and for
the first page of items, then times each request the page makes (median and worst of --repeats), over HTTP. With
--ratings N, N ratings are added first (to a copy of ratings.jsonl's place: the run gets a ratings file of its own
that the script removes at the end). Prints a markdown table, the machine, the versions and the command.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench_eval import cpu_name  # this folder is on sys.path when the script runs

QUERIES = {
    "run info (GET /api/run)": "api/run",
    "first page, 50 items": "api/items?limit=50&rater=bench",
    "wrong labels only": "api/items?limit=50&wrong=1&rater=bench",
    "not yet rated by the rater": "api/items?limit=50&rated=no&rater=bench",
    "one confusion-matrix cell": "api/items?limit=50&gold=neutral&pred=entailment&rater=bench",
    "sorted by ROUGE-L, high first": "api/items?limit=50&sort=rouge_l&order=desc&rater=bench",
    "page 200 of 295": "api/items?limit=50&offset=9950&rater=bench",
}


def fetch(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as answer:
        body = answer.read()
    return time.perf_counter() - start, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a scored run directory")
    parser.add_argument("--ratings", type=int, default=0, help="ratings to add before timing (default 0)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    ratings = args.run / "ratings.jsonl"
    if args.ratings and ratings.exists():
        raise SystemExit(f"{ratings} exists: run on a run without ratings (the script adds and removes its own)")
    if args.ratings:
        rows = [json.loads(line) for line in (args.run / "predictions.jsonl").read_text().splitlines()[: args.ratings]]
        ratings.write_text(
            "".join(
                json.dumps({"id": r["id"], "rater": "bench", "verdict": "yes", "score": 1.0, "time": 0}) + "\n"
                for r in rows
            )
        )
    start = time.perf_counter()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "vlx-bench-review.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vlx",
                "stage=review",
                f"stage.run={args.run}",
                "review.port=0",
                f"hydra.run.dir={log.with_suffix('')}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = None
        while url is None:
            match = re.search(r"vlx review: (http://\S+/)", log.read_text())
            url = match.group(1) if match else None
            if proc.poll() is not None:
                raise SystemExit(f"the server stopped: {log.read_text()[-2000:]}")
            time.sleep(0.02)
        to_url = time.perf_counter() - start
        fetch(url)  # the page itself
        fetch(url + "api/run")
        fetch(url + QUERIES["first page, 50 items"])
        usable = time.perf_counter() - start
        table = []
        for name, path in QUERIES.items():
            times, size = [], 0
            for _ in range(args.repeats):
                seconds, size = fetch(url + path)
                times.append(seconds)
            table.append((name, statistics.median(times), max(times), size))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if args.ratings:
            ratings.unlink()
    items = sum(1 for _ in (args.run / "predictions.jsonl").open())
    print(f"\n## review page: {items} items, {args.ratings} ratings\n")
    print(
        f"from `vlx stage=review` to its URL: {to_url:.2f} s; to a usable page (page, run info, first items): "
        f"{usable:.2f} s\n"
    )
    print("| request | median (ms) | worst (ms) | bytes |\n|---|---:|---:|---:|")
    for name, median, worst, size in table:
        print(f"| {name} | {1000 * median:.1f} | {1000 * worst:.1f} | {size:,} |")
    versions = ", ".join(f"{n} {importlib.metadata.version(n)}" for n in ("starlette", "uvicorn"))
    print(f"\nmachine: {os.cpu_count()} cores, {cpu_name()}; python {platform.python_version()}, {versions}")
    print("command: " + shlex.join([Path(sys.executable).name, *sys.argv]))


if __name__ == "__main__":
    main()
