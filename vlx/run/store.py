"""How a run's files are written and read: JSON lines appended batch by batch and flushed (predictions, verdicts),
so nothing finished is lost, and JSON files written whole or not at all (summaries, metrics).

A run restarted into the same directory reads the finished ids back and continues with the rest. Which file is which
is `vlx.run.directory.RunDir`'s business; this module knows only how.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from vlx.errors import ConfigError, DataError, writing

log = logging.getLogger(__name__)


class Record(Protocol):
    """A row written as JSON: `vlx.run.records.Prediction`, `Verdict`."""

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-lines row."""


def plain(row: Record | Mapping[str, Any]) -> Mapping[str, Any]:
    """A row as JSON data: a record's `to_json()`, a mapping as it is."""
    return row if isinstance(row, Mapping) else row.to_json()


class JsonlStore:
    """Append-only JSONL of rows keyed by `id` (predictions, verdicts, per-item statistics).

    Args:
        path: the .jsonl file (created on first append).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def rows(self, repair: bool = False) -> list[dict[str, Any]]:
        """Every finished row, in the order written (see `numbered_rows`)."""
        return [row for _, row in self.numbered_rows(repair)]

    def numbered_rows(self, repair: bool = False) -> list[tuple[str, dict[str, Any]]]:
        """Every finished row, in the order written, with its "file:line" (for a message about the row).

        Args:
            repair: for a run that continues writing: a last line cut short by a killed process is an unfinished
                write; drop it (with a warning) and truncate the file to the last whole line. Without it, that
                line is an error like any other bad line.

        Raises:
            DataError: a line is not a JSON object with an id (named by file and line number).
        """
        if not self.path.is_file():
            return []
        rows: list[tuple[str, dict[str, Any]]] = []
        with self.path.open("rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:  # a write cut short may end mid-character
                if repair and line_no == len(lines):  # no newline after it: the write was interrupted
                    log.warning(
                        "%s: dropping the unfinished last line %d (the run was interrupted)", self.path, line_no
                    )
                    with writing(self.path), self.path.open("r+b") as f:
                        f.truncate(len(data) - len(line))
                    break
                what = "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else f"not valid JSON ({err.msg})"
                raise DataError(f"{self.path}:{line_no}: {what}; fix or delete that line") from err
            if not isinstance(row, dict) or "id" not in row:
                raise DataError(f"{self.path}:{line_no}: each line must be a JSON object with an 'id'")
            rows.append((f"{self.path}:{line_no}", row))
        else:
            if repair and data and not data.endswith(b"\n"):  # a whole row whose newline was not written yet
                with writing(self.path), self.path.open("ab") as f:
                    f.write(b"\n")
        return rows

    def done_ids(self) -> set[str]:
        """Ids already written, after repairing an interrupted last write (see `rows`)."""
        return {str(row["id"]) for row in self.rows(repair=True)}

    def append(self, rows: Iterable[Record | Mapping[str, Any]]) -> None:
        """Writes rows and forces them to disk before returning (an OSError names the file: see `writing`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with writing(self.path), self.path.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(plain(row), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rewrite(self, rows: Sequence[Record | Mapping[str, Any]]) -> None:
        """Replaces the file with `rows` (e.g. sorted back into dataset order) atomically: a temporary file is
        written and synced, then renamed over the old one, so a crash leaves one complete version or the other. A
        write that fails (a full disk) leaves the old file and no temporary one, and names the file."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with writing(self.path), removed_on_error(tmp):
            with tmp.open("w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(plain(row), ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)


@contextlib.contextmanager
def removed_on_error(tmp: Path) -> Iterator[None]:
    """Deletes the temporary file `tmp` when the block fails (a full disk leaves no half-written copy behind)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def unique_rows(rows: Sequence[Any], path: Path) -> list[Any]:
    """`rows` with each id once. Copies of one row (e.g. from a merge cut short) count once, with a warning; two
    different rows for one id (two runs wrote into one directory) cannot be scored.

    Raises:
        DataError: an id has rows that differ (the ids and their line numbers are named).
    """
    first: dict[str, tuple[int, Any]] = {}
    copies = 0
    clashes: list[str] = []
    for line, row in enumerate(rows, start=1):  # the n-th row, as the file's n-th non-blank line
        key = str(row["id"] if isinstance(row, Mapping) else row.id)
        if key not in first:
            first[key] = (line, row)
        elif row == first[key][1]:
            copies += 1
        else:
            clashes.append(f"{key} (rows {first[key][0]} and {line})")
    if clashes:
        shown = ", ".join(clashes[:5]) + (f" and {len(clashes) - 5} more" if len(clashes) > 5 else "")
        raise DataError(
            f"{path} holds different predictions for the same id: {shown}. Two runs may have written into one "
            f"directory; keep one row per id (or rerun into a new directory) before scoring"
        )
    if copies:
        log.warning("%s: %d repeated rows (the same prediction twice) are counted once", path, copies)
    return [row for _, row in first.values()]


# what makes a prediction row's item the item it is: two rows with one id are the same item only where these agree
ITEM_FIELDS = ("image", "text", "gold")


def item_differences(pairs: Iterable[tuple[str, Any, Any]]) -> list[tuple[str, list[str]]]:
    """For each (id, prediction, other prediction): the item fields (`ITEM_FIELDS`) in which the two differ, where
    any do."""
    found = []
    for key, row, other in pairs:
        fields = [name for name in ITEM_FIELDS if getattr(row, name) != getattr(other, name)]
        if fields:
            found.append((key, fields))
    return found


def describe_differences(found: Sequence[tuple[str, list[str]]], shown: int = 5) -> str:
    """`found` (from `item_differences`) for one line: the count, then the first few ids with the fields that
    differ, e.g. "3 items (12: gold; 13: image, gold; 14: text)"."""
    listed = "; ".join(f"{key}: {', '.join(fields)}" for key, fields in found[:shown])
    more = f"; and {len(found) - shown} more" if len(found) > shown else ""
    return f"{len(found)} item{'s' if len(found) != 1 else ''} ({listed}{more})"


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Writes rows as CSV with exactly `columns` (the seed's predictions.csv formats)."""
    with writing(path), Path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def check_writable(path: Path) -> None:
    """Refuses, before anything is computed, an existing file that this run would append to but cannot."""
    if not path.exists():
        return
    try:
        with path.open("ab"):
            pass
    except OSError as err:
        raise ConfigError(
            f"cannot write {path} ({err.strerror}): make it writable (chmod u+w) or write into another directory"
        ) from err


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Writes `path` whole or not at all (a kill mid-write leaves the old file): summaries that later runs read. A
    write that fails (a full disk) leaves no temporary file, and its OSError names `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")  # several ranks of a launched run may write the same file
    with writing(path), removed_on_error(tmp):
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, path)


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON file a stage depends on, with a clear error when it is missing or broken."""
    if not path.is_file():
        raise ConfigError(f"{path} not found: {what}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid JSON ({err}); delete it and rerun the stage that writes it") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: holds a JSON {type(data).__name__}, not an object; rerun the stage that writes it")
    return data
