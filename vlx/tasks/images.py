"""Images as the models get them: decoded whole, in 8-bit RGB whatever the file's mode, or a reason they cannot be.

Every mode PIL reads becomes the picture a viewer shows: 16-bit and 32-bit greyscale are scaled down to 8 bits (PIL's
own conversion clips them, so a 16-bit PNG turned almost white), float images are scaled from their range,
transparent pixels are laid on white, palette, CMYK and the rest go through PIL's conversion. Orientation is left as
the file stores it, as the reference code reads images (`Image.open(path).convert("RGB")`).

`check_images` applies the `task.on_bad_image` policy to a list of items before any model loads (the infer stage's
split, the judge's predictions): one check for every stage that runs a model over images.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from vlx._runtime import usable_cpus
from vlx.errors import DataError

if TYPE_CHECKING:  # vlx.tasks checks its items' images with this module: a runtime import would be a cycle
    from vlx.tasks.items import Example

log = logging.getLogger(__name__)

# task.on_bad_image: fail (before any model loads) or skip (listed in the log and summary)
BAD_IMAGE_POLICIES = ("fail", "skip")

# PIL warns between its pixel limit and twice it, and refuses above: vlx refuses above the limit itself, naming the size
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError)


class BadImage(Exception):
    """Why an image file cannot be used (the message says it; the caller names the file and the item)."""


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise BadImage("missing" if not path.exists() else "not a file")
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as err:
        raise BadImage(f"too large to decode safely ({err})") from err
    except _ERRORS as err:
        raise BadImage(f"cannot be decoded ({type(err).__name__}: {err})") from err
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        image.close()
        raise BadImage(
            f"{image.width}x{image.height} pixels ({image.width * image.height / 1e6:.0f} Mpx), over PIL's limit of "
            f"{limit / 1e6:.0f} Mpx that guards against decompression bombs; downscale it"
        )
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I") or mode == "F":  # 16/32-bit integers, 32-bit floats: one channel
        values = np.asarray(image, dtype=np.float64)
        top = values.max(initial=0.0)
        if mode.startswith("I;16") or (mode == "I" and 255 < top <= 65535):
            values = values / 257.0  # 16-bit range onto 8 bits
        elif mode == "F" and top <= 1.0:
            values = values * 255.0  # the 0-1 convention of float images
        elif top > 255:
            low = values.min()
            values = (values - low) * (255.0 / (top - low))
        grey = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))
        return grey.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def decode_rgb(path: Path) -> Image.Image:
    """The whole image, decoded, as 8-bit RGB.

    Raises:
        BadImage: missing, not an image, truncated or corrupt, over the pixel limit, or in a mode that cannot become
            RGB.
    """
    image = _open(path)
    try:
        with image:
            image.load()  # decodes every byte: a truncated or corrupt file fails here, not mid-run
            return _to_rgb(image)
    except _ERRORS as err:
        raise BadImage(f"cannot be decoded ({type(err).__name__}: {err})") from err


def image_problem(path: Path) -> str | None:
    """Why an image cannot be used, or None when it decodes to RGB.

    Every byte is decoded; JPEGs at an eighth of their size (the decoder still reads all their data, so a cut or
    corrupt file fails as it would in full, at a fraction of the time).
    """
    try:
        image = _open(path)
        with image:
            if image.format == "JPEG":
                image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()  # JPEG's modes (L, RGB, CMYK, YCbCr) all convert to RGB
            else:
                image.load()
                _to_rgb(image)
    except BadImage as err:
        return str(err)
    except _ERRORS as err:
        return f"cannot be decoded ({type(err).__name__}: {err})"
    return None


def load_rgb(path: Path) -> Image.Image:
    """Decodes an image to 8-bit RGB (see `decode_rgb`).

    Raises:
        DataError: the image cannot be used; the message names the file.
    """
    try:
        return decode_rgb(path)
    except BadImage as err:
        raise DataError(f"image {path}: {err}; replace it, or use task.on_bad_image=skip") from err


def image_problems(paths: list[Path], min_for_bar: int = 2000) -> dict[Path, str | None]:
    """Each image decoded once (many items share one: e-SNLI-VE has ~15 hypotheses per image), in threads: PIL's
    decoders release the interpreter lock; a progress bar from `min_for_bar` images on."""
    workers = min(8, usable_cpus())
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vlx-image-check") as pool:
        results = pool.map(image_problem, paths)
        bar = tqdm(results, total=len(paths), desc="checking images", unit="image", disable=len(paths) < min_for_bar)
        return dict(zip(paths, bar, strict=True))


def check_images(examples: list[Example], policy: str, remedy: str) -> tuple[list[Example], list[dict[str, str]]]:
    """The items whose image decodes, and those left out: every image is decoded once, before any model loads.

    Args:
        examples: the items to check.
        policy: `fail` or `skip` (task.on_bad_image): a bad image fails the run, or its item is left out (logged,
            and listed in what is returned).
        remedy: what the user can do, the end of the error's message.

    Returns:
        The items kept, in order, and one record (id, image, source, reason) per item left out.

    Raises:
        DataError: a bad image with `policy=fail`; the message names the item's file and row and the image.
    """
    problems = image_problems(list(dict.fromkeys(ex.image for ex in examples)))
    kept: list[Example] = []
    skipped: list[dict[str, str]] = []
    for ex in examples:
        problem = problems[ex.image]
        if problem is None:
            kept.append(ex)
        elif policy == "fail":
            raise DataError(f"{ex.source}: image {ex.image}: {problem}. {remedy}")
        else:
            log.warning("skipping %s (%s): image %s: %s", ex.id, ex.source, ex.image, problem)
            skipped.append({"id": ex.id, "image": str(ex.image), "source": ex.source, "reason": problem})
    if skipped:
        log.warning("skipped %d of %d items for bad images", len(skipped), len(examples))
    return kept, skipped
