"""Reading the text files users give vlx (CSV, JSON lines) with errors that name the file and line."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlx.errors import DataError


def read_text(path: Path) -> str:
    """The file as UTF-8 text (a byte-order mark dropped, as spreadsheets write one).

    Raises:
        DataError: bytes that are not UTF-8, named by line and column, with what to do.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            f"{path}:{line}: byte 0x{data[err.start]:02x} at column {column} is not UTF-8 text; save the file as "
            f"UTF-8 (e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed.{path.suffix.lstrip('.')}`)"
        ) from None


def read_json(path: Path) -> Any:
    """A whole JSON file.

    Raises:
        DataError: the file is missing, not UTF-8, or not valid JSON (named by line and column).
    """
    if not path.is_file():
        raise DataError(f"{path} not found")
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON at column {err.colno} ({err.msg})") from err


def read_objects(path: Path, what: str = "a JSON object") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields ("file:line", object) for each non-blank line.

    Args:
        path: the jsonl file (it must exist).
        what: how the error message describes a valid line.

    Raises:
        DataError: the file is not UTF-8, or a line is not valid JSON, or not a JSON object.
    """
    # "\n" only: str.splitlines would also split at characters such as U+2028, which JSON strings may hold
    for line_no, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not valid JSON ({err.msg}); fix or remove the line") from err
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected {what}")
        yield where, item


def read_csv_rows(path: Path, columns: tuple[str, ...], header_hint: str = "") -> Iterator[tuple[int, dict[str, str]]]:
    """Yields (line number, row) for each row of a CSV file with a header, each row's fields as strings.

    Args:
        path: the CSV file (it must exist).
        columns: the columns the header must have (others may be there too).
        header_hint: a sentence on what the header should be, added to the missing-column message.

    Raises:
        DataError: the file is not UTF-8, is empty, lacks a column, or a row has more or fewer fields than the header
            (a comma inside a field that is not quoted, or a line cut short).
    """
    with io.StringIO(read_text(path), newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path} is empty: a CSV file needs a header row with {', '.join(columns)}")
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {header}. {header_hint}".rstrip())
        for fields in reader:
            where = f"{path}:{reader.line_num}"
            if not fields:
                continue  # a blank line
            if len(fields) > len(header):
                raise DataError(
                    f"{where}: the row has {len(fields)} fields, more than the header's {len(header)}; "
                    f"quote a field that holds a ',' (\"a, b\"), or fix the row"
                )
            if len(fields) < len(header):
                raise DataError(
                    f"{where}: the row has {len(fields)} fields, fewer than the header's {len(header)}; "
                    "add the missing fields (an empty field still takes its comma), or fix the row"
                )
            yield reader.line_num, dict(zip(header, fields, strict=True))
