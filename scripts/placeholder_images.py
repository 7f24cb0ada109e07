"""Writes a placeholder image for every image an e-SNLI-VE CSV or Hateful Memes jsonl names.

For dry runs of the whole pipeline on the real annotation files before the images are on the machine:

    python scripts/placeholder_images.py esnli data/esnlive/esnlive_test.csv data/flickr30k-images --limit 30
    python scripts/placeholder_images.py meme data/hateful_memes/dev_seen.jsonl data/hateful_memes

Images that already exist are left alone. Sizes cycle through a few aspect ratios, as real photos vary.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
from pathlib import Path

from PIL import Image

SIZES = [(500, 375), (375, 500), (640, 427), (500, 500)]


def image_names(kind: str, annotations: Path, limit: int | None) -> list[str]:
    """Image paths (relative to the image folder) named by the first `limit` items of the file."""
    with annotations.open(newline="", encoding="utf-8") as f:
        if kind == "esnli":
            names = (row["Flickr30kID"] for row in csv.DictReader(f))
        else:
            names = (json.loads(line)["img"] for line in f if line.strip())
        return list(dict.fromkeys(itertools.islice(names, limit)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["esnli", "meme"])
    parser.add_argument("annotations", type=Path, help="esnlive_<split>.csv or <split>.jsonl")
    parser.add_argument("image_dir", type=Path, help="task.image_dir (e-SNLI-VE) or task.data_dir (memes)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N items")
    args = parser.parse_args()
    written = 0
    for i, name in enumerate(image_names(args.kind, args.annotations, args.limit)):
        path = args.image_dir / name
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", SIZES[i % len(SIZES)], (40 + 13 * i % 200, 120, 160)).save(path)
        written += 1
    print(f"wrote {written} placeholder images under {args.image_dir}")


if __name__ == "__main__":
    main()
