"""What vlx prints: every line once, and only lines a user acts on (the libraries' stray output routed or quieted)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
from helpers import HANG_GUARD_S, run_vlx

ESNLI = ("entailment", "contradiction", "neutral")

# a subprocess with the libraries really imported: each adds its own stderr handler at import, as in a run
LIBRARY_LOGS = textwrap.dedent("""
    import io, json, logging, sys
    import datasets, huggingface_hub, transformers  # noqa: F401  (their import adds the handlers)
    from vlx._runtime import OWN_HANDLER_LIBRARIES, route_library_logs

    seen = []
    class Keep(logging.Handler):  # stands for Hydra's console and file handlers on the root logger
        def emit(self, record):
            seen.append(record.getMessage())
    logging.getLogger().addHandler(Keep())
    stderr = io.StringIO()
    for name in OWN_HANDLER_LIBRARIES:  # their handlers write to the stderr of their import: point them here
        for handler in logging.getLogger(name).handlers:
            handler.setStream(stderr)
    def say(tag):
        for name in OWN_HANDLER_LIBRARIES:
            logging.getLogger(name + ".some.module").warning("%s %s", tag, name)
    say("before")
    route_library_logs()
    say("after")
    print(json.dumps({"root": seen, "stderr": stderr.getvalue().splitlines()}))
""")


def test_library_warnings_are_said_once_through_the_root_logger(tmp_path):
    """huggingface_hub and datasets print a warning through their own handler and again through the root logger's
    (the hub's retry warnings came out twice); transformers only through its own, so never into vlx.log. Routed,
    each says it once, through the root logger's handlers (Hydra's console and vlx.log)."""
    env = {"CI": "", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(
        [sys.executable, "-c", LIBRARY_LOGS],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env={**os.environ, **env},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.splitlines()[-1])
    # before: the duplication the routing removes
    assert sorted(m for m in out["root"] if m.startswith("before")) == ["before datasets", "before huggingface_hub"]
    stderr = [line.removeprefix("[transformers] ") for line in out["stderr"]]  # transformers' own format
    assert sorted(stderr) == ["before datasets", "before huggingface_hub", "before transformers"]
    # after: each library's warning once, on the root logger's handlers only
    assert sorted(m for m in out["root"] if m.startswith("after")) == [
        "after datasets",
        "after huggingface_hub",
        "after transformers",
    ]
    assert not [line for line in stderr if line.startswith("after")]


def _esnli_rows(n: int = 9) -> list[dict]:
    refs = ["a man rides a bike outside", "the dog runs on the grass", "two women talk at a table"]
    return [
        {
            "id": f"p{i}",
            "image": f"{i}.jpg",
            "text": "h",
            "gold": ESNLI[i % 3],
            "pred": ESNLI[i % 3] if i % 2 else ESNLI[(i + 1) % 3],
            "explanation": refs[(i + i // 3) % 3],
            "raw": "",
            "refs": [refs[i % 3]],
        }
        for i in range(n)
    ]


@pytest.mark.slow
def test_eval_says_each_thing_once(tmp_path):
    """`vlx stage=eval` on hand-made predictions: the SPICE note once (it was logged by SPICE and again among the
    notes), no line twice, no warning, and no library progress bar in a log that is not a terminal."""
    from vlx.metrics.spice import spice_missing

    run = tmp_path / "run"
    run.mkdir()
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _esnli_rows()))
    res = run_vlx(
        "stage=eval", f"stage.run={run}", "task=esnli", "eval.resamples=20", f"hydra.run.dir={tmp_path / 'e'}"
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    log = (tmp_path / "e" / "vlx.log").read_text()
    expected = 1 if spice_missing() else 0
    assert res.stdout.count("spice skipped") == expected and log.count("spice skipped") == expected
    lines = [re.sub(r"^\[[^]]*\]", "", line) for line in (res.stdout + res.stderr).splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), [line for line in lines if lines.count(line) > 1]
    assert "Warning" not in res.stderr and "WARNING" not in res.stdout, res.stderr[-2000:]
    assert "Loading weights" not in res.stderr and "%|" not in res.stderr, res.stderr[-2000:]
