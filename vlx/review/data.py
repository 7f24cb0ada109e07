"""What the review page shows of a run, read once when the server starts."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vlx.errors import ConfigError
from vlx.metrics.text import run_item_metrics
from vlx.review.app import ReviewData
from vlx.run.directory import RunDir
from vlx.run.ratings import draw_sample
from vlx.run.records import Prediction, RunInfo, Verdict
from vlx.run.store import read_json

log = logging.getLogger(__name__)

# what the image route serves: image files only, so a prediction row naming another file (/etc/passwd) reaches nothing
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def judge_verdicts(run_dir: Path, judge: str | None) -> dict[str, Verdict]:
    """id -> the judge's verdict, for the named judge or the run's only one ({} where none judged it)."""
    from vlx.judging.verdicts import judge_names, run_verdicts

    names = judge_names(run_dir)
    if not names or (judge is None and len(names) > 1):
        if len(names) > 1:
            log.info(
                "the run has several judges (%s): name one with review.judge=<name> to show its verdicts",
                ", ".join(names),
            )
        return {}
    return {v.id: v for v in run_verdicts(run_dir, judge)}


def image_path(value: Any, run_dir: Path) -> Path | None:
    """An item's image file: an absolute path, or relative to the working directory or to the run's folder; None
    for a path with `..` or a file that is not an image by its name (the page then shows no image)."""
    if not value:
        return None
    path = Path(str(value))
    if ".." in path.parts:
        return None
    for candidate in (path, Path.cwd() / path, run_dir / path, run_dir.parent / path):
        if candidate.is_file():
            return candidate.resolve() if _is_image(candidate) else None
    return None


def _is_image(path: Path) -> bool:
    """An image by its name or, for a name without an image suffix, by its first bytes."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")) or (
        head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    )


# the fields every faithfulness row holds of the two answers (`vlx.faithfulness.rows.answers`): shown as the new
# answer, not among an undeclared test's facts
ANSWER_FIELDS = ("id", "item", "original_label", "label", "original_explanation", "explanation", "raw", "scores")


def faithfulness_views(run_dir: Path) -> tuple[dict[str, list[dict[str, Any]]], list[Path]]:
    """What the page shows of stage=faithfulness per item: item id -> one section per test output ({"output",
    "title", "rows"}), each row its new label and explanation, whether the label flipped, and its test's view (the
    edited text with the inserted word marked, the ablation image as `faithfulness-image/<n>`, facts); and the
    ablation images by number (the page addresses them by number, never by path)."""
    from vlx.faithfulness.catalog import declared_test
    from vlx.faithfulness.results import ordered_outputs

    run = RunDir(run_dir)
    views: dict[str, list[dict[str, Any]]] = {}
    images: list[Path] = []
    for output in ordered_outputs(set(run.faithfulness_results())):
        test = declared_test(output)
        sections: dict[str, dict[str, Any]] = {}
        for row in run.faithfulness_rows(output):
            view = dict(test.view(row)) if test else {}
            if not test:  # a test this vlx does not declare: its plain fields as facts
                view["facts"] = {
                    k: v for k, v in row.items() if k not in ANSWER_FIELDS and isinstance(v, (str, int, float, bool))
                }
            if view.get("image") is not None:
                found = image_path(view["image"], run_dir)
                view["image_name"] = Path(str(view["image"])).name
                view["image"] = None
                if found is not None:
                    images.append(found)
                    view["image"] = f"faithfulness-image/{len(images) - 1}"
            item = str(row.get("item", row.get("id")))
            section = sections.setdefault(item, {"output": output, "title": test.title if test else output, "rows": []})
            section["rows"].append(
                {
                    "id": row.get("id"),
                    "label": row.get("label"),
                    "explanation": row.get("explanation"),
                    "flipped": row.get("flipped"),
                    **view,
                }
            )
        for item, section in sections.items():
            views.setdefault(item, []).append(section)
    return views, images


def sample_ids(run_dir: Path, rows: list[Prediction], size: int | None, seed: int, balanced: bool) -> list[str]:
    """Every id, or a seeded sample kept in review_sample.json so that a restarted server rates the same items."""
    if size is None:
        return [r.id for r in rows]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"review.sample={size!r}: use a number of items to rate, or null for all of them")
    path = RunDir(run_dir).review_sample
    wanted = {"size": size, "seed": seed, "balanced": balanced}
    if path.is_file():
        saved = read_json(path, "written by stage=review")
        if {k: saved.get(k) for k in wanted} == wanted:
            return [str(i) for i in saved["ids"]]
    ids = draw_sample(rows, size, seed=seed, balanced=balanced)
    path.write_text(json.dumps({**wanted, "ids": ids}, indent=1) + "\n")
    return ids


def load(
    run_dir: Path, *, sample: int | None = None, seed: int = 0, balanced: bool = True, judge: str | None = None
) -> ReviewData:
    """The run's predictions, metrics, per-item scores, judge verdicts, faithfulness rows and the sample to rate."""
    run = RunDir(run_dir)
    rows = run.predictions("review")
    metrics = run.results()
    info = run.run_info() or RunInfo()
    images = [image_path(r.image, run_dir) for r in rows]
    missing = sum(i is None for i in images)
    if missing:
        log.info("%d of %d items have no image file here (the page shows their file name)", missing, len(rows))
    faithfulness, faithfulness_images = faithfulness_views(run_dir)
    return ReviewData(
        run_dir,
        rows,
        images,
        metrics,
        info,
        run_item_metrics(run.explanation_items, metrics),
        judge_verdicts(run_dir, judge),
        sample_ids(run_dir, rows, sample, seed, balanced),
        faithfulness,
        faithfulness_images,
    )
