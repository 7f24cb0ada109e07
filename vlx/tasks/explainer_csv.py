"""The seed's explainer training CSV: `image_path,hypothesis,exp` (as written by `vlx stage=select_correct`).

Items have no gold label (the seed's explainer learns explanations only); their id is the row number.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlx.errors import DataError
from vlx.tasks._base import Task
from vlx.tasks.items import Example
from vlx.text_files import read_csv_rows

EXPLAINER_COLUMNS = ("image_path", "hypothesis", "exp")


class ExplainerCsvTask(Task):
    """Rows of an explainer CSV as Examples (label None, one reference explanation each).

    Args:
        path: the CSV file.
        image_dir: folder that relative image paths are read from (None = relative to the CSV's folder).
        **common: labels, prompt, answer, limit, on_bad_image, references (see `Task`; conf/task/explainer_csv.yaml).
    """

    def __init__(
        self,
        path: str | Path,
        image_dir: str | Path | None = None,
        name: str = "explainer_csv",
        split: str = "train",
        **common: Any,
    ):
        super().__init__(name=name, split=split, **common)
        self.path = Path(path)
        self.image_dir = Path(image_dir) if image_dir is not None else self.path.parent

    def files(self) -> list[Path]:
        """The task's data files (its CSV)."""
        return [self.path]

    def read_examples(self) -> list[Example]:
        """The items of the CSV."""
        if not self.path.is_file():
            raise DataError(f"explainer CSV {self.path} not found; set task.path (columns image_path,hypothesis,exp)")
        examples = []
        for line, row in read_csv_rows(self.path, EXPLAINER_COLUMNS):
            where = f"{self.path}:{line}"
            if not row["image_path"].strip() or not row["exp"].strip():
                raise DataError(f"{where}: empty image_path or exp; fix or remove the row")
            examples.append(
                Example(
                    id=row.get("id") or str(line - 1),  # the row number
                    image=self.image_dir / row["image_path"].strip(),
                    text=row["hypothesis"].strip(),
                    label=None,
                    explanations=(row["exp"].strip(),),
                    source=where,
                )
            )
        if not examples:
            raise DataError(f"{self.path} has no rows")
        return examples
