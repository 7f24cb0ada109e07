"""Facebook Hateful Memes, read from the challenge's jsonl files.

`<data_dir>/{split}.jsonl` holds one object per line: `id`, `img` (like `img/01234.png`, relative to data_dir),
`label` (0 = not offensive, 1 = offensive; absent in unlabelled test files) and `text` (the meme's caption).
The item id comes from `img` ("01234"), since some copies store `id` as an integer without its leading zeros.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlx.errors import ConfigError, DataError
from vlx.tasks._base import Task
from vlx.tasks.items import Example
from vlx.text_files import read_objects

MEME_SPLITS = ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen")


class HatefulMemesTask(Task):
    """Hateful Memes from its official jsonl files.

    Args:
        data_dir: folder holding `{split}.jsonl` and `img/`.
        name: task name.
        split: train, dev_seen, dev_unseen, test_seen or test_unseen (any `<split>.jsonl` in data_dir is accepted).
        **common: labels (label 0, then label 1), positive, prompt, answer, aliases, shot_strategy, limit,
            on_bad_image, references (see `Task`; conf/task/meme.yaml sets them).
    """

    def __init__(
        self,
        data_dir: str | Path,
        name: str = "meme",
        split: str = "dev_seen",
        **common: Any,
    ):
        super().__init__(name=name, split=split, **common)
        if len(self.labels) != 2:
            raise ConfigError(f"task.labels={list(self.labels)}: Hateful Memes has two (label 0, then label 1)")
        self.data_dir = Path(data_dir)

    @property
    def jsonl_path(self) -> Path:
        """The split's Hateful Memes JSON-lines file."""
        return self.data_dir / f"{self.split}.jsonl"

    def files(self) -> list[Path]:
        """The split's data files (its JSON-lines file)."""
        return [self.jsonl_path]

    def read_examples(self) -> list[Example]:
        """The split's items, read from its JSON-lines file."""
        return read_memes_jsonl(self.jsonl_path, self.data_dir, self.labels, self.limit)


def meme_id(img: str) -> str:
    """The item id from the `img` field: `img/01234.png` -> `01234`."""
    return Path(img).stem


def read_memes_jsonl(path: Path, data_dir: Path, labels: tuple[str, ...], limit: int | None = None) -> list[Example]:
    """Reads a Hateful Memes jsonl into Examples (first `limit` lines; label 0 is `labels[0]`, 1 `labels[1]`), with
    errors naming the file and line.

    Raises:
        DataError: the file is missing, a line is not JSON, lacks `img`/`text`, or has a label other than 0/1.
    """
    if not path.is_file():
        hint = f"folder {data_dir} does not exist" if not data_dir.is_dir() else f"{data_dir} has no {path.name}"
        splits = ", ".join(MEME_SPLITS)
        raise DataError(f"Hateful Memes file {path} not found ({hint}). Set task.data_dir and task.split ({splits}).")
    examples: list[Example] = []
    for where, item in read_objects(path, "a JSON object with img, text and label"):
        for key in ("img", "text"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise DataError(f"{where}: missing or empty {key!r}; each line needs img, text (and label)")
        label = item.get("label")
        if label is not None and (isinstance(label, bool) or label not in (0, 1)):
            raise DataError(f"{where}: label {label!r} is not 0 or 1; fix the line")
        examples.append(
            Example(
                id=meme_id(item["img"]),
                image=data_dir / item["img"],
                text=item["text"].strip(),
                label=None if label is None else labels[label],
                source=where,
            )
        )
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise DataError(f"{path} has no items; the {path.stem} split is empty")
    return examples
