"""Every number vlx reports, declared once: its name, which way is better, its scale per protocol, how its interval
is drawn and where it shows.

The eval stage's log table, metrics.json's scalars, the report's columns, the compare table and W&B's summary all
iterate `METRICS`, in its order. A metric that is a mean over prediction rows needs nothing but its entry here: give
it an `item_score` (a function of one prediction row, None where it does not apply) and the eval stage writes it
with its bootstrap interval, stage=compare tests it paired, the report shows it and W&B gets it:

    register(Metric("explanation_words", "Explanation words", higher_is_better=None, interval=ITEMS,
                    shows=EVERYWHERE, item_score=lambda row: len((row.explanation or "").split())))

Metrics computed by a family's own code (classification, calibration, explanations, judge, human ratings) are
declared here and computed in their modules (vlx.metrics.classification, calibration, text, judge_scores;
vlx.run.ratings), which write the same names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlx.run.records import Prediction

# where a metric shows
LOG = "log"  # eval's log table
JSON = "json"  # metrics.json (every declared name; the flag says the eval stage writes it)
REPORT = "report"  # a column of stage=report's results table
COMPARE = "compare"  # a row of stage=compare's table (paired difference)
WANDB = "wandb"  # W&B's summary (and what a sweeper may optimise)
EVERYWHERE = frozenset({LOG, JSON, REPORT, COMPARE, WANDB})

# how a metric's interval (`<name>_ci` in metrics.json) is drawn; the keys are what `Metric.interval` names
ITEMS = "items"
CORRECT_ITEMS = "correct_items"
SCORED_ITEMS = "scored_items"
GLOBAL = "global"
NO_INTERVAL = "none"
INTERVALS = {
    ITEMS: "percentile bootstrap over the items, resampled with replacement",
    CORRECT_ITEMS: "percentile bootstrap within the correctly labelled items the score covers",
    SCORED_ITEMS: "percentile bootstrap within every scored item",
    GLOBAL: "percentile bootstrap over all scored items: each resample's accuracy times the avg_all of its own "
    "correctly labelled items",
    NO_INTERVAL: "no interval",
}

# the protocol eval.protocol defaults to, and the scale of explanation scores under each protocol (e-ViL's tables
# give every explanation score x100; the COCO caption evaluation's are on the scorers' own 0-1 scale, CIDEr 0-10)
DEFAULT_PROTOCOL = "coco"
EXPLANATION_SCALE = {"coco": 1.0, "evil": 100.0}
NO_SPICE = "_no_spice"  # the suffix of a combined score computed without SPICE
NO_JAVA = "_no_java"  # the suffix of a protocol scored without Java (eval.java=false)
ALL = "all_"  # the prefix of an explanation, judge or human score over every item, not the correct ones only


def protocol_of(settings: Mapping[str, Any]) -> str:
    """`eval.protocol` of the eval settings (coco where a caller's settings leave it out)."""
    return str(settings.get("protocol", DEFAULT_PROTOCOL))


ItemScore = Callable[["Prediction"], "float | None"]


@dataclass(frozen=True)
class Metric:
    """One number of metrics.json.

    Attributes:
        name: its key in metrics.json (`<name>_ci` holds its interval) and everywhere else.
        title: the report's column title.
        higher_is_better: True, False (ECE, Brier, NLL, the unparsed rate) or None (a count, a weight).
        interval: how its interval is drawn, a key of INTERVALS (NO_INTERVAL: none).
        shows: where it shows (LOG, JSON, REPORT, COMPARE, WANDB).
        scale: protocol -> factor from the scorers' own scale (explanation scores x100 under evil); 1 elsewhere.
        n_key: the metrics.json count of the items it covers ("n", "n_explained_correct", ...); a row metric's
            is `<name>_n`, written beside it.
        item_score: for a mean over prediction rows: the row's value (None: left out); the eval stage computes it,
            with its interval, and stage=compare tests it paired. None for metrics a family's module computes.
    """

    name: str
    title: str
    higher_is_better: bool | None = True
    interval: str = ITEMS
    shows: frozenset[str] = EVERYWHERE
    scale: Mapping[str, float] = field(default_factory=dict)
    n_key: str | None = None
    item_score: ItemScore | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.interval not in INTERVALS:
            raise ValueError(f"metric {self.name}: interval {self.interval!r} is not one of {', '.join(INTERVALS)}")

    @property
    def count_key(self) -> str | None:
        """The metrics.json key of the number of items it covers."""
        return self.n_key or (f"{self.name}_n" if self.item_score is not None else None)

    @property
    def is_count(self) -> bool:
        """A count or a weight: no direction, no interval."""
        return self.higher_is_better is None and self.interval == NO_INTERVAL

    def scale_for(self, protocol: str | None) -> float:
        """The factor of this metric's values under `protocol` (`coco_no_java` scales as `coco`)."""
        return self.scale.get(str(protocol or DEFAULT_PROTOCOL).removesuffix(NO_JAVA), 1.0)


def _count(name: str, shows: frozenset[str] = frozenset({JSON, WANDB})) -> Metric:
    return Metric(name, name, higher_is_better=None, interval=NO_INTERVAL, shows=shows)


def _explanation(name: str, title: str, shows: frozenset[str], interval: str = CORRECT_ITEMS) -> Metric:
    """An e-ViL score on the correctly labelled items, or (an `all_` name) on every scored item."""
    every = name.startswith(ALL)
    return Metric(
        name,
        f"{title} (all items)" if every else title,
        interval=SCORED_ITEMS if every and interval == CORRECT_ITEMS else interval,
        shows=shows,
        scale=EXPLANATION_SCALE,
        n_key="n_explained_all" if every else "n_explained_correct",
    )


def _combined(name: str, title: str, shows: frozenset[str], interval: str = CORRECT_ITEMS) -> tuple[Metric, Metric]:
    """An e-ViL combined score, with SPICE and without (`_no_spice`)."""
    return (
        _explanation(name, title, shows, interval),
        _explanation(name + NO_SPICE, f"{title} (no SPICE)", shows, interval),
    )


_TABLE = frozenset({LOG, JSON, COMPARE, WANDB})  # every place but the report's columns
_QUIET = frozenset({JSON, COMPARE, WANDB})  # compared, not in the log table or the report

# the declarations, in the order every table shows them
_DECLARED: tuple[Metric, ...] = (
    _count("n", frozenset({LOG, JSON, REPORT, WANDB})),
    _count("predictions"),
    # classification (vlx.metrics.classification)
    Metric("accuracy", "Accuracy", n_key="n"),
    Metric("any_answer_accuracy", "Any-answer accuracy", shows=frozenset({JSON, WANDB}), n_key="n"),
    Metric(
        "accuracy_unparsed_wrong",
        "Accuracy (unparsed wrong)",
        interval=NO_INTERVAL,
        shows=frozenset({JSON, WANDB}),
        n_key="n",
    ),
    Metric("macro_f1", "Macro-F1", n_key="n"),
    Metric("auroc", "AUROC", n_key="n"),
    Metric("binary_f1", "Binary F1", n_key="n"),
    _count("repeated_option_items"),
    _count("guessed"),
    # calibration (vlx.metrics.calibration)
    Metric("ece", "ECE", higher_is_better=False, n_key="n"),
    Metric("brier", "Brier", higher_is_better=False, n_key="n"),
    Metric("nll", "NLL", higher_is_better=False, shows=_TABLE, n_key="n"),
    _count("ece_bins"),
    # explanations (vlx.metrics.text): e-ViL's scores on the correctly labelled items
    _explanation("bleu4", "BLEU-4", EVERYWHERE),
    _explanation("meteor", "METEOR", EVERYWHERE),
    _explanation("rouge_l", "ROUGE-L", EVERYWHERE),
    _explanation("cider", "CIDEr", EVERYWHERE),
    _explanation("spice", "SPICE", _TABLE),
    _explanation("bertscore_f1", "BERTScore", EVERYWHERE),
    *_combined("evil_avg_overlap", "e-ViL avg overlap", _QUIET),
    *_combined("evil_avg_all", "e-ViL avg all", _TABLE),
    *_combined("evil_global", "e-ViL global", EVERYWHERE, interval=GLOBAL),
    Metric(
        "evil_weight", "e-ViL weight", higher_is_better=None, interval=NO_INTERVAL, shows=frozenset({LOG, JSON, WANDB})
    ),
    # the same on every scored item
    _explanation(ALL + "bleu4", "BLEU-4", _TABLE),
    _explanation(ALL + "meteor", "METEOR", _TABLE),
    _explanation(ALL + "rouge_l", "ROUGE-L", _TABLE),
    _explanation(ALL + "cider", "CIDEr", _TABLE),
    _explanation(ALL + "spice", "SPICE", _QUIET),
    _explanation(ALL + "bertscore_f1", "BERTScore", _TABLE),
    *_combined(ALL + "evil_avg_overlap", "e-ViL avg overlap", _QUIET),
    *_combined(ALL + "evil_avg_all", "e-ViL avg all", _QUIET),
    *_combined(ALL + "evil_global", "e-ViL global", _QUIET, interval=GLOBAL),
    _count("n_with_references"),
    _count("n_without_references"),
    _count("n_explained_correct"),
    _count("n_explained_all"),
    _count("explanation_scale"),
    # the judge's verdicts (vlx.metrics.judge_scores; stage=judge writes them into metrics.json)
    Metric("judge_score", "Judge S_E", n_key="judge_n"),
    Metric(ALL + "judge_score", "Judge S_E (all items)", shows=_TABLE, n_key=ALL + "judge_n"),
    _count("judge_n"),
    _count(ALL + "judge_n"),
    # human ratings (vlx.run.ratings, from stage=review)
    Metric("human_score", "Human S_E", shows=frozenset({LOG, JSON, REPORT, WANDB}), n_key="human_n"),
    Metric(ALL + "human_score", "Human S_E (all items)", shows=frozenset({LOG, JSON, WANDB}), n_key=ALL + "human_n"),
    _count("human_n"),
    _count(ALL + "human_n"),
    _count("human_ratings"),
    # last in the tables: how many answers could not be parsed
    Metric("unparsed_rate", "Unparsed", higher_is_better=False, shows=frozenset({LOG, JSON, REPORT, WANDB}), n_key="n"),
)

METRICS: dict[str, Metric] = {m.name: m for m in _DECLARED}


def register(metric: Metric) -> Metric:
    """Adds a metric (a plugin's, a test's) after the declared ones.

    Raises:
        ValueError: a metric of that name is already declared.
    """
    if metric.name in METRICS:
        raise ValueError(f"a metric named {metric.name!r} is already declared")
    METRICS[metric.name] = metric
    return metric


def unregister(name: str) -> None:
    """Removes a metric `register` added."""
    METRICS.pop(name, None)


@contextmanager
def registered(metric: Metric) -> Iterator[Metric]:
    """The metric registered for the duration of a `with` block."""
    register(metric)
    try:
        yield metric
    finally:
        unregister(metric.name)


def shown(where: str) -> list[Metric]:
    """The metrics that show in `where` (LOG, JSON, REPORT, COMPARE, WANDB), in table order."""
    return [m for m in METRICS.values() if where in m.shows]


def row_metrics() -> list[Metric]:
    """The metrics the eval stage computes as means of a function over prediction rows."""
    return [m for m in METRICS.values() if m.item_score is not None]


def lower_is_better(names: list[str] | set[str] | dict[str, Any]) -> list[str]:
    """Those of `names` that are declared lower-is-better, in table order."""
    return [m.name for m in METRICS.values() if m.higher_is_better is False and m.name in names]


def in_table_order(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`values` (name -> anything) in table order, keeping those that show in `where`; names not declared follow
    in their own order, so nothing computed is lost."""
    ordered = {m.name: values[m.name] for m in shown(where) if m.name in values}
    return ordered | {k: v for k, v in values.items() if k not in METRICS}


def intervals_record(resamples: int, level: float, seed: int) -> dict[str, Any]:
    """How every `<metric>_ci` of metrics.json was drawn, for the report and for readers of the file."""
    return {
        "method": "percentile bootstrap over items",
        "resamples": resamples,
        "level": level,
        "seed": seed,
        "classification": "items resampled with replacement from all labelled items",
        "explanations": "resampled within the items each score covers: the correctly labelled items for the e-ViL "
        "scores (bleu4, ..., evil_avg_all), every scored item for all_*; each resample's corpus score is "
        "recomputed (BLEU and METEOR from summed statistics; CIDEr as the mean item CIDEr, document frequencies "
        "held at the scored set's)",
        "evil_global": "resampled over all scored items: each resample's accuracy times the avg_all of its own "
        "correctly labelled items",
    }
