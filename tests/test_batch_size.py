"""batch_size=auto (the probe's search, the CPU default) and out-of-memory errors mid-run, halved away.

The CPU runs run out of memory for real: a subprocess whose address space is capped (RLIMIT_AS) between what a batch
of 2 and a batch of 4 need, so that torch's CPU allocator refuses the larger batches' attention weights.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import HANG_GUARD_S, REPO, cli_env, placeholder_image

from vlx.__main__ import run_stage
from vlx.engine.batch_size import CPU_BATCH_SIZE, MAX_TRIES, is_out_of_memory, search
from vlx.engine.batches import prepare_batch, split_prepared

# ----------------------------------------------------------------------------------------------- the probe's search


def curve(per_item: float, fixed: float = 0.0, power: float = 1.0, fails_from: int | None = None, crash: float = 1.3):
    """A memory curve for `search`: the share of the budget a batch takes (fixed + per_item * size ** power); None
    (out of memory) from `fails_from` on, or where the share passes `crash`. Records the sizes tried."""
    tried: list[int] = []

    def measure(size: int) -> float | None:
        tried.append(size)
        share = fixed + per_item * size**power
        if (fails_from is not None and size >= fails_from) or share > crash:
            return None
        return share

    return measure, tried


@pytest.mark.parametrize(
    ("memory", "limit", "best"),
    [
        ({"per_item": 0.01}, 256, 100),  # linear: the estimate from 1 and 2 is the answer
        ({"per_item": 0.02, "fixed": 0.1}, 256, 45),  # a fixed part (workspace) and a per-item part
        ({"per_item": 0.002, "power": 1.3}, 256, 119),  # growing faster than linear: narrowed from both sides
        ({"per_item": 0.0001}, 256, 256),  # the limit (PROBE_LIMIT or the queue's length) caps it
        ({"per_item": 0.01}, 7, 7),
        ({"per_item": 0.5}, 256, 2),
        ({"per_item": 1.5}, 256, 0),  # not even one item
    ],
)
def test_the_search_finds_the_largest_batch_that_fits_in_few_tries(memory, limit, best):
    measure, tried = curve(**memory)
    found = search(measure, limit)
    assert best - best // 8 <= found <= best  # within an eighth of the largest that fits, never above it
    assert len(tried) <= MAX_TRIES and len(set(tried)) == len(tried)
    assert found == 0 or found in tried  # the size chosen was run


def test_the_search_narrows_an_out_of_memory_error_it_did_not_foresee():
    """Memory that runs out earlier than the slope says (no measurement at the failed size): halving the range."""
    measure, tried = curve(per_item=0.01, fails_from=60)
    found = search(measure, 256)
    assert 52 <= found <= 59 and len(tried) <= MAX_TRIES


def test_real_allocation_failures_count_as_out_of_memory_and_other_errors_do_not():
    with pytest.raises(RuntimeError) as cpu:
        torch.empty(2**60, dtype=torch.uint8)  # the CPU allocator's own RuntimeError
    assert is_out_of_memory(cpu.value)
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(MemoryError())
    with pytest.raises(RuntimeError) as shapes:
        torch.ones(2, 3) @ torch.ones(2, 3)
    assert not is_out_of_memory(shapes.value)
    assert not is_out_of_memory(ValueError("can't allocate memory"))  # only RuntimeErrors carry the allocator's text


# ----------------------------------------------------------------------------------------------- auto on a CPU


def test_auto_on_a_cpu_is_the_default_and_says_so(make_cfg, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="vlx.engine.batch_size"):
        summary = run_stage(
            make_cfg(
                "model=tiny_llava", "task=shapes", "task.limit=3", "batch_size=auto", "generation.max_new_tokens=4"
            )
        )
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["batch_size"] == CPU_BATCH_SIZE == summary["batch_size"]
    assert written["batch"]["setting"] == "auto" and written["batch"]["chosen"] == CPU_BATCH_SIZE
    assert written["batch"]["final"] == CPU_BATCH_SIZE and "probe" not in written["batch"]
    assert "on a CPU, the default" in written["batch"]["how"]
    assert any(f"batch_size=auto: {CPU_BATCH_SIZE} on a CPU" in r.getMessage() for r in caplog.records)
    set_size = run_stage(
        make_cfg(
            "model=tiny_llava",
            "task=shapes",
            "task.limit=3",
            "batch_size=2",
            "generation.max_new_tokens=4",
            run_dir=tmp_path / "set",
        )
    )
    assert set_size["batch"] == {"setting": 2, "chosen": 2, "how": "batch_size=2 as set", "final": 2}


def test_a_split_batch_holds_what_its_items_prepared_alone_hold(make_cfg):
    """The halves of an out-of-memory batch are encoded from its prompts and images: each item's demonstrations'
    images and its own go with it (two images per item with one shot)."""
    from hydra.utils import instantiate

    from vlx.stages.infer import build_shot_selector

    cfg = make_cfg("model=tiny_llava", "task=shapes", "task.limit=5", "shots=1")
    task = instantiate(cfg.task)
    queue = task.load().examples
    model = instantiate(cfg.model, _partial_=True)(quantization=None)
    selector = build_shot_selector(cfg, task)
    whole = prepare_batch(model, task, selector, queue, 0, 5, None)
    first, rest = split_prepared(model, whole, 2)
    for part, start, n in ((first, 0, 2), (rest, 2, 3)):
        alone = prepare_batch(model, task, selector, queue, start, n, None)
        assert [e.id for e in part.examples] == [e.id for e in alone.examples]
        assert len(part.images) == 2 * n and part.demos == alone.demos
        assert part.inputs.keys() == alone.inputs.keys()
        for key in alone.inputs:
            assert torch.equal(part.inputs[key], alone.inputs[key]), key


# ----------------------------------------------------------------------------------------------- real out of memory

# runs vlx as `python -m vlx` does, under an address-space cap (VLX_TEST_AS_LIMIT bytes) when one is given, and says
# the process's peak address space (VmPeak, kB) on its way out
DRIVER = """
import atexit, os, resource, runpy, sys
limit = int(os.environ.get("VLX_TEST_AS_LIMIT", "0"))
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmPeak:"):
            sys.stderr.write("VMPEAK " + line.split()[1] + "\\n")
atexit.register(peak)
sys.argv = ["vlx", *sys.argv[1:]]
runpy.run_module("vlx", run_name="__main__", alter_sys=True)
"""
WORDS = ["the", "cat", "sat", "on", "a", "red", "mat", "near", "blue", "shapes", "and", "green", "circles"]
# eager attention keeps [batch, 4 heads, T, T] float32 weights: at ~1,700 tokens about 120 MB per item
LONG_RUN = [
    "model=tiny_llava",
    "model.attn_implementation=eager",
    "task=table",
    "batch_size=8",
    "generation.max_new_tokens=2",
    "eval_after_infer=false",
]


def write_items(folder: Path, extra_words: int | None = None) -> None:
    """Eight items of ~1,700 prompt tokens each (longer by id), and with `extra_words` a ninth, much longer one."""
    lengths = [1000 + 20 * i for i in range(8)] + ([extra_words] if extra_words else [])
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "test.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "image", "text", "label", "explanation"])
        for i, n in enumerate(lengths):
            placeholder_image(folder / "img" / f"{i}.png")
            writer.writerow(
                [f"t{i}", f"img/{i}.png", " ".join(WORDS[j % len(WORDS)] for j in range(n)), "neutral", "x"]
            )


def capped_vlx(run: Path, data: Path, *args: str, limit: int = 0) -> tuple[subprocess.CompletedProcess, int]:
    """`vlx LONG_RUN ...` in a subprocess under an address-space cap (0: none); its result and peak (bytes)."""
    env = cli_env(MALLOC_ARENA_MAX="1", OMP_NUM_THREADS="1", VLX_TEST_AS_LIMIT=str(limit))  # one malloc arena
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, *LONG_RUN, f"task.source={data}", f"hydra.run.dir={run}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    peaks = re.findall(r"VMPEAK (\d+)", proc.stderr)
    assert peaks, proc.stderr[-3000:]
    return proc, int(peaks[-1]) * 1024


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]


def answers(predictions: list[dict]) -> list[tuple]:
    return [(r["id"], r["text"], r["raw"], r["pred"], r["explanation"]) for r in predictions]


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    """The items, the uninterrupted run's predictions, and an address-space cap that a batch of 2 fits and a batch of
    4 does not: measured here, from the peaks of a batch-2 and a batch-8 run."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the address-space cap and its measurement (/proc/self/status) are Linux's")
    root = tmp_path_factory.mktemp("capped")
    data = root / "data"
    write_items(data)
    two, peak_2 = capped_vlx(root / "two", data, "batch_size=2")
    eight, peak_8 = capped_vlx(root / "eight", data)
    assert two.returncode == 0 and eight.returncode == 0, two.stderr[-3000:] + eight.stderr[-3000:]
    per_item = (peak_8 - peak_2) / 6
    # the cap lies a whole item away from both batch sizes it separates
    assert per_item > 50 * 2**20, f"a batch item took {per_item / 2**20:.0f} MiB: too little to cap reliably"
    assert rows(root / "two") == rows(root / "eight")  # the batch size changes no answer
    return {"data": data, "reference": rows(root / "eight"), "limit": int(peak_2 + per_item), "root": root}


@pytest.mark.slow
def test_a_batch_that_runs_out_of_memory_is_halved_and_the_predictions_are_unchanged(capped):
    """Batch 8 and then 4 fail to allocate, 2 fits: every item is written once, in order, with the answers of the
    uninterrupted run, and each halving is a line in the log."""
    run = capped["root"] / "halved"
    proc, _ = capped_vlx(run, capped["data"], limit=capped["limit"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rows(run) == capped["reference"]  # ids, answers, order: the same file
    log = (run / "vlx.log").read_text()
    halvings = re.findall(
        r"out of memory on a batch of (\d+) items \(from (\S+)\): retrying it in halves, batch "
        r"size now (\d+)",
        log,
    )
    assert halvings == [("8", "t0", "4"), ("4", "t0", "2")]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["batch_size"] == 2 and summary["batch"]["chosen"] == 8 and summary["batch"]["final"] == 2
    assert summary["items"] == 8 and summary["new_items"] == 8


@pytest.mark.slow
def test_an_item_that_does_not_fit_alone_is_one_line_naming_it(capped, tmp_path):
    """A ninth item six times longer fails even alone: the run stops with one line naming it (file, row, id) and
    what to do, and the eight before it are written, as the uninterrupted run wrote them."""
    data = tmp_path / "data"
    write_items(data, extra_words=6000)  # ~9,300 tokens: 1.4 GB of attention weights alone
    run = tmp_path / "run"
    proc, _ = capped_vlx(run, data, limit=capped["limit"])
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    errors = [line for line in output.splitlines() if "does not fit" in line]
    assert len(errors) == 1, output[-3000:]
    assert re.search(
        r"test.csv:10: item t8 does not fit in memory even alone \(\d+ prompt tokens, images "
        r"included, \+ 2 new tokens; DefaultCPUAllocator: can't allocate memory: you tried to allocate "
        r"\d+ bytes.*\)\. Free the memory other processes hold, or use quant=nf4",
        errors[0],
    )
    assert "Traceback" not in output
    assert answers(rows(run)) == answers(capped["reference"])  # (the data is in another folder: image paths differ)


# ----------------------------------------------------------------------------------------------- on a GPU


def needs_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")


@pytest.mark.gpu
def test_auto_probes_the_gpu_and_records_what_it_chose(make_cfg, tmp_path):
    needs_cuda()
    summary = run_stage(
        make_cfg("model=tiny_llava", "task=shapes", "task.limit=24", "batch_size=auto", "generation.max_new_tokens=8")
    )
    batch = json.loads((tmp_path / "run" / "summary.json").read_text())["batch"]
    assert summary["items"] == 24 and batch["setting"] == "auto"
    # the tiny model fits any batch of the queue: the probe tries 1, 2 and then the whole queue (the limit)
    assert batch["chosen"] == batch["final"] == summary["batch_size"] == 24
    assert [t["size"] for t in batch["probe"]] == [1, 2, 24] and all(t["fits"] for t in batch["probe"])
    assert batch["worst_item"]["prompt_tokens"] > 0 and "the largest batch of copies" in batch["how"]


@pytest.mark.gpu
def test_a_gpu_batch_that_runs_out_of_memory_is_halved_and_the_predictions_are_unchanged(make_cfg, tmp_path):
    """On CUDA, a cap on this process's share of the GPU (torch's own) set between what a batch of 2 and a batch
    of 8 need: the halved run writes what the uninterrupted one wrote."""
    needs_cuda()
    data = tmp_path / "data"
    write_items(data)
    common = [*LONG_RUN, f"task.source={data}", "model.dtype=float32", "model.compile=false"]
    peaks = {}
    for size in (2, 8):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        run_stage(make_cfg(*common, f"batch_size={size}", run_dir=tmp_path / str(size)))
        peaks[size] = torch.cuda.max_memory_allocated()
    assert rows(tmp_path / "2") == rows(tmp_path / "8")
    per_item = (peaks[8] - peaks[2]) / 6
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction((peaks[2] + per_item) / total)
    try:
        summary = run_stage(make_cfg(*common, run_dir=tmp_path / "halved"))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert rows(tmp_path / "halved") == rows(tmp_path / "8")
    assert summary["batch"]["chosen"] == 8 and summary["batch_size"] == summary["batch"]["final"] < 8
    assert (
        "out of memory on a batch of 8 items (from t0): retrying it in halves"
        in (tmp_path / "halved" / "vlx.log").read_text()
    )
