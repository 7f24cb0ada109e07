"""Shared by the tests: data makers (placeholder images, e-SNLI-VE and Hateful Memes files), readers of W&B's
offline files, running `vlx` as a user does, and vlx installed from a wheel."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

ESNLI_HEADER = ["", "pairID", "Flickr30kID", "hypothesis", "gold_label", "explanation"]

# How long a test waits before it calls the wait a hang: guards against a hang, not speed checks (tests assert
# behaviour, never time; scripts/bench_*.py time things). A busy 2-core machine ran the demo in 779 s, five times its
# idle time, and a refused run's start-up in 82 s. HANG_GUARD_S bounds a whole command; POLL_HANG_GUARD_S one step
# waited for (a condition polled, a page element), so that a step that never comes fails within minutes, not an hour.
# Both can be raised: VLX_TEST_HANG_GUARD_S (the polls get a sixth of it).
HANG_GUARD_S = float(os.environ.get("VLX_TEST_HANG_GUARD_S", 3600))
POLL_HANG_GUARD_S = HANG_GUARD_S / 6


def placeholder_image(path: Path, size: tuple[int, int] = (40, 30), colour: tuple[int, int, int] = (200, 90, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def esnli_from_shared(src: Path, out_dir: Path, limit: int) -> tuple[Path, Path, list[dict[str, str]]]:
    """The first `limit` rows of a real e-SNLI-VE CSV copied verbatim to out_dir/esnlive/, with a placeholder image
    per Flickr30kID in out_dir/flickr30k-images/ (a few sizes and aspect ratios, as the real ones vary).

    Returns:
        (csv_dir, image_dir, rows) laid out as `paths.data_dir=out_dir` expects.
    """
    with src.open(newline="") as f:
        lines = f.read().splitlines(keepends=True)
    with src.open(newline="") as f:
        rows = list(itertools.islice(csv.DictReader(f), limit))
    csv_dir = out_dir / "esnlive"
    csv_dir.mkdir(parents=True, exist_ok=True)
    (csv_dir / src.name).write_text("".join(lines[: limit + 1]))  # no quoted newlines in these files
    image_dir = out_dir / "flickr30k-images"
    sizes = [(40, 30), (30, 60), (56, 56), (64, 32)]
    for i, name in enumerate(sorted({r["Flickr30kID"] for r in rows})):
        placeholder_image(image_dir / name, sizes[i % len(sizes)], (20 * i % 255, 100, 150))
    return csv_dir, image_dir, rows


def write_esnli_csv(path: Path, rows: list[list[str]], header: list[str] = ESNLI_HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_memes(data_dir: Path, split: str, items: list[dict], make_images: bool = True) -> Path:
    """A Hateful Memes jsonl (and its images under img/)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / f"{split}.jsonl").open("w") as f:
        for i, item in enumerate(items):
            f.write(json.dumps(item) + "\n")
            if make_images:
                placeholder_image(data_dir / item["img"], [(40, 30), (30, 60), (50, 50)][i % 3])
    return data_dir / f"{split}.jsonl"


def meme_items(n: int) -> list[dict]:
    # ids stored as integers without leading zeros, as in some copies of the dataset
    return [
        {"id": 1000 + i * 7, "img": f"img/{1000 + i * 7:05d}.png", "label": i % 2, "text": f"meme caption number {i}"}
        for i in range(n)
    ]


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run's `run-*.wandb` file, parsed with wandb's own protobuf messages.

    The file is a LevelDB-style log (what wandb's Go core writes): a 7-byte header (`:W&B`, magic 0xBEE1, version 0),
    then 32 KiB blocks of chunks, each `crc32 (4 bytes) | length (2) | type (1) | data`; a record is one FULL chunk or
    FIRST, MIDDLE..., LAST chunks, and a block's tail under 7 bytes is padding.
    """
    import struct

    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<HB", data[4:7]) == (0xBEE1, 0), f"{path} is not a W&B run log"
    block, records, pending, pos = 32768, [], b"", 7
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # padding at the end of a block
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break  # zero-filled end
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wandb_run(run_dir: Path, hang_guard_s: float = POLL_HANG_GUARD_S) -> dict:
    """An offline W&B run as plain data: its config, its summary and its logged history rows (nested keys joined
    with dots, as `examples.count`).

    `run.finish()` can return before wandb's core process has written the whole log (seen on a loaded machine: the
    summary's last keys were not there yet), so the file is read again until it ends with the run's exit record;
    `hang_guard_s` only stops a wait that would never end.
    """

    def items(updates) -> dict:
        return {item.key or ".".join(item.nested_key): json.loads(item.value_json) for item in updates}

    (log_file,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + hang_guard_s
    while True:
        try:
            records = wandb_records(log_file)
        except Exception:  # noqa: BLE001 - a record cut mid-write does not parse yet
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        assert time.monotonic() < deadline, f"{log_file} has no exit record after {hang_guard_s:.0f} s: wandb hangs?"
        time.sleep(0.2)
    config, summary, history = {}, {}, []
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update(items(record.run.config.update))
        elif kind == "config":
            config.update(items(record.config.update))
        elif kind == "summary":
            summary.update(items(record.summary.update))
        elif kind == "history":
            history.append(items(record.history.item))
    return {"config": config, "summary": summary, "history": history}


REPO = Path(__file__).resolve().parent.parent


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for running `python -m vlx` in a subprocess with the tests' caches."""
    return {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1", **extra}


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """`path` (a folder or a file) cannot be written, even by root: chmod a-w for a user, the immutable attribute
    (chattr +i) for root, who writes through any mode bits."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(mode & 0o555)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("root writes anywhere, and chattr +i (to stop it) does not work on this file system")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=False)


def one_error_line(res: subprocess.CompletedProcess) -> str:
    """The run's output has no traceback and exactly one error line (vlx's, or the log's); returns it."""
    output = res.stdout + res.stderr
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("vlx: error: ") or "[ERROR]" in line]
    assert len(errors) == 1, output[-3000:]
    return errors[0]


def run_vlx(*args: str, cwd=None, **popen) -> subprocess.CompletedProcess:
    """`vlx ARGS` as a user types it, in a subprocess; its exit code and output. It is killed only when it hangs
    (HANG_GUARD_S; a `timeout` given here can lengthen that, never shorten it: a slow machine is no failure)."""
    guard = max(HANG_GUARD_S, popen.pop("timeout", 0) or 0)
    return subprocess.run(
        [sys.executable, "-m", "vlx", *args],
        cwd=cwd or REPO,
        env=popen.pop("env", cli_env()),
        capture_output=True,
        text=True,
        timeout=guard,
        **popen,
    )


def start_vlx(*args: str, log: Path, **popen) -> subprocess.Popen:
    """`vlx ARGS` started in the background, its output going to `log`."""
    out = log.open("w")
    # Ctrl-C as from a terminal: a shell that starts the test run in the background (`nohup ... &`) passes SIGINT
    # on ignored, and Python then never turns it into KeyboardInterrupt (a run then ignored the tests' Ctrl-C)
    return subprocess.Popen(
        [sys.executable, "-m", "vlx", *args],
        cwd=REPO,
        env=popen.pop("env", cli_env()),
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=_terminal_signals,
        **popen,
    )


def _terminal_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(
    condition: Callable[[], bool], proc: subprocess.Popen | None = None, hang_guard_s: float = POLL_HANG_GUARD_S
) -> None:
    """Polls until `condition()` holds; fails if `proc` ends first, or after `hang_guard_s` (a hang, not slowness:
    a slow machine only makes the wait longer)."""
    deadline = time.monotonic() + hang_guard_s
    while not condition():
        assert proc is None or proc.poll() is None, f"the process ended first (exit {proc.returncode})"
        assert time.monotonic() < deadline, f"still waiting after {hang_guard_s:.0f} s: a hang?"
        time.sleep(0.05)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build_wheel(out_dir: Path) -> Path:
    """A wheel of this checkout, as `pip wheel .` builds it."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(REPO), "-w", str(out_dir)],
        check=True,
        capture_output=True,
        timeout=HANG_GUARD_S,
    )
    (built,) = out_dir.glob("vlx-*.whl")
    return built


def install_wheel(wheel: Path, venv: Path) -> Path:
    """A fresh venv with the wheel installed (not editable); returns its site-packages.

    Its dependencies are this environment's, put on its path by a .pth file (installing torch again would take
    minutes; .ci/run installs the wheel with its dependencies from scratch). .pth files in a folder on that path are
    not run, so the editable vlx of this environment stays out of it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=HANG_GUARD_S)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    site.mkdir(parents=True, exist_ok=True)
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=HANG_GUARD_S,
    )
    return site


def listed_options(group: str) -> list[str]:
    """A config group's options as the command line lists them: every YAML in its folder, a user's own included (the
    README's "Your own data" adds some), so that a test of the listing holds with or without them."""
    from vlx.__main__ import CONFIG_DIR

    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def model_options() -> list[str]:
    """The model group's options, as the command line lists them (listed_options)."""
    return listed_options("model")


def shipped_configs() -> list[Path]:
    """The YAMLs vlx ships in conf/, relative to conf/: those git tracks where this is a git checkout (a user's own
    conf/task/mine.yaml, as the README's "Your own data" suggests, is neither tested nor required), else every YAML
    there (an unpacked source archive holds only what ships)."""
    conf = REPO / "conf"
    try:
        tracked = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z", "--", "conf"],
            capture_output=True,
            text=True,
            check=True,
            timeout=HANG_GUARD_S,
        ).stdout
    except (OSError, subprocess.CalledProcessError):  # no git, or not a git checkout
        return sorted(p.relative_to(conf) for p in conf.rglob("*.yaml"))
    paths = [REPO / name for name in tracked.split("\0") if name.endswith(".yaml")]
    return sorted(p.relative_to(conf) for p in paths if p.is_file())  # a file deleted in the work tree is not there


def shipped_options(group: str) -> list[str]:
    """The options vlx ships for a config group (conf/<group>/*.yaml; shipped_configs)."""
    return sorted(p.stem for p in shipped_configs() if p.parent == Path(group))
