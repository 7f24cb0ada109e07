"""Start-up of a task's items: e-SNLI-VE's own reader against the same CSV read as a YAML table task through
`datasets`, the first run (Arrow conversion into an empty cache) and the second (memory-mapped from the cache).

    python scripts/bench_task_loading.py [path/to/esnlive_test.csv] [--repeats 3] [--copies 68]

`--copies N` measures a split N times as large: the CSV's rows repeated with ids made unique, written once to a
temporary folder (68 copies of the test split: 1,002,320 rows).

Each measurement is a fresh process (imports included, as a run pays them), timed from its start to the list of
items. Prints a table; the two readers' items are checked equal first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CSV = REPO.parent / "shared" / "data" / "esnlive" / "esnlive_test.csv"

# the e-SNLI-VE CSV as a table task: the columns of its header, its labels from conf/task/esnli.yaml
TABLE = {
    "columns": {
        "id": "pairID",
        "image": "Flickr30kID",
        "text": "hypothesis",
        "label": "gold_label",
        "explanations": ["explanation"],
    }
}

CHILD = """
import json, sys, time
start = time.perf_counter()
from vlx.tasks import build_task
kind, csv_path, table = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
from pathlib import Path
path = Path(csv_path)
if kind == "reader":
    task = build_task("esnli", csv_dir=str(path.parent), image_dir=str(path.parent), split=path.stem.split("_")[-1])
else:
    esnli = build_task("esnli")
    task = build_task("table", source=str(path), image_dir=str(path.parent), labels=list(esnli.labels), **table)
examples = task.examples()
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "items": len(examples)}))
"""


def timed(kind: str, csv_path: Path, cache: Path) -> dict:
    env = {"HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(csv_path), json.dumps(TABLE)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def enlarged(path: Path, copies: int) -> Path:
    """The CSV's rows `copies` times over, pairIDs suffixed with the copy's number, as esnlive_test.csv in a
    temporary folder."""
    import csv

    out = Path(tempfile.mkdtemp()) / "esnlive_test.csv"
    with path.open(newline="", encoding="utf-8") as src, out.open("w", newline="", encoding="utf-8") as dst:
        reader = csv.reader(src)
        writer = csv.writer(dst)
        header = next(reader)
        rows = list(reader)
        writer.writerow(header)
        pair = header.index("pairID")
        for copy in range(copies):
            writer.writerows([*row[:pair], f"{row[pair]}-{copy}", *row[pair + 1 :]] for row in rows)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", nargs="?", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--copies", type=int, default=1)
    args = parser.parse_args()
    if args.copies > 1:
        args.csv = enlarged(args.csv, args.copies)

    from vlx.tasks import build_task

    esnli = build_task(
        "esnli", csv_dir=str(args.csv.parent), image_dir=str(args.csv.parent), split=args.csv.stem.split("_")[-1]
    )
    table = build_task(
        "table", source=str(args.csv), image_dir=str(args.csv.parent), labels=list(esnli.labels), **TABLE
    )
    a, b = esnli.examples(), table.examples()
    same = [(e.id, e.image, e.text, e.label, e.explanations) for e in a] == [
        (e.id, e.image, e.text, e.label, e.explanations) for e in b
    ]
    print(f"{args.csv}: {len(a)} items; the two readers give the same items: {same}")

    rows = {
        "e-SNLI-VE reader (csv module)": [],
        "table task, first run (empty cache)": [],
        "table task, second run (cached Arrow)": [],
    }
    for _ in range(args.repeats):
        rows["e-SNLI-VE reader (csv module)"].append(timed("reader", args.csv, Path(tempfile.mkdtemp()))["seconds"])
        cache = Path(tempfile.mkdtemp())
        rows["table task, first run (empty cache)"].append(timed("table", args.csv, cache)["seconds"])
        rows["table task, second run (cached Arrow)"].append(timed("table", args.csv, cache)["seconds"])
    width = max(map(len, rows))
    print(f"{'start-up to items':<{width}}  median s  runs (s)")
    for name, seconds in rows.items():
        runs = ", ".join(f"{s:.2f}" for s in seconds)
        print(f"{name:<{width}}  {statistics.median(seconds):8.2f}  {runs}")


if __name__ == "__main__":
    main()
