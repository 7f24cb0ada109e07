"""Image reliance: the item's image replaced by an ablation, the text kept; does the label change, does the
explanation change with it, and how much does the label's probability move?

Ablations (`ABLATIONS`): `mean_colour`, a blank image of the original's size in its mean colour (the colour
information of the whole image kept, every shape and object removed); `other_item`, the image of another item of
the tested items (drawn with the seed and the item's id, among items whose image file differs). A label that does
not flip when the picture is gone says the model did not use it; an explanation that stays word for word the same
while the label flips (or changes while the label stays) is not tied to the label the model gave.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image, ImageStat

from vlx.engine.loop import Answer, LoopResult, LoopSettings, RowStore, run_batches
from vlx.errors import ConfigError
from vlx.faithfulness import measures
from vlx.faithfulness.rows import answers
from vlx.models.hf import VLMAdapter
from vlx.run.records import Prediction
from vlx.tasks import Task
from vlx.tasks.images import load_rgb
from vlx.tasks.items import Example

NAME = "image_reliance"
ABLATIONS = ("mean_colour", "other_item")


def mean_colour_image(source: Path, target: Path) -> Path:
    """Writes at `target` (a PNG) a blank image of `source`'s size in its mean RGB colour (rounded); kept where it
    is already there. Returns `target`."""
    if not target.is_file():
        image = load_rgb(source)
        colour = tuple(round(c) for c in ImageStat.Stat(image).mean[:3])
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        Image.new("RGB", image.size, colour).save(tmp, format="PNG")
        tmp.replace(target)  # whole or not at all: a stopped run never leaves half an image
    return target


def image_name(item_id: str) -> str:
    """A file name for an item's ablation image: its id made safe, with a short hash against collisions."""
    digest = hashlib.sha1(item_id.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', item_id)[:80]}-{digest}.png"


def ablated_images(items: Sequence[Example], ablation: str, seed: int, folder: Path) -> dict[str, Path]:
    """Each item's ablation image by item id: made in `folder` (mean_colour), or another item's image (other_item).

    Raises:
        ConfigError: an unknown ablation, or other_item where all the items share one image.
    """
    if ablation == "mean_colour":
        return {ex.id: mean_colour_image(ex.image, folder / image_name(ex.id)) for ex in items}
    if ablation == "other_item":
        out = {}
        for ex in items:
            others = [o for o in items if Path(o.image) != Path(ex.image)]
            if not others:
                raise ConfigError(
                    f"stage.ablation=other_item: no tested item has an image other than {ex.image} (item {ex.id}); "
                    f"test more items (stage.sample) or use stage.ablation=mean_colour"
                )
            out[ex.id] = Path(random.Random(f"{seed}:{ex.id}").choice(others).image)
        return out
    raise ConfigError(f"stage.ablation={ablation!r}: not an ablation; use one of {', '.join(ABLATIONS)}")


def same_explanation(a: str | None, b: str | None) -> bool:
    """Whether two explanations are the same text, case and spacing aside."""
    return " ".join((a or "").lower().split()) == " ".join((b or "").lower().split())


def reliance_row(item: str, ablation: str, image: Path, original: Prediction, new: Prediction) -> dict[str, Any]:
    """The test's row of one ablated item: the image shown, the original and new answers, whether the label flipped
    (None where either is unparsed), whether the explanation stayed, and the probability of the original label
    before and after (where the run scored labels)."""
    before = (original.scores or {}).get(original.pred or "")
    after = (new.scores or {}).get(original.pred or "")
    return {
        "id": f"{item}|{ablation}",
        "item": item,
        "ablation": ablation,
        "image": str(image),
        **answers(original, new),
        "explanation_same": same_explanation(original.explanation, new.explanation),
        "original_probability": before,
        "probability": after,
        "probability_change": None if before is None or after is None else after - before,
    }


def run_ablation(
    model: VLMAdapter,
    task: Task,
    items: Sequence[Example],
    images: Mapping[str, Path],
    ablation: str,
    originals: Mapping[str, Prediction],
    store: RowStore,
    settings: LoopSettings,
) -> LoopResult:
    """Answers every item not yet in `store` with its image replaced by `images[item id]`, through the shared
    batch loop, appending each item's row (`reliance_row`) batch by batch."""
    from vlx.stages.infer import prediction

    ablated = [replace(ex, id=f"{ex.id}|{ablation}", image=images[ex.id]) for ex in items]
    item_of = {a.id: ex.id for a, ex in zip(ablated, items, strict=True)}

    def row(answer: Answer) -> dict[str, Any]:
        item = item_of[answer.example.id]
        new = prediction(task, answer.example, answer.text, answer.demos, answer.scores)
        return reliance_row(item, ablation, answer.example.image, originals[item], new)

    return run_batches(model, task, ablated, store, row, settings, desc=NAME, rows_name="ablated items")


def summarize(rows: Sequence[Mapping[str, Any]], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The test's numbers, each {"value", "ci", "n"} with its interval over items: `flip_rate`, the share of items
    whose label flips while the explanation stays (`same_explanation_flip_rate`) and whose explanation changes while
    the label stays (`changed_explanation_same_label_rate`), and the mean change in the original label's probability
    (`probability_change`, items with scores; None without); with the counts."""
    counted = [r for r in rows if r["flipped"] is not None]
    return {
        "items": len(rows),
        "unparsed_items": len(rows) - len(counted),
        **measures.summarize(rows, TEST, resamples, seed),
    }


# what the test reports (its numbers' directions, read per item for intervals and paired comparisons), and how
# readers show a row
TEST = measures.FaithfulnessTest(
    name=NAME,
    title="Image reliance",
    measures=(
        measures.Measure.share("flip_rate", "Flip rate", lambda r: r["flipped"]),
        measures.Measure.share(
            "same_explanation_flip_rate",
            "Flips, explanation kept",
            lambda r: r["flipped"] and r["explanation_same"],
            higher_is_better=False,
        ),
        measures.Measure.share(
            "changed_explanation_same_label_rate",
            "Label kept, explanation changed",
            lambda r: not r["flipped"] and not r["explanation_same"],
        ),
        measures.Measure.mean("probability_change", "Label probability change", lambda r: r["probability_change"]),
    ),
    change=lambda r: Path(str(r["image"])).name,
    view=lambda r: {
        "image": r["image"],
        "facts": {"explanation_same": r["explanation_same"], "probability_change": r["probability_change"]},
    },
    settings=("sample", "seed", "ablation"),
)
