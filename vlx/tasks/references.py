"""Reference explanations from a separate jsonl file (Hateful Memes ships none of its own).

Two formats, one object per line:
- HatReD (Hee et al., 2023), as published: `{"id": 1456, "img": "01456.png", "target": [...], "reasonings": [...]}`;
- plain: `{"id": "01456", "explanations": ["...", ...]}`.
Ids are matched without leading zeros, since copies of Hateful Memes disagree on them (`1456` vs `"01456"`).

A file that matches none of the items scored with it is refused (`check_matches`): it belongs to another task or
split, and the explanation metrics would be left out without a word. One that matches some is the usual case (HatReD
explains only the hateful memes): the others are left out of the explanation metrics, with a warning and the counts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from vlx.errors import DataError
from vlx.text_files import read_objects

log = logging.getLogger(__name__)


def id_key(item_id: str | int) -> str:
    """The matching key of an id: digit-only ids lose their leading zeros (01456 -> 1456)."""
    text = str(item_id).strip()
    if text.isdigit():
        return text.lstrip("0") or "0"
    return text


def read_references(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Reads a references jsonl into {id_key: explanations}.

    Raises:
        DataError: the file is missing, a line is not JSON, or lacks an id or its explanations.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"references file {path} not found; set task.references to a HatReD or explanations jsonl")
    refs: dict[str, tuple[str, ...]] = {}
    for where, item in read_objects(path):
        # HatReD names the image; its integer id has lost the leading zeros that `img` keeps
        key = Path(item["img"]).stem if isinstance(item.get("img"), str) else item.get("id")
        if key is None:
            raise DataError(f"{where}: no 'id' or 'img'; each line needs one")
        texts = item.get("reasonings", item.get("explanations"))
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise DataError(f"{where}: expected 'reasonings' (HatReD) or 'explanations' as a list of strings")
        cleaned = tuple(t.strip() for t in texts if t.strip())
        if cleaned:
            refs[id_key(key)] = refs.get(id_key(key), ()) + cleaned
    return refs


def _first(ids: Sequence[str], shown: int = 3) -> str:
    return ", ".join(ids[:shown]) + (", ..." if len(ids) > shown else "")


def check_matches(
    item_ids: Sequence[str | int], refs: dict[str, tuple[str, ...]], source: str | Path, items: str, refuse: bool = True
) -> int:
    """How many of the items have references in the file; none is refused, some is a warning with the counts.

    Args:
        item_ids: the ids of the items scored with the file.
        refs: `read_references(source)`.
        source: the file, for the message.
        items: what the items are, for the message ("the 20 items of run outputs/x").
        refuse: False where the file may serve other items (an infer run's few-shot pool is another split read
            with the same file): none matched is then a warning.

    Raises:
        DataError: no item has a reference in the file (the first few ids of each side are named).
    """
    matched = sum(id_key(i) in refs for i in item_ids)
    if not matched and item_ids:
        theirs = (
            f"its {len(refs)} id{'s' if len(refs) != 1 else ''} ({_first(sorted(refs))})"
            if refs
            else "it holds no explanations"
        )
        found = f"task.references={str(source)!r} matches none of {items} (ids {_first([str(i) for i in item_ids])}); "
        if refuse:
            raise DataError(
                f"{found}{theirs}. Give the references of this task and split (ids match without leading "
                f"zeros), or leave task.references out"
            )
        log.warning(
            "%s%s: their explanations cannot be scored (give this split's references, or score the run "
            "later with stage=eval task.references=<its file>)",
            found,
            theirs,
        )
        return 0
    if not refuse:
        return matched
    if matched < len(item_ids):
        log.warning(
            "task.references=%s has explanations for %d of %s; the other %d are left out of the explanation metrics",
            source,
            matched,
            items,
            len(item_ids) - matched,
        )
    return matched
