"""e-SNLI-VE: visual entailment with human explanations, read from the e-ViL CSV files.

The files are `esnlive_{train,dev,test}.csv` with the header `,pairID,Flickr30kID,hypothesis,gold_label,explanation`;
images are `<image_dir>/<Flickr30kID>` (Flickr30k). Read with the csv module rather than `datasets` so that every
error names the file and row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlx.errors import DataError
from vlx.tasks._base import Task
from vlx.tasks.items import Example
from vlx.text_files import read_csv_rows

ESNLI_SPLITS = ("train", "dev", "test")
ESNLI_COLUMNS = ("pairID", "Flickr30kID", "hypothesis", "gold_label", "explanation")


class EsnliVeTask(Task):
    """e-SNLI-VE from its official CSVs.

    Args:
        csv_dir: folder holding `esnlive_{split}.csv`.
        image_dir: folder holding the Flickr30k images.
        name: task name (used in run names and by the parser).
        split: train, dev or test.
        **common: labels, prompt, answer, aliases, shot_strategy, limit, on_bad_image, references (see `Task`;
            conf/task/esnli.yaml sets them).
    """

    csv_columns = ("img_path", "hypothesis", "explanation")

    def __init__(
        self,
        csv_dir: str | Path,
        image_dir: str | Path,
        name: str = "esnli",
        split: str = "test",
        **common: Any,
    ):
        super().__init__(name=name, split=split, **common)
        self.csv_dir = Path(csv_dir)
        self.image_dir = Path(image_dir)

    @property
    def csv_path(self) -> Path:
        """The split's e-SNLI-VE CSV file."""
        return self.csv_dir / f"esnlive_{self.split}.csv"

    def files(self) -> list[Path]:
        """The split's data files (its CSV)."""
        return [self.csv_path]

    def read_examples(self) -> list[Example]:
        """The split's items, read from its CSV."""
        return read_esnli_csv(self.csv_path, self.image_dir, self.labels, self.limit)


def read_esnli_csv(path: Path, image_dir: Path, labels: tuple[str, ...], limit: int | None = None) -> list[Example]:
    """Reads an e-ViL CSV into Examples (first `limit` rows), with errors that name the file and row.

    Raises:
        DataError: the file or folder is missing, a column is missing, a row has an empty field or a label outside
            `labels`.
    """
    if not path.is_file():
        hint = (
            f"folder {path.parent} does not exist" if not path.parent.is_dir() else f"{path.parent} has no {path.name}"
        )
        raise DataError(f"e-SNLI-VE file {path} not found ({hint}). Set task.csv_dir to the folder of esnlive_*.csv.")
    if not image_dir.is_dir():
        raise DataError(f"image folder {image_dir} does not exist. Set task.image_dir to the Flickr30k images folder.")
    examples: list[Example] = []
    hint = "An e-SNLI-VE CSV has the header ,pairID,Flickr30kID,hypothesis,gold_label,explanation"
    for line, row in read_csv_rows(path, ESNLI_COLUMNS, hint):
        where = f"{path}:{line}"
        for key in ("pairID", "Flickr30kID", "hypothesis", "gold_label"):
            if not row[key].strip():
                raise DataError(f"{where}: empty {key}; fix or remove the row")
        label = row["gold_label"].strip()
        if label not in labels:
            raise DataError(f"{where}: gold_label {label!r} is not one of {', '.join(labels)}; fix or remove the row")
        explanation = row["explanation"].strip()
        examples.append(
            Example(
                id=row["pairID"].strip(),
                image=image_dir / row["Flickr30kID"].strip(),
                text=row["hypothesis"].strip(),
                label=label,
                explanations=(explanation,) if explanation else (),
                source=where,
            )
        )
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise DataError(f"{path} has no rows; the {path.stem} split is empty")
    return examples
