"""Checks a task's data folder against its official release; nothing is downloaded.

    vlx stage=prepare task=esnli task.csv_dir=/data/esnlive task.image_dir=/data/flickr30k-images

For each split the task's `release` names (or `stage.splits`): its data file is there, its row count is the
release's, its checksum matches where one is known, every item reads (columns, labels), its ids are unique, and
every image its items name is there and decodes (in parallel, with a progress bar). Prints a table and, for what is
missing or broken, what to do and where the release is; writes prepare.json to the run directory; fails when
anything is missing or broken, so a script can stop there.

A task without a known release (`task=table`, a task YAML of one's own, `task=shapes`) gets the same checks of what
its own files can tell (the file, its columns and labels, unique ids, every image) for `task.split` (or
`stage.splits`), and one line saying that no release is known, so no row count or checksum was compared.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vlx.config_data import plain_dict
from vlx.errors import DataError
from vlx.run.store import write_json
from vlx.tasks import Task
from vlx.tasks.catalog import task_from_config
from vlx.tasks.images import image_problems
from vlx.tasks.items import Example

log = logging.getLogger(__name__)

# how many missing or broken images a split's report names (the count is always whole)
NAMED_IMAGES = 5


def run(cfg: DictConfig) -> dict[str, Any]:
    """Checks every split of the release (stage.splits: those only) and returns the reports.

    Raises:
        DataError: a file, row or image is missing or broken (after the table and prepare.json are written).
    """
    node = cfg.task.get("release")
    release = plain_dict(node, "task.release") if node is not None else {}
    splits = list(cfg.stage.get("splits") or release.get("splits") or [cfg.task.split])
    if not release:
        log.info(
            "task %r has no known official release: checking its files, columns, labels, ids and images only "
            "(no row counts or checksums to compare), split%s %s",
            cfg.task.name,
            "s" * (len(splits) > 1),
            ", ".join(map(str, splits)),
        )
    reports = [check_split(task_from_config(cfg.task, split=split), release) for split in splits]
    result = {
        "task": cfg.task.name,
        "release_known": bool(release),
        "where": release.get("where"),
        "splits": reports,
        "ok": all(r["ok"] for r in reports),
    }
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "prepare.json", result)
    log.info("%s data:\n%s", cfg.task.name, format_reports(reports))
    if not result["ok"]:
        problems = "\n".join(f"  {r['split']}: {p}" for r in reports for p in r["problems"])
        where = f"\nThe official release: {release['where']}" if release.get("where") else ""
        raise DataError(f"task {cfg.task.name!r}: the data is not complete:\n{problems}{where}")
    return result


def check_split(task: Task, release: dict[str, Any]) -> dict[str, Any]:
    """One split's report: its files (with checksums), rows (and the release's count), images (missing, broken) and
    the problems found, each with what to do."""
    expected = ((release.get("splits") or {}).get(task.split) or {}).get("rows")
    checksums = release.get("sha256") or {}
    report: dict[str, Any] = {
        "split": task.split,
        "files": [],
        "rows": None,
        "expected_rows": expected,
        "images": 0,
        "images_missing": 0,
        "images_broken": 0,
        "problems": [],
    }
    problems: list[str] = report["problems"]
    for path in task.files():
        entry: dict[str, Any] = {"path": str(path), "present": path.is_file(), "sha256": None, "checksum": "unknown"}
        if entry["present"] and path.name in checksums:
            entry["sha256"] = sha256(path)
            entry["checksum"] = "ok" if entry["sha256"] == checksums[path.name] else "mismatch"
            if entry["checksum"] == "mismatch":
                problems.append(
                    f"{path}: sha256 {entry['sha256']} is not the release's {checksums[path.name]}; "
                    f"the file is damaged or another version: get it again"
                )
        report["files"].append(entry)
    try:
        examples = task.examples()
    except DataError as err:
        problems.append(str(err))
        report["ok"] = False
        return report
    report["rows"] = len(examples)
    repeated = _repeated_ids(examples)
    if repeated:
        problems.append(repeated)
    if expected is not None and task.limit is None and len(examples) != expected:
        problems.append(
            f"{len(examples)} items where the release has {expected}: a partial or other version of the data"
        )
    paths = list(dict.fromkeys(ex.image for ex in examples))
    found = image_problems(paths, min_for_bar=1)
    missing = [p for p, why in found.items() if why is not None and why.startswith("missing")]
    broken = [p for p, why in found.items() if why is not None and not why.startswith("missing")]
    report.update(images=len(paths), images_missing=len(missing), images_broken=len(broken))
    if missing:
        named = ", ".join(str(p) for p in missing[:NAMED_IMAGES]) + (", ..." if len(missing) > NAMED_IMAGES else "")
        problems.append(
            f"{len(missing)} of {len(paths)} images are missing ({named}); check the image folder "
            f"setting (task.image_dir / task.data_dir)"
        )
    if broken:
        named = "; ".join(f"{p}: {found[p]}" for p in broken[:NAMED_IMAGES])
        problems.append(
            f"{len(broken)} of {len(paths)} images do not decode ({named}); get them again, or run "
            f"with task.on_bad_image=skip"
        )
    report["ok"] = not problems
    return report


def _repeated_ids(examples: list[Example]) -> str | None:
    """The first id used by two items (where both are), or None: ids must be unique in a split (predictions,
    resuming and scoring key on them)."""
    seen: dict[str, str] = {}
    repeats = 0
    first = ""
    for ex in examples:
        if ex.id in seen:
            repeats += 1
            first = first or f"id {ex.id!r} at {ex.source} is already used at {seen[ex.id]}"
        else:
            seen[ex.id] = ex.source
    if not repeats:
        return None
    return f"{repeats} items repeat an id ({first}); ids must be unique in a split: fix the rows or task.columns.id"


def sha256(path: Path) -> str:
    """The SHA-256 of the file at `path`, as hex, read in 1 MiB blocks so that an archive of GBs is never held."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def format_reports(reports: list[dict[str, Any]]) -> str:
    """The splits as a table: rows (of the release's), images (missing, broken), checksums, status."""
    header = ("split", "rows", "release", "images", "missing", "broken", "checksum", "status")
    lines = [header]
    for r in reports:
        sums = {f["checksum"] for f in r["files"]} or {"unknown"}
        checksum = "mismatch" if "mismatch" in sums else "ok" if sums == {"ok"} else "unknown"
        lines.append(
            (
                r["split"],
                _n(r["rows"]),
                _n(r["expected_rows"]),
                str(r["images"]),
                str(r["images_missing"]),
                str(r["images_broken"]),
                checksum,
                "ok" if r["ok"] else "INCOMPLETE",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"
