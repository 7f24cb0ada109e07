"""Human ratings of explanations on e-ViL's scale: the ratings file and the sample to rate (the scores computed from
them: `vlx.metrics.human`).

`<run>/ratings.jsonl` holds one row per rating given (`id`, `rater`, `verdict`, `score`, `time`), appended and
fsynced as each is given (`stage=review`), so a killed server or a closed tab loses nothing. A rater may change a
rating: the last row of a (rater, id) pair counts.

"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlx.errors import DataError
from vlx.run.records import VERDICT_SCORES, VERDICTS, Prediction

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock (one server per run file there)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# the longest rater name kept (a name, not a document)
MAX_RATER = 200


class RatingStore:
    """<run>/ratings.jsonl: append-only, one fsynced line per rating, written under an exclusive lock of the file
    (servers sharing a run take turns), and cut off again whole where the write fails (a full disk).

    Args:
        path: the file (created on the first rating).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def add(self, item_id: str, rater: str, verdict: str) -> dict[str, Any]:
        """Appends one rating and returns its row; a verdict outside e-ViL's four is a DataError."""
        if verdict not in VERDICT_SCORES:
            raise DataError(f"rating {verdict!r} for item {item_id}: use one of {', '.join(VERDICTS)}")
        rater = " ".join(str(rater).split())
        if not rater:
            raise DataError("a rating needs a rater name")
        if len(rater) > MAX_RATER:
            raise DataError(f"a rater name is at most {MAX_RATER} characters (this one has {len(rater)})")
        row = {
            "id": str(item_id),
            "rater": rater,
            "verdict": verdict,
            "score": VERDICT_SCORES[verdict],
            "time": round(time.time(), 3),
        }
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:  # one writer at a time, across servers: a failed write can be undone whole
                fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.lseek(fd, size - 1, os.SEEK_SET) >= 0 and os.read(fd, 1) != b"\n":
                line = b"\n" + line  # a write cut short (a kill -9 mid-line): the rating starts a line of its own
            try:
                written = os.write(fd, line)  # one write: concurrent raters' lines never interleave
                while written < len(line):  # a short write (the disk filling up): the rest follows, or fails
                    line = line[written:]
                    written = os.write(fd, line)
                os.fsync(fd)  # the rating is on disk before the page hears it was saved
            except OSError:
                _undo(fd, size)
                raise
        finally:
            os.close(fd)  # releases the lock
        return row

    def rows(self) -> list[dict[str, Any]]:
        """Every rating row, in the order given. A line cut short by a killed write or a full disk (the file's last
        line, or a JSON line that stops part-way, after which later ratings were appended on a line of their own) is
        left out with a warning naming it; any other bad line is a DataError naming its line."""
        if not self.path.is_file():
            return []
        lines = self.path.read_bytes().split(b"\n")
        last = max((k for k, line in enumerate(lines) if line.strip()), default=-1) + 1
        rows = []
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
                row = json.loads(text)
            except UnicodeDecodeError as err:
                if number == last or err.reason == "unexpected end of data":
                    self._set_aside(number)
                    continue
                raise DataError(
                    f"{self.path}:{number}: not UTF-8 text (byte {err.start + 1}); fix or delete that line"
                ) from err
            except (json.JSONDecodeError, RecursionError) as err:
                if number == last or (isinstance(err, json.JSONDecodeError) and _cut_short(text, err)):
                    self._set_aside(number)
                    continue
                msg = err.msg if isinstance(err, json.JSONDecodeError) else "nested too deep"
                raise DataError(f"{self.path}:{number}: not a JSON line ({msg}); fix or delete that line") from err
            if (
                not isinstance(row, dict)
                or row.get("verdict") not in VERDICT_SCORES
                or not row.get("id")
                or not row.get("rater")
            ):
                raise DataError(f"{self.path}:{number}: a rating needs id, rater and one of {', '.join(VERDICTS)}")
            rows.append(row)
        return rows

    def _set_aside(self, number: int) -> None:
        warned = self.__dict__.setdefault("_warned", set())
        if number not in warned:  # once per line, not on every page request
            warned.add(number)
            log.warning(
                "%s:%d: a rating cut short by an interrupted write (a kill or a full disk); left out, the "
                "other ratings count",
                self.path,
                number,
            )

    def latest(self) -> dict[tuple[str, str], str]:
        """(rater, id) -> the verdict that counts (the last one given)."""
        return {(r["rater"], str(r["id"])): r["verdict"] for r in self.rows()}


def _undo(fd: int, size: int) -> None:
    """Cuts a failed rating's part-written bytes off again (the page says it was not kept, so no part of it stays:
    a cut exactly before its newline would otherwise count once the next rating ends the line). Shrinking a file
    needs no room on a full disk; should it fail all the same, the reader leaves the cut line out with a warning."""
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_size > size:
            os.ftruncate(fd, size)
            os.fsync(fd)


def _cut_short(text: str, err: json.JSONDecodeError) -> bool:
    """Whether a line is the start of a JSON object that stops part-way (what a cut write leaves), not a line that
    is wrong in the middle."""
    body = text.rstrip()
    return (
        body.startswith("{")
        and (err.msg.startswith("Unterminated string") or err.pos >= len(body))
        or not body.strip("\x00")
    )


def draw_sample(rows: Sequence[Prediction], size: int, seed: int = 0, balanced: bool = True) -> list[str]:
    """The ids of a seeded sample of `size` items; balanced: as equal a share of each gold label as the data allow
    (e-ViL rated a sample of each model's answers). Returned in the run's order."""
    ids = [r.id for r in rows]
    if size >= len(ids):
        return ids
    rng = np.random.default_rng(seed)
    if not balanced:
        drawn = set(rng.choice(len(ids), size=size, replace=False).tolist())
        return [i for k, i in enumerate(ids) if k in drawn]
    by_label: dict[str, list[int]] = defaultdict(list)
    for k, r in enumerate(rows):
        by_label[str(r.gold)].append(k)
    pools = {label: list(rng.permutation(ks)) for label, ks in sorted(by_label.items())}
    chosen: set[int] = set()
    while len(chosen) < size:  # one from each label in turn: labels with fewer items run out first
        for label in sorted(pools):
            if pools[label] and len(chosen) < size:
                chosen.add(int(pools[label].pop()))
    return [i for k, i in enumerate(ids) if k in chosen]
