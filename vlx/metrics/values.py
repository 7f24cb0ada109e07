"""A metric's value with its interval, as it travels from the eval stage to the log, W&B, the report and compare.

metrics.json keeps its form, `<name>` and `<name>_ci` ([low, high] or null), so files written by any vlx are read
the same way (`read_values`). The means of the registry's row metrics (`Metric.item_score`) are computed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vlx.metrics.bootstrap import percentile_interval, resample_counts, weighted_mean
from vlx.metrics.registry import JSON, METRICS, NO_INTERVAL, Metric, row_metrics, shown

if TYPE_CHECKING:
    from vlx.run.records import Prediction


@dataclass(frozen=True)
class MetricValue:
    """One metric's value.

    Attributes:
        name: the metric (a key of `registry.METRICS`, or a name a newer vlx wrote).
        value: the number (an int for a count), None where it is undefined.
        interval: (low, high), None where none was drawn.
        n: the items it covers, where metrics.json counts them.
        level: the interval's coverage (0.95).
        drawn: how the interval was drawn (a key of `registry.INTERVALS`).
    """

    name: str
    value: float | int | None
    interval: tuple[float, float] | None = None
    n: int | None = None
    level: float | None = None
    drawn: str = NO_INTERVAL

    @property
    def metric(self) -> Metric | None:
        """The registry's entry for this value, or None for a name it does not know."""
        return METRICS.get(self.name)

    def to_json(self) -> dict[str, Any]:
        """metrics.json's keys: `<name>`, and `<name>_ci` for a metric that has an interval."""
        out: dict[str, Any] = {self.name: self.value}
        metric = self.metric
        if metric is None or metric.interval != NO_INTERVAL:
            out[f"{self.name}_ci"] = list(self.interval) if self.interval is not None else None
        if metric is not None and metric.item_score is not None and metric.count_key:
            out[metric.count_key] = self.n  # a row metric's count is its own
        return out

    def text(self) -> str:
        """The value to 4 decimals (a count as it is), its interval in brackets where there is one."""
        value = f"{self.value:.4f}" if isinstance(self.value, float) else str(self.value)
        if self.interval is not None:
            value += f"  [{self.interval[0]:.4f}, {self.interval[1]:.4f}]"
        return value


def read_values(metrics: Mapping[str, Any], where: str = JSON) -> dict[str, MetricValue]:
    """The declared metrics that show in `where` and are present in a metrics.json's content, in table order.

    Args:
        metrics: metrics.json as read (any vlx's: the keys are `<name>` and `<name>_ci`).
        where: registry.LOG, JSON, REPORT, COMPARE or WANDB.
    """
    level = (metrics.get("intervals") or {}).get("level") if isinstance(metrics.get("intervals"), Mapping) else None
    out = {}
    for metric in shown(where):
        if metric.name not in metrics:
            continue
        ci = metrics.get(f"{metric.name}_ci")
        n = metrics.get(metric.count_key) if metric.count_key else None
        out[metric.name] = MetricValue(
            metric.name,
            metrics[metric.name],
            (float(ci[0]), float(ci[1])) if ci else None,
            n if isinstance(n, int) else None,
            level if ci else None,
            metric.interval,
        )
    return out


def scalars(values: Mapping[str, MetricValue]) -> dict[str, float]:
    """The numbers among the values (what W&B's summary shows and a sweeper optimises); None left out."""
    return {
        k: v.value for k, v in values.items() if isinstance(v.value, (int, float)) and not isinstance(v.value, bool)
    }


def format_table(values: Mapping[str, MetricValue]) -> str:
    """Values as a two-column text table (eval's log), intervals where computed; undefined ones left out."""
    return "\n".join(f"  {k:<14} {v.text()}" for k, v in values.items() if v.value is not None)


def row_metric_values(rows: Sequence[Prediction], *, resamples: int, level: float, seed: int) -> dict[str, MetricValue]:
    """The registry's row metrics (`Metric.item_score`) of a run: each the mean over the rows it scores, with a
    percentile bootstrap interval over those rows (the draws of every other interval).

    Args:
        rows: the run's prediction rows.
        resamples: bootstrap resamples (0: no intervals).
        level: the intervals' coverage.
        seed: the bootstrap's seed.
    """
    out = {}
    for metric in row_metrics():
        assert metric.item_score is not None  # row_metrics() has only those
        scores = [metric.item_score(r) for r in rows]
        values = np.asarray([s for s in scores if s is not None], dtype=float)
        if not len(values):
            out[metric.name] = MetricValue(metric.name, None, None, 0, None, metric.interval)
            continue
        interval = None
        if resamples and metric.interval != NO_INTERVAL:
            found = percentile_interval(weighted_mean(resample_counts(len(values), resamples, seed), values), level)
            interval = (found[0], found[1]) if found else None
        out[metric.name] = MetricValue(
            metric.name, float(values.mean()), interval, len(values), level if interval else None, metric.interval
        )
    return out
