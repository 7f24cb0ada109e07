"""What each faithfulness test reports, declared once per test: its numbers (each a ratio of sums over items, read
from one item's rows), which way each is better, what must match for two runs' rows to be the same change, and how
the review page shows a row.

Every reader goes through these declarations: the test's own summary in faithfulness.json (`summarize`),
stage=report's tables, stage=compare's paired differences (the same per-item numerators and denominators, resampled
over the items both runs tested) and the review page. A new test declares a `FaithfulnessTest` in its module and
adds it to `vlx.faithfulness.catalog.DECLARED`; nothing else changes:

    TEST = FaithfulnessTest(
        name="cc_shap",
        title="CC-SHAP",
        measures=(
            Measure.mean("cc_shap", "CC-SHAP", lambda r: r["cc_shap"], higher_is_better=True),
            Measure.mean("text_share_label", "Text share of the label", lambda r: r["text_share_label"]),
        ),
        change=lambda r: r["id"],
    )
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vlx.faithfulness import rates

Row = Mapping[str, Any]
Counts = Callable[[Sequence[Row]], tuple[float, float]]

# settings that may differ between two runs whose numbers are compared: an item's changes do not depend on them
# (the sample only chooses which items are tested; the pairing keeps the items both tested)
NEUTRAL_SETTINGS = ("sample",)


def label_parsed(row: Row) -> bool:
    """A row whose original and new labels both parsed (`flipped` is not None): the rows a rate counts."""
    return row.get("flipped") is not None


def every_row(row: Row) -> bool:
    """Every row: for a mean over the rows that have a value (the value itself says which)."""
    return True


@dataclass(frozen=True)
class Measure:
    """One number of a test: a ratio over items, sum of numerators over sum of denominators, with a bootstrap
    interval over items.

    Attributes:
        name: its key in the test's numbers (faithfulness.json) and in comparisons (`<output>.<name>`).
        title: how tables name it.
        counts: an item's (numerator, denominator) from its rows (those `rows` keeps).
        higher_is_better: True, False or None (neither: e.g. a flip rate says how sensitive the model is).
        rows: which of the test's rows count (default: those whose labels both parsed).
        paired: whether stage=compare tests it between runs (False for a cost, such as seconds per item, which
            says how the run went rather than how the model behaves).
    """

    name: str
    title: str
    counts: Counts = field(compare=False)
    higher_is_better: bool | None = None
    rows: Callable[[Row], bool] = field(default=label_parsed, compare=False)
    paired: bool = True

    @classmethod
    def mean(
        cls,
        name: str,
        title: str,
        value: Callable[[Row], float | None],
        higher_is_better: bool | None = None,
        rows: Callable[[Row], bool] = every_row,
        paired: bool = True,
    ) -> Measure:
        """The mean of a per-row value over the rows that have one (None: left out), e.g. a probability change."""

        def counts(item_rows: Sequence[Row]) -> tuple[float, float]:
            values = [v for v in map(value, item_rows) if v is not None]
            return float(sum(values)), float(len(values))

        return cls(name, title, counts, higher_is_better, rows, paired)

    @classmethod
    def share(
        cls,
        name: str,
        title: str,
        condition: Callable[[Row], Any],
        higher_is_better: bool | None = None,
        among: Callable[[Row], Any] | None = None,
    ) -> Measure:
        """The share of rows (among those where `among` holds; all counted rows without it) where `condition`
        holds."""

        def counts(item_rows: Sequence[Row]) -> tuple[float, float]:
            kept = [r for r in item_rows if among is None or among(r)]
            return float(sum(bool(condition(r)) for r in kept)), float(len(kept))

        return cls(name, title, counts, higher_is_better)


@dataclass(frozen=True)
class FaithfulnessTest:
    """What a faithfulness test reports and how its rows are read.

    Attributes:
        name: the test's name (`stage.tests`); its outputs are `<name>` or `<name>_<variant>` (image_reliance's
            ablations).
        title: how tables name it.
        measures: its numbers, in table order.
        change: what must be the same in two runs' rows of one item for them to be the same change (the edit, the
            ablation image), so that stage=compare pairs like with like.
        view: the review page's view of one row beyond the new label and explanation: `text` (the changed text),
            `marked` ([before, inserted, after] of that text), `image` (the path of the image shown), `facts`
            ({name: value} shown beside).
        settings: the keys of its settings that readers state beside its numbers (all of them where empty).
    """

    name: str
    title: str
    measures: tuple[Measure, ...]
    change: Callable[[Row], Any] = field(compare=False)
    view: Callable[[Row], dict[str, Any]] = field(default=lambda row: {}, compare=False)
    settings: tuple[str, ...] = ()

    def measure(self, name: str) -> Measure | None:
        """The declared measure of that name, or None."""
        return next((m for m in self.measures if m.name == name), None)

    def lower_is_better(self) -> list[str]:
        """The names of its measures where lower is better."""
        return [m.name for m in self.measures if m.higher_is_better is False]


def item_counts(rows: Sequence[Row], measure: Measure) -> dict[Any, tuple[float, float]]:
    """Each item's (numerator, denominator) of `measure` (`item` key of the rows), items with no counted row
    (0, 0)."""
    out: dict[Any, tuple[float, float]] = {}
    for group in rates.grouped(rows):
        kept = [r for r in group if measure.rows(r)]
        out[group[0]["item"]] = measure.counts(kept) if kept else (0.0, 0.0)
    return out


def summarize(rows: Sequence[Row], test: FaithfulnessTest, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Every declared measure of the test over its rows: {"value", "ci", "n"} each (`rates.rate`, the interval
    drawn over the items that have a counted row)."""
    return {
        m.name: rates.rate(rates.grouped([r for r in rows if m.rows(r)]), m.counts, resamples, seed)
        for m in test.measures
    }
