"""A synthetic visual-entailment task: coloured shapes on a plain background, in the e-SNLI-VE file format.

Each image shows one shape. Hypotheses come from templates: "There is a red circle." (entailment: it is the shape
shown), the same about another colour/shape (contradiction), or a property the picture cannot show such as "The red
circle is made of wood." (neutral). Explanations are templates too, so a fine-tuned model can learn them exactly.
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

from PIL import Image, ImageDraw

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
FORMAT_VERSION = 1  # bump when the generator changes, so cached files are rebuilt


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


def _item(rng: random.Random, label: str) -> tuple[str, str, str, str]:
    """(colour, shape) shown, hypothesis and explanation for one item with the given label."""
    colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
    if label == "entailment":
        hypothesis = f"There is a {colour} {shape}."
        explanation = f"The picture shows a {colour} {shape}."
    elif label == "contradiction":
        other = (colour, shape)
        while other == (colour, shape):
            other = (rng.choice(sorted(COLOURS)), rng.choice(SHAPES))
        hypothesis = f"There is a {other[0]} {other[1]}."
        explanation = f"The picture shows a {colour} {shape}, not a {other[0]} {other[1]}."
    else:
        prop = rng.choice(PROPERTIES)
        hypothesis = f"The {colour} {shape} is {prop}."
        explanation = f"You cannot tell from the picture whether the {colour} {shape} is {prop}."
    return colour, shape, hypothesis, explanation


def _write_split(out_dir: Path, split: str, size: int, image_size: int, rng: random.Random) -> None:
    labels = ("entailment", "contradiction", "neutral")
    image_dir = out_dir / "images"
    with (out_dir / f"esnlive_{split}.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["", "pairID", "Flickr30kID", "hypothesis", "gold_label", "explanation"])
        for i in range(size):
            label = labels[i % 3]  # balanced classes
            colour, shape, hypothesis, explanation = _item(rng, label)
            image_name = f"{split}-{i:05d}.png"
            img = Image.new("RGB", (image_size, image_size), (245, 245, 240))
            side = rng.randint(image_size // 2, image_size - 4)
            x0, y0 = rng.randint(0, image_size - side), rng.randint(0, image_size - side)
            _draw_shape(ImageDraw.Draw(img), shape, (x0, y0, x0 + side - 1, y0 + side - 1), COLOURS[colour])
            img.save(image_dir / image_name)
            writer.writerow([i, f"{image_name}#{i}{label[0]}", image_name, hypothesis, label, explanation])


def generate_shapes(out_dir: str | Path, sizes: dict[str, int], image_size: int = 56, seed: int = 0) -> Path:
    """Writes `esnlive_{split}.csv` and `images/` for each split into out_dir, unless the same data is there.

    Built in a temporary sibling folder and moved into place, so an interrupted build leaves nothing half-written.

    Returns:
        out_dir.
    """
    out_dir = Path(out_dir)
    manifest = {"version": FORMAT_VERSION, "sizes": dict(sizes), "image_size": image_size, "seed": seed}
    manifest_path = out_dir / "manifest.json"
    if manifest_path.is_file() and json.loads(manifest_path.read_text()) == manifest:
        return out_dir
    log.info("generating the shapes task into %s (%s)", out_dir, manifest)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    (tmp / "images").mkdir()
    for split, size in sorted(sizes.items()):
        # one stream per split: changing one split's size leaves the others' items as they were
        _write_split(tmp, split, size, image_size, random.Random(f"{seed}-{split}"))
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    try:
        os.replace(tmp, out_dir)
    except OSError:  # another process finished first: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


class ShapesTask(EsnliVeTask):
    """The synthetic shapes task; generates its files on first use, then reads them like e-SNLI-VE.

    Args:
        sizes: items per split, e.g. {"train": 600, "dev": 60, "test": 60}.
        image_size: side of the square images in pixels.
        seed: generation seed.
        **kwargs: as EsnliVeTask (csv_dir, image_dir, split, prompt, limit, on_bad_image).
    """

    def __init__(self, sizes: dict[str, int], image_size: int = 56, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.sizes = dict(sizes)
        self.image_size = image_size
        self.seed = seed

    def read_examples(self):
        generate_shapes(self.csv_dir, self.sizes, self.image_size, self.seed)
        return super().read_examples()
