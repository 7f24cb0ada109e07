"""Reference explanations from a separate jsonl file (Hateful Memes ships none of its own).

Two formats, one object per line:
- HatReD (Hee et al., 2023), as published: `{"id": 1456, "img": "01456.png", "target": [...], "reasonings": [...]}`;
- plain: `{"id": "01456", "explanations": ["...", ...]}`.
Ids are matched without leading zeros, since copies of Hateful Memes disagree on them (`1456` vs `"01456"`).
"""

from __future__ import annotations

from pathlib import Path

from vlx.errors import DataError
from vlx.text_files import read_objects


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
