"""A synthetic visual-entailment task: coloured shapes on a plain background, in the e-SNLI-VE file format.

Each image shows one shape and, as in e-SNLI-VE, comes with one hypothesis of each label, from templates: "There is
a red circle." (entailment: it is the shape shown), the same about another colour/shape (contradiction), or a
property the picture cannot show such as "The red circle is made of wood." (neutral). Explanations are templates
too, so a fine-tuned model can learn them exactly.
Files are generated on first use, deterministically from the seed, and read back by the e-SNLI-VE loader.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from vlx.errors import ConfigError, DataError
from vlx.tasks.esnli_ve import EsnliVeTask

log = logging.getLogger(__name__)

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 160, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 170),
    "orange": (250, 140, 0),
    "black": (10, 10, 10),
}
SHAPES = ("circle", "square", "triangle", "star")
PROPERTIES = ("made of wood", "very heavy", "drawn by a child", "spinning", "hot to the touch", "for sale")
FORMAT_VERSION = 2  # bump when the generator changes: the cache folder's name has it (data_key)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: tuple[int, int, int]):
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    else:  # a five-pointed star: alternate outer and inner radius
        points = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.45
            angle = math.pi / 2 + i * math.pi / 5
            points.append((cx + rad * math.cos(angle), cy - rad * math.sin(angle)))
        draw.polygon(points, fill=fill)


def _hypothesis(rng: random.Random, label: str, colour: str, shape: str) -> tuple[str, str]:
    """A hypothesis with the given label about a picture of a `colour` `shape`, and its explanation."""
    if label == "entailment":
        return f"There is a {colour} {shape}.", f"The picture shows a {colour} {shape}."
    if label == "contradiction":
        other = (colour, shape)
        while other == (colour, shape):
            other = (rng.choice(sorted(COLOURS)), rng.choice(SHAPES))
        return (
            f"There is a {other[0]} {other[1]}.",
            f"The picture shows a {colour} {shape}, not a {other[0]} {other[1]}.",
        )
    prop = rng.choice(PROPERTIES)
    return (
        f"The {colour} {shape} is {prop}.",
        f"You cannot tell from the picture whether the {colour} {shape} is {prop}.",
    )


def _write_split(out_dir: Path, split: str, size: int, image_size: int, rng: random.Random) -> None:
    """`size` items; as in e-SNLI-VE, each picture comes with one hypothesis of each label (items 3k, 3k+1, 3k+2
    share picture k). With one hypothesis per picture, the tiny model learnt to read the picture within ~150 steps
    but needed a further 100 to 300+ steps, depending on the seed and the CPU's rounding, to compare what it read
    with the hypothesis for the label (docs/PERFORMANCE.md, "The demo on a CPU")."""
    labels = ("entailment", "contradiction", "neutral")
    image_dir = out_dir / "images"
    with (out_dir / f"esnlive_{split}.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["", "pairID", "Flickr30kID", "hypothesis", "gold_label", "explanation"])
        for i in range(size):
            label = labels[i % 3]  # balanced classes
            if i % 3 == 0:  # a new picture
                colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
                image_name = f"{split}-{i // 3:05d}.png"
                img = Image.new("RGB", (image_size, image_size), (245, 245, 240))
                side = rng.randint(image_size // 2, image_size - 4)
                x0, y0 = rng.randint(0, image_size - side), rng.randint(0, image_size - side)
                _draw_shape(ImageDraw.Draw(img), shape, (x0, y0, x0 + side - 1, y0 + side - 1), COLOURS[colour])
                img.save(image_dir / image_name)
            hypothesis, explanation = _hypothesis(rng, label, colour, shape)
            writer.writerow([i, f"{image_name}#{i}{label[0]}", image_name, hypothesis, label, explanation])


def data_key(sizes: dict[str, int], image_size: int, seed: int) -> str:
    """The cache folder's name: every setting that shapes the files, so that two settings never share (or delete)
    each other's files, and the predictions and CSVs of earlier runs keep pointing at images that exist."""
    splits = "-".join(f"{split}{size}" for split, size in sorted(sizes.items()))
    return f"v{FORMAT_VERSION}-seed{seed}-{image_size}px-{splits}"


def generate_shapes(out_dir: str | Path, sizes: dict[str, int], image_size: int = 56, seed: int = 0) -> Path:
    """Writes `esnlive_{split}.csv` and `images/` for each split into out_dir, unless the same data is there.

    Built in a temporary sibling folder and moved into place, so an interrupted build leaves nothing half-written.
    An existing folder is never changed: it must hold exactly this data.

    Returns:
        out_dir.

    Raises:
        DataError: out_dir exists and holds something else (other settings, or files of its own).
    """
    out_dir = Path(out_dir)
    manifest = {"version": FORMAT_VERSION, "sizes": dict(sizes), "image_size": image_size, "seed": seed}
    manifest_path = out_dir / "manifest.json"
    if _manifest(manifest_path) == manifest:
        return out_dir
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(
            f"{out_dir} exists and does not hold the shapes data for {manifest} (see its manifest.json); vlx does not "
            f"overwrite it: leave task.csv_dir unset (a folder of its own per setting) or point it at a new folder"
        )
    log.info("generating the shapes task into %s (%s)", out_dir, manifest)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        (tmp / "images").mkdir()
        for split, size in sorted(sizes.items()):
            # one stream per split: the same split size gives the same items, whatever the other splits' sizes
            _write_split(tmp, split, size, image_size, random.Random(f"{seed}-{split}"))
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        if out_dir.is_dir():
            out_dir.rmdir()  # empty (checked above): rename needs it gone
        os.replace(tmp, out_dir)
    except OSError:
        if _manifest(manifest_path) != manifest:
            raise
        # another process finished the same data first: use its copy
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _manifest(path: Path) -> Any:
    """What a shapes folder's manifest.json says it holds (None: no manifest, or one that cannot be read)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class ShapesTask(EsnliVeTask):
    """The synthetic shapes task; generates its files on first use, then reads them like e-SNLI-VE.

    Args:
        sizes: items per split, e.g. {"train": 600, "dev": 60, "test": 60}.
        image_size: side of the square images in pixels.
        seed: generation seed.
        cache_dir: where generated data lives: one folder per setting (`data_key`).
        csv_dir: a folder of your own instead (generated there when missing or empty); None = in cache_dir.
        image_dir: the images' folder (None = csv_dir/images).
        **kwargs: as EsnliVeTask (split, prompt, limit, on_bad_image, references).
    """

    def __init__(
        self,
        sizes: dict[str, int],
        image_size: int = 56,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        csv_dir: str | Path | None = None,
        image_dir: str | Path | None = None,
        **kwargs: Any,
    ):
        sizes = {str(split): int(size) for split, size in dict(sizes).items()}
        if csv_dir is None:
            if cache_dir is None:
                raise ConfigError("task=shapes needs task.cache_dir (or task.csv_dir) for its generated files")
            csv_dir = Path(cache_dir) / data_key(sizes, image_size, seed)
        super().__init__(csv_dir=csv_dir, image_dir=image_dir or Path(csv_dir) / "images", **kwargs)
        self.sizes = sizes
        self.image_size = image_size
        self.seed = seed

    def read_examples(self):
        """The split's items, generated first where their files are missing."""
        generate_shapes(self.csv_dir, self.sizes, self.image_size, self.seed)
        return super().read_examples()
