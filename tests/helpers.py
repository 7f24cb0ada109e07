"""Data makers shared by the tests: placeholder images, e-SNLI-VE and Hateful Memes files."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

from PIL import Image

ESNLI_HEADER = ["", "pairID", "Flickr30kID", "hypothesis", "gold_label", "explanation"]


def placeholder_image(path: Path, size: tuple[int, int] = (40, 30), colour: tuple[int, int, int] = (200, 90, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def esnli_from_shared(src: Path, out_dir: Path, limit: int) -> tuple[Path, Path, list[dict[str, str]]]:
    """The first `limit` rows of a real e-SNLI-VE CSV copied verbatim to out_dir/esnlive/, with a placeholder image
    per Flickr30kID in out_dir/flickr30k-images/ (a few sizes and aspect ratios, as the real ones vary).

    Returns:
        (csv_dir, image_dir, rows) laid out as `paths.data_dir=out_dir` expects.
    """
    with src.open(newline="") as f:
        lines = f.read().splitlines(keepends=True)
    with src.open(newline="") as f:
        rows = list(itertools.islice(csv.DictReader(f), limit))
    csv_dir = out_dir / "esnlive"
    csv_dir.mkdir(parents=True, exist_ok=True)
    (csv_dir / src.name).write_text("".join(lines[: limit + 1]))  # no quoted newlines in these files
    image_dir = out_dir / "flickr30k-images"
    sizes = [(40, 30), (30, 60), (56, 56), (64, 32)]
    for i, name in enumerate(sorted({r["Flickr30kID"] for r in rows})):
        placeholder_image(image_dir / name, sizes[i % len(sizes)], (20 * i % 255, 100, 150))
    return csv_dir, image_dir, rows


def write_esnli_csv(path: Path, rows: list[list[str]], header: list[str] = ESNLI_HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_memes(data_dir: Path, split: str, items: list[dict], make_images: bool = True) -> Path:
    """A Hateful Memes jsonl (and its images under img/)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / f"{split}.jsonl").open("w") as f:
        for i, item in enumerate(items):
            f.write(json.dumps(item) + "\n")
            if make_images:
                placeholder_image(data_dir / item["img"], [(40, 30), (30, 60), (50, 50)][i % 3])
    return data_dir / f"{split}.jsonl"


def meme_items(n: int) -> list[dict]:
    # ids stored as integers without leading zeros, as in some copies of the dataset
    return [
        {"id": 1000 + i * 7, "img": f"img/{1000 + i * 7:05d}.png", "label": i % 2, "text": f"meme caption number {i}"}
        for i in range(n)
    ]
