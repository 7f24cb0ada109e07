"""The demo as a newcomer runs it, over seeds and CPU thread counts: does it learn, and how long does it take?

    python scripts/bench_demo.py                                  # seeds 0 1 2 x threads 1 2, machine idle
    python scripts/bench_demo.py --seeds 0 --threads auto --busy  # the Quick start while another process holds a core
    python scripts/bench_demo.py --seeds 0 --threads auto --busy 2  # ... while other processes hold both cores

Each run is `vlx experiment=demo seed=S cpu_threads=T` in a fresh process (its own run directory, a shared cache
built once beforehand, so that the first run does not pay for building the tiny model and the shapes data). `--busy N`
starts N processes that keep a core busy each for the whole run, as other jobs on a 2-core machine would. The demo's
time is measured here, not in tests/test_demo.py (which checks that it learns, however long it takes). Prints one
table row per run: accuracy and all-items corpus BLEU-4 on the 150 held-out shapes (e-ViL's BLEU-4 from the COCO
caption code, `all_bleu4` in metrics.json), the training's steps and loss, and the wall time of the whole command.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def spin(stop: multiprocessing.Event) -> None:
    while not stop.is_set():
        sum(range(10_000))


def run_demo(out: Path, seed: int, threads: str, env: dict[str, str]) -> dict:
    start = time.perf_counter()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlx",
            "experiment=demo",
            f"seed={seed}",
            f"cpu_threads={threads}",
            f"hydra.run.dir={out}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if res.returncode:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"}
    metrics = json.loads((out / "infer" / "metrics.json").read_text())
    train = json.loads((out / "train_summary.json").read_text())
    return {
        "accuracy": metrics["accuracy"],
        "all_bleu4": metrics["all_bleu4"],
        "steps": train["steps"],
        "first_loss": train["first_loss"],
        "last_loss": train["last_loss"],
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", nargs="+", default=["1", "2"], help="cpu_threads values (auto, 1, 2, ...)")
    parser.add_argument(
        "--busy",
        type=int,
        nargs="?",
        const=1,
        default=0,
        metavar="N",
        help="keep N cores (default 1) busy with other processes meanwhile",
    )
    parser.add_argument("--cold", action="store_true", help="every run builds the tiny model and the data itself")
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="vlx-bench-demo-"))
    env = {**os.environ, "VLX_CACHE_DIR": str(root / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("OMP_NUM_THREADS", None)  # cpu_threads decides
    if not args.cold:  # build the tiny model and the demo's data once, outside the timed runs
        subprocess.run(
            [
                sys.executable,
                "-m",
                "vlx",
                "experiment=demo",
                "finetune.max_steps=1",
                "finetune.infer_split=null",
                f"hydra.run.dir={root / 'warm-up'}",
            ],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for spinner in spinners:
        spinner.start()
    state = f"{args.busy} core(s) kept busy by other processes" if args.busy else "idle"
    print(f"{os.cpu_count()} CPUs, {state}, {'cold' if args.cold else 'warm'} cache; runs in {root}")
    print("| seed | cpu_threads | accuracy | all-items BLEU-4 | steps | loss first -> last | wall s |")
    print("| ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    try:
        for threads in args.threads:
            for seed in args.seeds:
                out = root / f"seed{seed}-threads{threads}"
                cache = {"VLX_CACHE_DIR": str(out / "cache")} if args.cold else {}
                r = run_demo(out, seed, threads, {**env, **cache})
                if "error" in r:
                    print(f"| {seed} | {threads} | failed: {r['error']} | | | | |", flush=True)
                    continue
                print(
                    f"| {seed} | {threads} | {r['accuracy']:.3f} | {r['all_bleu4']:.3f} | {r['steps']} | "
                    f"{r['first_loss']:.2f} -> {r['last_loss']:.3f} | {r['seconds']:.0f} |",
                    flush=True,
                )
    finally:
        stop.set()
        for spinner in spinners:
            spinner.join()


if __name__ == "__main__":
    main()
