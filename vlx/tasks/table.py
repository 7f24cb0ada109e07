"""A task defined by its YAML alone: a table of items read through `datasets`.

The table is a CSV, JSON-lines, JSON or parquet file per split (a folder of `<split>.<ext>` files, or `source` with
`{split}` filled in), a folder written by `datasets`' `save_to_disk`, or a dataset on the Hugging Face hub. Its
columns are named in `columns` (id, image, text, label, reference explanations); the labels, their aliases and the
prompt live in the YAML too, and the prompt may use any column as a placeholder. `datasets` converts a file to Arrow
once (cached, memory-mapped), so a large split starts fast the second time.

    vlx task=table task.source=/data/mine task.image_dir=/data/mine/images task.split=test   # /data/mine/test.csv
"""

from __future__ import annotations

import hashlib
import logging
import os
import string
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from vlx.errors import ConfigError, DataError
from vlx.tasks._base import Task
from vlx.tasks.answers import vqa_gold
from vlx.tasks.items import Example

log = logging.getLogger(__name__)

FORMATS = ("csv", "json", "parquet", "disk", "hub")
_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
COLUMN_ROLES = ("id", "image", "text", "label", "explanations", "choices", "answers")


class TableTask(Task):
    """Items from a table whose columns the config names.

    Args:
        name: the task's name (run names, reports).
        source: a folder of one file per split (`<split>.csv`, `.tsv`, `.jsonl`, `.json` or `.parquet`); a file,
            `{split}` standing for the split's name (e.g. `/data/mine/{split}.csv`); a folder written by
            `save_to_disk`; or a hub dataset id (`org/name`).
        split: the split to read (also what `{split}` becomes, through `split_names`).
        columns: the column of each role: `id` (null: the row number, from 1), `image` (a path relative to
            `image_dir`, or a template of columns such as `{split}2017/{image_id:012d}.jpg`), `text` (the hypothesis,
            question or meme text; null: none), `label` (null: no gold labels), `explanations` (a column or a list
            of columns; a column may hold a list of strings), `choices` (a multiple-choice item's options, a list
            column: the item's labels are the first len(choices) of `labels`, and the prompt's `{choices}` lists
            them) and `answers` (an open question's accepted answers, a list of strings or of {"answer": ...}
            objects as VQA's; the gold label is the most common one after VQA's answer processing, as NLX-GPT's
            `proc_ans` takes it, and `labels` is empty).
        label_values: what a label column's value means, where it is not the label's name (`0: entailment`).
        image_dir: the folder image paths are relative to (None: the source file's folder), or one per split
            (`{train: /coco/train2014, dev: /coco/val2014}`).
        format: csv, json, parquet, disk or hub (None: from `source`: its extension, a folder, or a hub id).
        subset: the hub dataset's config name.
        split_names: vlx's split name -> the data's (e.g. `dev: validation`).
        keyed: the file is one JSON object of items keyed by their id (ScienceQA's problems.json, VQA-X): the
            key becomes this column (None: a file of rows).
        where: keep only rows whose column equals the value (`{split}` in a value is the data's split name), e.g.
            `{split: "{split}"}` for one file that holds every split.
        require: leave out rows where these columns are empty (e.g. ScienceQA's questions without an image); the
            count is logged.
        unlabelled_splits: splits released without answers (A-OKVQA's test): their label and explanation columns
            may be absent.
        choice_format: how `{choices}` writes one option (`{label}`: its letter, `{choice}`: its text).
        choice_separator: what goes between the options in `{choices}`.
        image_cache: where images stored inside the table (a `datasets` Image column, as hub datasets have) are
            written as files, once, named by a hash of the item's id (None: such images are refused).
        **common: labels, prompt (any column as `{column}`; `{text}` is the text column), answer, aliases,
            positive, shot_strategy, limit, on_bad_image, references (see `Task`).
    """

    def __init__(
        self,
        name: str,
        source: str,
        split: str = "test",
        columns: Mapping[str, Any] | None = None,
        label_values: Mapping[Any, str] | None = None,
        image_dir: str | Path | Mapping[str, str] | None = None,
        format: str | None = None,
        subset: str | None = None,
        split_names: Mapping[str, str] | None = None,
        keyed: str | None = None,
        where: Mapping[str, Any] | None = None,
        require: Sequence[str] = (),
        unlabelled_splits: Sequence[str] = (),
        choice_format: str = "{label}. {choice}",
        choice_separator: str = "\n",
        image_cache: str | Path | None = None,
        **common: Any,
    ):
        super().__init__(name=name, split=split, **common)
        self.columns = _check_columns(columns or {})
        self.label_values = {str(k): str(v) for k, v in (label_values or {}).items()}
        unknown = sorted(set(self.label_values.values()) - set(self.labels))
        if unknown:
            raise ConfigError(f"task.label_values maps to {unknown}, which are not in task.labels")
        self.data_split = (split_names or {}).get(split, split)
        self.source = _fill_source(source, self.data_split)
        if format is not None and format not in FORMATS:
            raise ConfigError(f"task.format={format!r}: use one of {', '.join(FORMATS)}, or null to infer it")
        self.format = format
        self.subset = subset
        self.keyed = keyed
        self.where = {str(k): str(v).format(split=self.data_split) for k, v in (where or {}).items()}
        self.require = [str(c) for c in require or ()]
        self.unlabelled_splits = [str(s) for s in unlabelled_splits or ()]
        self.choice_format = choice_format
        self.choice_separator = choice_separator
        if isinstance(image_dir, Mapping):
            if split not in image_dir:
                raise ConfigError(
                    f"task.image_dir names a folder for the splits {', '.join(image_dir)}, not for {split!r}; add one"
                )
            image_dir = image_dir[split]
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self.image_cache = Path(image_cache) if image_cache is not None else None

    def _resolve(self) -> None:
        """The split's file (in a folder of one file per split), its format and the images' folder, as found on
        disk (at read time: a missing file is a data problem of this split)."""
        self.source = _split_source(self.source, self.data_split)
        self.format = self.format or _guess_format(self.source)
        if self.image_dir is None:
            local = Path(self.source).expanduser()
            self.image_dir = local if local.is_dir() else local.parent

    def files(self) -> list[Path]:
        """The split's table file (none for a `disk` folder or a hub dataset; the source as named where it is
        missing)."""
        try:
            self._resolve()
        except DataError:  # no file for the split: prepare reports the missing source itself
            return [Path(self.source)]
        return [Path(self.source)] if self.format in ("csv", "json", "parquet") else []

    def read_examples(self) -> list[Example]:
        """The split's items: the table read, filtered and turned into examples."""
        self._resolve()
        table = self._table()
        if self.split in self.unlabelled_splits:  # its files hold no answers: what it lacks of them is not asked for
            present = {
                role: column if column in table.column_names else None
                for role, column in self.columns.items()
                if role in ("label", "answers")
            }
            explanations = [c for c in self.columns["explanations"] if c in table.column_names]
            self.columns = {**self.columns, **present, "explanations": explanations}
        missing = [c for c in self._needed_columns() if c not in table.column_names]
        if missing:
            roles = [
                role
                for role, col in self.columns.items()
                if col in missing or (isinstance(col, list) and set(col) & set(missing))
            ]
            fix = (
                f"set task.columns.{roles[0]} to the column that holds it"
                if roles
                else "fix the column names in task.columns.image, task.where or task.require"
            )
            raise DataError(
                f"{self.source}: no column {', '.join(repr(c) for c in missing)} (its columns: "
                f"{', '.join(table.column_names)}); {fix}"
            )
        self._check_prompt(table.column_names)
        # an item keeps the columns its prompt names (building every column's text for a million rows is slow)
        self._prompt_columns = sorted(_template_fields(self.prompt) & set(table.column_names))
        self._paths: dict[str, Path] = {}  # one Path per image name: many items share an image
        indices = self._kept_rows(table)
        if self.limit is not None:
            indices = indices[: self.limit]
        if len(indices) < len(table):
            table = table.select(indices)
        if self.columns["image"] in table.column_names:
            table = _undecoded_images(table, self.columns["image"])
        examples = [self._example(i, row) for i, row in zip(indices, _rows(table), strict=True)]
        if not examples:
            raise DataError(
                f"{self.source}: the {self.split} split has no rows"
                + (" that pass task.where and task.require" if self.where or self.require else "")
            )
        return examples

    def _kept_rows(self, table: Any) -> list[int]:
        """The indices of the rows that pass `where` and `require` (all rows without them); what is left out is
        logged with its count."""
        kept: Sequence[int] = range(len(table))
        if not self.where and not self.require:
            return list(kept)
        for column, value in self.where.items():
            values = table[column]
            before, kept = len(kept), [i for i in kept if str(values[i]) == value]
            log.info("%s: %d of %d rows have %s == %r (task.where)", self.source, len(kept), before, column, value)
        for column in self.require:
            values = table[column]
            before, kept = len(kept), [i for i in kept if _present(values[i])]
            log.info(
                "%s: left out %d of %d rows without %s (task.require)", self.source, before - len(kept), before, column
            )
        return list(kept)

    def _table(self) -> Any:
        """The split as a `datasets.Dataset` (Arrow, memory-mapped; files are converted once and cached)."""
        import datasets

        try:
            if self.format == "disk":
                loaded = datasets.load_from_disk(self.source)
                if isinstance(loaded, datasets.DatasetDict):
                    if self.data_split not in loaded:
                        raise DataError(f"{self.source} has no split {self.data_split!r} (it has {', '.join(loaded)})")
                    loaded = loaded[self.data_split]
                return loaded
            if self.format == "hub":
                return self._hub_table()
            if not Path(self.source).is_file():
                raise DataError(
                    f"task {self.name!r}: {self.source} not found; set task.source (a file per split, "
                    f"with {{split}} for the split's name)"
                )
            if self.keyed is not None:
                return _keyed_table(Path(self.source), self.keyed)
            digest, blank = _content_digest(Path(self.source))
            if blank:
                rows = "a header line, then one line per item" if self.format == "csv" else "its items"
                raise DataError(f"{self.source} is empty; write {rows} into it, or set task.source to the split's file")
            if self.format == "csv":
                # before `datasets` reads it: pandas takes a first row with one field too many as an index column
                # and fills a short row with empty cells, so the fault would surface as a wrong label or none
                problem = _file_problem(Path(self.source), self.format)
                if problem:
                    raise DataError(problem)
            # the Arrow cache is keyed by the file's content: `datasets` alone keys it by the modification time, so a
            # file changed with its time kept (cp -p, rsync -t, tar) would be read from the old cache
            cache = Path(datasets.config.HF_DATASETS_CACHE) / "vlx-tables" / digest
            options: dict[str, Any] = {"cache_dir": str(cache)}
            try:
                if self.format == "csv":
                    # every cell as written: no "NA" or "None" turned into a missing value, no id 01456 into 1456
                    delimiter = "\t" if self.source.endswith(".tsv") else ","
                    options |= {
                        "delimiter": delimiter,
                        "keep_default_na": False,
                        "features": _text_columns(Path(self.source), delimiter),
                    }
                return datasets.load_dataset(self.format, data_files={"rows": self.source}, split="rows", **options)
            except Exception as err:  # the file's first fault, by line, where it can be found
                problem = _file_problem(Path(self.source), self.format)
                if problem:
                    raise DataError(problem) from err
                raise
        except (
            FileNotFoundError,
            ValueError,
            datasets.exceptions.DatasetNotFoundError,
            datasets.exceptions.DatasetGenerationError,
        ) as err:
            generation = isinstance(err, datasets.exceptions.DatasetGenerationError)
            cause = err.__cause__ if generation and err.__cause__ else err
            reason = " ".join(str(cause).split())[:300]
            raise DataError(f"task {self.name!r}: {self.source} cannot be read as {self.format} ({reason})") from err

    def _hub_table(self) -> Any:
        """A hub dataset's split; a source that fails to load there is named as the local path it may have meant."""
        import datasets

        try:
            return datasets.load_dataset(self.source, self.subset, split=self.data_split)
        except (DataError, KeyboardInterrupt):
            raise
        except Exception as err:
            reason = " ".join(str(err).split())[:200]
            raise DataError(
                f"task.source={self.source!r}: no such path here ({Path(self.source).expanduser().resolve()} does not "
                f"exist), and as a hub dataset id it could not be loaded ({type(err).__name__}: {reason}); fix the "
                f"path, or, for a hub dataset, check its id and the network (loading one needs it)"
            ) from err

    def _needed_columns(self) -> list[str]:
        needed = [
            self.columns[role] for role in ("id", "text", "label", "choices", "answers") if self.columns.get(role)
        ]
        image = self.columns["image"]
        needed += sorted(_template_fields(image) - {"split"}) if "{" in image else [image]
        return needed + list(self.columns.get("explanations") or []) + list(self.where) + self.require

    def _where(self, index: int) -> str:
        # a CSV's data row i is line i + 2 (after the header); other formats by row number
        return f"{self.source}:{index + 2}" if self.format == "csv" else f"{self.source} row {index + 1}"

    def _example(self, index: int, row: dict[str, Any]) -> Example:
        where = self._where(index)
        columns = self.columns
        item_id = str(row[columns["id"]]).strip() if columns.get("id") else str(index + 1)
        if columns.get("id") and (row[columns["id"]] is None or not item_id):
            raise DataError(
                f"{where}: the id (column {columns['id']!r}) is empty; give every row an id, or set "
                f"task.columns.id=null to number the rows"
            )
        if "{" in columns["image"]:
            image = self._image_path(_fill(columns["image"], {"split": self.data_split, **row}, where), item_id, where)
        else:
            image = self._image_path(row[columns["image"]], item_id, where)
        options, choices = self._options(row, where)
        label, answers = None, self._answers(row, where)
        if answers:
            label = vqa_gold(answers)  # the most common answer, normalised as VQA's are (NLX-GPT's proc_ans)
        if columns.get("label") and self.open_answers:
            label = str(row[columns["label"]]).strip() if row[columns["label"]] is not None else label
        elif columns.get("label"):
            value = row[columns["label"]]
            label = self.label_values.get(str(value), str(value).strip() if value is not None else None)
            if label not in (options or self.labels):
                raise DataError(
                    f"{where}: label {value!r} is not one of {', '.join(options or self.labels)}; add "
                    f"it to task.labels or task.label_values, or fix the row"
                )
        explanations: list[str] = []
        for column in columns.get("explanations") or []:
            value = row[column]
            values = value if isinstance(value, list) else [value]
            explanations += [str(v).strip() for v in values if v is not None and str(v).strip()]
        text = row[columns["text"]] if columns.get("text") else ""
        fields = tuple((key, str(row[key])) for key in self._prompt_columns if isinstance(row[key], (str, int, float)))
        if choices is not None:
            fields += (("choices", choices),)
        return Example(
            id=item_id,
            image=image,
            text="" if text is None else str(text).strip(),
            label=label,
            explanations=tuple(explanations),
            source=where,
            fields=fields,
            options=options,
            choices=tuple(str(c) for c in row[columns["choices"]]) if options else (),
            answers=answers,
        )

    def _answers(self, row: dict[str, Any], where: str) -> tuple[str, ...]:
        """An open question's accepted answers: a list of strings, or of VQA's {"answer": ...} objects."""
        if not self.columns.get("answers"):
            return ()
        values = row[self.columns["answers"]]
        values = values if isinstance(values, list) else [values]
        answers = [v.get("answer") if isinstance(v, dict) else v for v in values]
        texts = [a for a in answers if isinstance(a, str)]
        if len(texts) < len(answers):
            raise DataError(
                f"{where}: column {self.columns['answers']!r} holds {values!r}, not a list of answers "
                f"(strings, or objects with an 'answer')"
            )
        return tuple(a.strip() for a in texts if a.strip())

    def _options(self, row: dict[str, Any], where: str) -> tuple[tuple[str, ...], str | None]:
        """A multiple-choice item's labels (the first len(choices) of task.labels) and its `{choices}` text."""
        if not self.columns.get("choices"):
            return (), None
        choices = row[self.columns["choices"]]
        if not isinstance(choices, list) or not choices:
            raise DataError(f"{where}: column {self.columns['choices']!r} holds {choices!r}, not a list of options")
        if len(choices) > len(self.labels):
            raise DataError(
                f"{where}: {len(choices)} options, but task.labels names only {len(self.labels)}; list "
                f"as many labels (letters) as the most options an item has"
            )
        options = self.labels[: len(choices)]
        text = self.choice_separator.join(
            self.choice_format.format(label=label, choice=str(choice).strip())
            for label, choice in zip(options, choices, strict=False)
        )
        return options, text

    def _image_path(self, value: Any, item_id: str, where: str) -> Path:
        """An item's image file: a path in the table (relative to image_dir), or the image stored inside the table
        written out to `image_cache` (once: a file already there is kept)."""
        assert self.image_dir is not None  # `_resolve` set it before any row is read
        if isinstance(value, str) and value.strip():
            path = self._paths.get(value)
            if path is None:
                path = self._paths[value] = self.image_dir / value.strip()
            return path
        if isinstance(value, dict) and not value.get("bytes") and value.get("path"):  # an Image column of paths
            return self.image_dir / value["path"]
        if isinstance(value, dict) and value.get("bytes"):
            if self.image_cache is None:
                raise DataError(
                    f"{where}: the table holds the image itself; set task.image_cache to a folder where "
                    f"vlx may write it as a file"
                )
            suffix = Path(value.get("path") or "").suffix or ".png"
            digest = hashlib.sha256(item_id.encode()).hexdigest()[:20]
            path = self.image_cache / f"{self.name}-{self.split}" / f"{digest}{suffix}"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                partial = path.with_name(path.name + ".partial")
                partial.write_bytes(value["bytes"])
                os.replace(partial, path)  # whole or absent, also for a run cut short
            return path
        raise DataError(
            f"{where}: column {self.columns['image']!r} holds {type(value).__name__}, neither an image "
            f"path nor an image; set task.columns.image to the column of images"
        )

    def _check_prompt(self, columns: list[str]) -> None:
        unknown = sorted(_template_fields(self.prompt) - set(columns) - {"text", "hypothesis", "choices"})
        if unknown:
            raise ConfigError(
                f"task.prompt names {{{unknown[0]}}}, which is no column of {self.source} (its "
                f"columns: {', '.join(columns)})"
            )
        if "choices" in _template_fields(self.prompt) and not self.columns.get("choices") and "choices" not in columns:
            raise ConfigError(
                "task.prompt names {choices}, but task.columns.choices is not set: name the column of "
                "each item's options"
            )


def _check_columns(columns: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(columns) - set(COLUMN_ROLES))
    if unknown:
        raise ConfigError(f"task.columns: {', '.join(unknown)} is no column role; use {', '.join(COLUMN_ROLES)}")
    if not columns.get("image"):
        raise ConfigError("task.columns.image is not set: name the column that holds each item's image path")
    checked = dict(columns)
    explanations = checked.get("explanations")
    checked["explanations"] = [explanations] if isinstance(explanations, str) else list(explanations or [])
    return checked


def _present(value: Any) -> bool:
    return value is not None and (not isinstance(value, (str, list, dict)) or bool(value))


def _template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _fill(template: str, row: dict[str, Any], where: str) -> str:
    """An image path made from the row's columns (`{image_id:012d}`)."""
    try:
        return template.format(**row)
    except (KeyError, ValueError, TypeError) as err:
        raise DataError(f"{where}: task.columns.image={template!r} cannot be filled from this row ({err})") from err


def _fill_source(source: str, split: str) -> str:
    """`source` with `{split}` filled in; any other placeholder is refused (only the split's name is known)."""
    try:
        fields = _template_fields(source)
    except ValueError:  # an unmatched brace: a path as it is
        return source
    if not fields or Path(source).expanduser().exists():
        return source
    others = sorted(fields - {"split"})
    if others:
        raise ConfigError(
            f"task.source={source!r} names {{{others[0]}}}: only {{split}} is filled in (with the "
            f"split's name); write that part of the path out"
        )
    return source.replace("{split}", split)


def _content_digest(path: Path) -> tuple[str, bool]:
    """A digest of the file's size and bytes (read in blocks), and whether the file holds nothing but whitespace."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(path.stat().st_size).encode() + b"\0")
    blank = True
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            blank = blank and not block.strip()
    return digest.hexdigest(), blank


def _file_problem(path: Path, format: str | None) -> str | None:
    """The first line of a CSV or JSON-lines file that cannot be read (not UTF-8, a row of another width, not JSON),
    or a CSV without rows, as one line naming the file and line and what to do; None where none is found."""
    import csv
    import json

    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return (
                    f"{path}:{number}: byte {raw[err.start]:#04x} is not UTF-8 text; save the file as UTF-8 "
                    f"(e.g. iconv -f latin1 -t utf-8)"
                )
    if format == "csv":
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, [])
            rows = 0
            for row in reader:
                if not row:
                    continue
                rows += 1
                if len(row) > len(header):
                    return (
                        f"{path}:{reader.line_num}: the row has {len(row)} fields, more than the header's "
                        f'{len(header)}; quote a field that holds a {delimiter!r} ("a, b"), or fix the '
                        f"row"
                    )
                if len(row) < len(header):
                    return (
                        f"{path}:{reader.line_num}: the row has {len(row)} fields, fewer than the header's "
                        f"{len(header)}; add the missing fields (an empty field still takes its "
                        f"{'tab' if delimiter == chr(9) else 'comma'}), or fix the row"
                    )
        if not rows:
            return f"{path} has a header line but no rows; add the split's items, one line each"
    elif path.suffix.lower() == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        json.loads(line)
                    except ValueError as err:
                        return f"{path}:{number}: not a JSON object ({err}); fix the line (one JSON object per line)"
    return None


def _text_columns(path: Path, delimiter: str) -> Any:
    """A CSV's columns, all as text, named as pandas names them (an empty header cell `Unnamed: <i>`)."""
    import csv

    import datasets

    with path.open(encoding="utf-8-sig", newline="") as f:
        header = next(csv.reader(f, delimiter=delimiter), [])
    names = [name or f"Unnamed: {i}" for i, name in enumerate(header)]
    return datasets.Features({name: datasets.Value("string") for name in names})


def _keyed_table(path: Path, key_column: str) -> Any:
    """A JSON object of items keyed by id (`{"1": {...}, "2": {...}}`) as a table, the key in `key_column`."""
    import datasets

    from vlx.text_files import read_json

    items = read_json(path)
    if not isinstance(items, dict) or not all(isinstance(v, dict) for v in items.values()):
        raise DataError(
            f"{path}: task.keyed is set, but the file is not one JSON object of items keyed by id; "
            f"set task.keyed=null for a file of rows"
        )
    return datasets.Dataset.from_list([{key_column: key, **item} for key, item in items.items()])


def _split_source(source: str, split: str) -> str:
    """A folder of one file per split (`<split>.csv`, `.jsonl`, `.parquet`, ...) -> that split's file; anything
    else (a file, a save_to_disk folder, a hub id) as it is."""
    folder = Path(source).expanduser()
    if not folder.is_dir() or any((folder / name).is_file() for name in ("dataset_dict.json", "dataset_info.json")):
        return source
    for extension in _EXTENSIONS:
        if (folder / f"{split}{extension}").is_file():
            return str(folder / f"{split}{extension}")
    names = ", ".join(f"{split}{e}" for e in _EXTENSIONS)
    raise DataError(
        f"{folder} holds no file for the {split!r} split ({names}) and is no save_to_disk folder; set "
        f"task.source to the file, or task.split (task.split_names) to a split it has"
    )


def _guess_format(source: str) -> str:
    path = Path(source).expanduser()
    if path.suffix.lower() in _EXTENSIONS:
        return _EXTENSIONS[path.suffix.lower()]
    if path.is_dir():
        return "disk"
    if source.count("/") == 1 and not source.startswith((".", "/", "~")):
        return "hub"
    raise ConfigError(f"task.source={source!r}: cannot tell its format; set task.format ({', '.join(FORMATS)})")


def _undecoded_images(table: Any, column: str) -> Any:
    """The table with an Image column left as its stored bytes: written out as they are, not decoded and re-encoded
    (the image checks decode each file once, later)."""
    import datasets

    feature = table.features.get(column)
    if isinstance(feature, datasets.Image) and feature.decode:
        return table.cast_column(column, datasets.Image(decode=False))
    return table


def _rows(table: Any, batch: int = 4096) -> Iterator[dict[str, Any]]:
    """The table's rows as dicts, read a batch of columns at a time (Arrow to Python in bulk)."""
    for start in range(0, len(table), batch):
        chunk = table[start : start + batch]
        names = list(chunk)
        for values in zip(*(chunk[n] for n in names), strict=True):
            yield dict(zip(names, values, strict=True))
