"""Reading JSON-lines files with errors that name the file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlx.errors import DataError


def read_objects(path: Path, what: str = "a JSON object") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields ("file:line", object) for each non-blank line.

    Args:
        path: the jsonl file (it must exist).
        what: how the error message describes a valid line.

    Raises:
        DataError: a line is not valid JSON, or not a JSON object.
    """
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
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
