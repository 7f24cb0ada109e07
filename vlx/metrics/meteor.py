"""METEOR 1.5 as pycocoevalcap runs it, with per-item statistics kept so any subset or resample is one line.

A corpus METEOR is computed from the sum of the items' statistics (METEOR's `MeteorStats.addStats`): every field
is summed, except that an item matched perfectly (all words of both sides matched, in one chunk) adds no chunk.
`summed_lines` does that sum in numpy for many weightings at once (bootstrap resamples, subsets), and one EVAL
line per weighting then gives exactly the corpus METEOR that `Meteor().compute_score` returns on those items,
repeats included: 1000 resamples of 14,740 items are one EVAL call instead of 1000.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from vlx.metrics.coco import java

logger = logging.getLogger(__name__)

# keep_alive's state: whether a closed Meteor's JVM is kept, and the one kept (its process and stderr file)
_keep = False
_idle: tuple[subprocess.Popen, IO[bytes]] | None = None
_idle_lock = threading.Lock()


def keep_alive(enabled: bool = True) -> None:
    """Keeps one METEOR JVM of this process alive between uses: the next `Meteor()` takes it instead of starting one.

    A start (the JVM and METEOR's paraphrase table) takes seconds, more on a busy machine: more than scoring a few
    thousand items (docs/PERFORMANCE.md, "The test suite and CI"). A process that scores many small sets (the test
    suite) pays it on each otherwise.
    Off by default, since an idle METEOR JVM holds about 1 GB; turning it off, or the process ending, ends the kept
    one. METEOR answers each SCORE and EVAL line on its own, so a kept JVM gives the numbers a fresh one gives.
    """
    global _keep
    _keep = enabled
    if not enabled:
        _end_idle()


def _take_idle() -> tuple[subprocess.Popen, IO[bytes]] | None:
    global _idle
    with _idle_lock:
        kept, _idle = _idle, None
    if kept is not None and kept[0].poll() is not None:  # it died meanwhile
        kept[1].close()
        return None
    return kept


def _end_idle() -> None:
    kept = _take_idle()
    if kept is not None:
        kept[0].kill()
        kept[0].wait()
        kept[1].close()


atexit.register(_end_idle)


class Meteor:
    """One METEOR 1.5 process with pycocoevalcap's command line and protocol (a new one, or the one `keep_alive`
    kept).

    The SCORE lines (one per item, the hypothesis scrubbed as `Meteor._stat` does) are streamed by a writer thread
    while the answers are read, instead of one round trip per item; the answers are the same lines. Per-item
    statistics are kept, so the corpus score of any subset is one EVAL line: exactly what `Meteor().compute_score`
    returns on that subset. Measured on 14,740 items: JVM start and paraphrase table ~6 s, statistics ~5 s, EVAL
    of all items ~2 s. stderr goes to a file (pycocoevalcap pipes it and never reads it, which can block the JVM)
    and a watchdog kills a stuck JVM, so a call cannot hang.
    """

    def __init__(self, timeout_s: float) -> None:
        kept = _take_idle() if _keep else None
        if kept is not None:
            self._proc, self._stderr = kept
        else:
            from pycocoevalcap.meteor import meteor

            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process; closed in close()
            cmd = [java(), "-jar", "-Xmx2G", meteor.METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"]
            self._proc = subprocess.Popen(
                cmd,
                cwd=Path(meteor.__file__).parent,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
            )
        # the pipes asked for above (Popen's are optional: it makes them only when asked)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin, self._stdout = self._proc.stdin, self._proc.stdout
        self._timed_out = False
        self._pending = False  # lines sent whose answers are not all read: the JVM cannot serve another use
        self._watchdog = threading.Timer(timeout_s, self._kill)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _kill(self) -> None:
        self._timed_out = True
        self._proc.kill()

    def _readline(self) -> str:
        line = self._stdout.readline().decode().strip()
        if not line:
            self._stderr.seek(0)
            why = "timed out" if self._timed_out else "ended"
            raise RuntimeError(f"METEOR {why} unexpectedly: {self._stderr.read().decode()[-2000:]}")
        return line

    def _send(self, text: str) -> None:
        self._stdin.write(text.encode())
        self._stdin.flush()

    def stats(self, hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> list[str]:
        """METEOR's sufficient statistics per item (the answers to SCORE lines)."""
        lines = []
        for hyp, group in zip(hyps, refs, strict=True):
            # the hypothesis scrubbed exactly as Meteor._stat does; references too, in case (PTB output has no "|||")
            hyp = hyp.replace("|||", "").replace("  ", " ")
            lines.append(" ||| ".join(("SCORE", " ||| ".join(r.replace("|||", "") for r in group), hyp)) + "\n")
        errors: list[BaseException] = []

        def write() -> None:
            try:
                self._send("".join(lines))
            except OSError as err:  # the JVM died; the reader reports it
                errors.append(err)

        self._pending = True
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        out = [self._readline() for _ in lines]
        writer.join()
        self._pending = bool(errors)
        return out

    def evaluate(self, stats: Sequence[str]) -> tuple[float, list[float]]:
        """Corpus METEOR and per-item scores for items given by their statistics (non-empty)."""
        self._pending = True
        self._send("EVAL" + "".join(f" ||| {s}" for s in stats) + "\n")
        try:
            scores = [float(self._readline()) for _ in stats]
            corpus = float(self._readline())
        except ValueError as err:
            raise RuntimeError(f"METEOR gave an unexpected answer: {err}") from err
        self._pending = False
        return corpus, scores

    def close(self) -> None:
        """Ends the METEOR process, or keeps it for the next `Meteor()` (`keep_alive`)."""
        global _idle
        self._watchdog.cancel()
        if _keep and not (self._pending or self._timed_out) and self._proc.poll() is None:
            with _idle_lock:
                if _idle is None:  # kept for the next Meteor() (keep_alive)
                    _idle = (self._proc, self._stderr)
                    return
        with contextlib.suppress(OSError):  # already closed by a dead JVM
            self._stdin.close()
        self._proc.kill()
        self._proc.wait()
        self._stderr.close()


def stats_matrix(stats: Sequence[str]) -> np.ndarray:
    """METEOR's per-item statistics lines as a float array (n, fields), with the chunk count of a perfect match
    zeroed, as METEOR's aggregation drops it.

    A line is: test length, reference length, test and reference function words, then per matching stage (exact,
    stem, synonym, paraphrase) test content, reference content, test function and reference function matches,
    then chunks, test word matches and reference word matches.
    """
    rows = np.asarray([line.split() for line in stats], dtype=float).reshape(len(stats), -1)
    if not len(rows):
        return rows
    stages = (rows.shape[1] - 7) // 4
    matches = rows[:, 4 : 4 + 4 * stages]
    test_total = matches[:, 0::4].sum(axis=1) + matches[:, 2::4].sum(axis=1)
    ref_total = matches[:, 1::4].sum(axis=1) + matches[:, 3::4].sum(axis=1)
    perfect = (test_total == rows[:, 0]) & (ref_total == rows[:, 1]) & (rows[:, -3] == 1)
    rows[perfect, -3] = 0.0
    return rows


def summed_lines(matrix: np.ndarray, counts: np.ndarray) -> list[str]:
    """One statistics line per weighting (rows of counts, shape (R, n)): the items' statistics summed."""
    return [" ".join(repr(float(v)) for v in row) for row in np.atleast_2d(counts) @ matrix]


def corpus_scores(meteor: Meteor, matrix: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Corpus METEOR of each weighting in one EVAL call; NaN for a weighting that draws no item."""
    counts = np.atleast_2d(counts)
    out = np.full(len(counts), np.nan)
    drawn = np.flatnonzero(counts.sum(axis=1) > 0)
    if len(drawn):
        _, scores = meteor.evaluate(summed_lines(matrix, counts[drawn]))
        out[drawn] = scores
    return out
