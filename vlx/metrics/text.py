"""Explanation metrics: BLEU-4, METEOR, ROUGE-L, CIDEr, SPICE, BERTScore and e-ViL's combined scores, with intervals.

Two protocols (`eval.protocol`), on the same scorers (pycocoevalcap 1.2's `Bleu(4)`, `Meteor()` (METEOR 1.5),
`Rouge()`, `Cider()`, SPICE 1.0, and BERTScore F1 from the `bert-score` package):

- `coco` (the default): the COCO caption evaluation's own way. Every candidate and reference first goes through
  pycocoevalcap's Stanford PTB tokenizer (lower-cased, punctuation dropped), then to the scorers. Scores are on the
  scorers' scales (0-1; CIDEr 0-10).
- `evil`: what e-ViL's released code (`src/nlg_eval.py` of Kayser et al. 2021) does. The raw strings go straight
  to the scorers, with no tokenizer: case and punctuation count ("horse." is not "horse"). The only change is that
  line breaks become spaces, which METEOR's line protocol needs. Scores are x100, as e-ViL's tables report them.
  e-ViL's reference handling per dataset (every reference for VQA-X, the first one elsewhere) is applied by the
  eval stage, which knows the task (`eval.evil_references`).

Both protocols score, as e-ViL does, the items whose label was predicted correctly (for VQA-X, the rule of
`eval.vqa_rule`: e-ViL's, any annotator's answer, or NLX-GPT's, the most common one; see vlx.tasks.answers.Scoring);
the same scores on all items carry an `all_` prefix. e-ViL's combined scores follow `get_average_nlg`:
`evil_avg_overlap` is the harmonic mean of METEOR, ROUGE-L, CIDEr and SPICE, and `evil_avg_all` its harmonic mean
with BERTScore F1. Where SPICE cannot run
(Stanford CoreNLP is not installed), they are means of the others and are named so: `evil_avg_overlap_no_spice`,
`evil_avg_all_no_spice`, with `evil_spice: false` beside them.

Every metric gets a percentile bootstrap interval, seeded (`eval.seed`), from the resamples of
`bootstrap.resample_counts`. The explanation metrics' intervals resample within their own set of items (the
correctly labelled ones for the e-ViL scores, every scored item for `all_`), and every metric of a resample is
that metric's corpus value on the items drawn: BLEU-4 from summed n-gram statistics, METEOR from its summed
statistics (one EVAL of METEOR 1.5 for all resamples), CIDEr as the mean of the items' CIDEr under the scored set's
document frequencies (see `corpus`), ROUGE-L, SPICE and BERTScore as means, the combined scores from the resample's
values.

Without Java (`eval.java=false`, for a machine where none can be installed) the protocols run without METEOR and
SPICE (None, so e-ViL's combined scores are None too), and `coco` tokenizes with vlx's Python imitation of the PTB
tokenizer (`vlx.metrics.python_tokenizer`, not the official one: BLEU-4, ROUGE-L and CIDEr can differ a little). Such
scores carry the protocol `coco_no_java` or `evil_no_java` in metrics.json, so no one takes them for the official
numbers, and stage=compare compares them only with runs scored the same way.

Text clean-up (checked against METEOR 1.5, the PTB tokenizer of pycocoevalcap and bert_score 0.3.13): under `coco`
every string has its whitespace collapsed to single spaces (a newline, or any Unicode line separator, splits a line
in the PTB tokenizer, misaligning every later item, and breaks the METEOR stdin protocol). Empty strings are not
sent to the tokenizer (it drops a trailing empty line) and stay "", which METEOR, ROUGE-L, CIDEr and BLEU handle (0
for the item). bert_score crashes on "" under transformers 5, so empty strings are kept out of it and get the raw F1
of 0 it would give them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlx.errors import ConfigError, DataError
from vlx.metrics.bertscore import BertScoreSettings, bertscore_cleaned, bertscore_record, bertscore_setup
from vlx.metrics.bootstrap import percentile_interval, resample_counts, weighted_mean
from vlx.metrics.cider import CiderItems
from vlx.metrics.coco import bleu_stats, corpus_bleu4, prepare, tokenize_all
from vlx.metrics.meteor import Meteor, corpus_scores, stats_matrix
from vlx.metrics.registry import DEFAULT_PROTOCOL, EXPLANATION_SCALE, NO_JAVA, NO_SPICE
from vlx.metrics.spice import spice_per_item

logger = logging.getLogger(__name__)

PROTOCOLS = (DEFAULT_PROTOCOL, "evil")
# what `corpus` computes per item set (the registry declares how each shows)
COCO_KEYS = ("bleu4", "meteor", "rouge_l", "cider", "spice")
METRIC_KEYS = (*COCO_KEYS, "bertscore_f1")
# e-ViL's overlap average (get_average_nlg's chosen_metrics)
EVIL_OVERLAP_KEYS = ("meteor", "rouge_l", "cider", "spice")


def combined_name(key: str, with_spice: bool) -> str:
    """The name of an e-ViL combined score ("evil_avg_all", "evil_global"): `_no_spice` added where SPICE is
    missing from it."""
    return key if with_spice else key + NO_SPICE


def check_protocol(protocol: str) -> None:
    """Refuses an unknown explanation protocol (ConfigError naming the choices)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"eval.protocol={protocol!r}: use coco (PTB-tokenised, as the COCO caption evaluation) or "
            "evil (the raw strings, as e-ViL's released code)"
        )


def protocol_text(
    candidates: Sequence[str], references: Sequence[Sequence[str] | str], protocol: str, java: bool = True
) -> tuple[list[str], list[list[str]]]:
    """Candidates and references as the protocol's scorers see them.

    coco: whitespace collapsed, then the PTB tokenizer (one Java run; without Java, vlx's Python imitation of it).
    evil: the raw strings, line breaks turned into spaces and nothing else.
    """
    check_protocol(protocol)
    if protocol == "evil":
        return prepare(candidates, references, clean=_one_line)
    cands, refs = prepare(candidates, references)
    if not java:
        from vlx.metrics.python_tokenizer import tokenize_all as python_tokenize

        return python_tokenize(cands), [python_tokenize(group) for group in refs]
    return tokenize_all(cands, refs) if cands else (cands, refs)


def _one_line(text: str) -> str:
    return " ".join(str(text).splitlines())


@dataclass
class ExplanationItems:
    """Per-item statistics of scored explanations, from which the corpus value of every metric follows for any
    weighting of the items (a subset, a bootstrap resample, the items two runs share).

    Attributes:
        protocol: "coco" or "evil".
        candidates, references: the text as the scorers saw it (PTB tokens under coco).
        bleu: `bleu_stats` rows (n, 10).
        meteor: METEOR statistics (`meteor.stats_matrix`, n x fields).
        rouge: ROUGE-L per item.
        bertscore: BERTScore F1 per item.
        spice: SPICE F per item, or None where SPICE did not run.
    """

    protocol: str
    candidates: list[str]
    references: list[list[str]]
    bleu: np.ndarray
    meteor: np.ndarray
    rouge: np.ndarray
    bertscore: np.ndarray
    spice: np.ndarray | None
    cider: CiderItems = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.cider = CiderItems(self.candidates, self.references)

    @property
    def n(self) -> int:
        """The number of items."""
        return len(self.candidates)

    @property
    def scale(self) -> float:
        """The protocol's scale for explanation metrics (e-ViL's are x100)."""
        return EXPLANATION_SCALE.get(self.protocol.removesuffix(NO_JAVA), 1.0)

    @property
    def java(self) -> bool:
        """Whether the items were scored with Java (METEOR statistics, the official tokenizer)."""
        return not self.protocol.endswith(NO_JAVA)

    def to_rows(self) -> list[dict[str, Any]]:
        """One JSON-able row per item (what `from_rows` reads back)."""
        return [
            {
                "candidate": c,
                "references": r,
                "bleu": b.tolist(),
                "meteor": m.tolist(),
                "rouge_l": float(ro),
                "bertscore_f1": float(f),
                "spice": None if self.spice is None or math.isnan(self.spice[i]) else float(self.spice[i]),
            }
            for i, (c, r, b, m, ro, f) in enumerate(
                zip(self.candidates, self.references, self.bleu, self.meteor, self.rouge, self.bertscore, strict=True)
            )
        ]

    @classmethod
    def from_rows(cls, protocol: str, rows: Sequence[dict[str, Any]], with_spice: bool) -> ExplanationItems:
        """The items' statistics as the per-item rows of a previous run hold them."""
        width = len(rows[0]["meteor"]) if rows else 23
        return cls(
            protocol,
            [r["candidate"] for r in rows],
            [list(r["references"]) for r in rows],
            np.asarray([r["bleu"] for r in rows], dtype=np.int64).reshape(len(rows), 10),
            np.asarray([r["meteor"] for r in rows], dtype=float).reshape(len(rows), width),
            np.asarray([r["rouge_l"] for r in rows], dtype=float),
            np.asarray([r["bertscore_f1"] for r in rows], dtype=float),
            np.asarray([math.nan if r["spice"] is None else r["spice"] for r in rows], dtype=float)
            if with_spice
            else None,
        )


def open_meteor(n: int, java: bool = True) -> Meteor | None:
    """A METEOR process for n items; None without Java (eval.java=false: no METEOR)."""
    # generous: 14,740 items take ~14 s; the limit only stops a stuck JVM
    return Meteor(timeout_s=600 + n / 10) if java else None


def close_meteor(meteor: Meteor | None) -> None:
    """Closes a METEOR process from `open_meteor` (None: nothing to close)."""
    if meteor is not None:
        meteor.close()


def score_items(
    candidates: Sequence[str],
    references: Sequence[Sequence[str] | str],
    settings: BertScoreSettings | None,
    meteor: Meteor | None,
    *,
    protocol: str = DEFAULT_PROTOCOL,
    spice: bool = True,
    spice_jar: str | None = None,
    notes: list[str] | None = None,
    timings: dict[str, float] | None = None,
) -> ExplanationItems:
    """Every item's statistics for every metric, computed once (the slow part: Java, BERTScore, SPICE).

    Args:
        candidates: the model's explanation per item (raw text).
        references: one or more reference explanations per item.
        settings: BERTScore settings; None leaves BERTScore out (NaN).
        meteor: an open METEOR process (`open_meteor`), also used later for corpus scores; None: no Java (no
            METEOR or SPICE, and `coco` tokenizes in Python): the items' protocol is named `<protocol>_no_java`.
        protocol: "coco" or "evil" (see the module docstring).
        spice: try SPICE.
        spice_jar: `eval.spice_jar` (None = pycocoevalcap's copy).
        notes: gets plain sentences (SPICE skipped, empty strings).
        timings: gets seconds per step.
    """
    notes = [] if notes is None else notes
    timings = {} if timings is None else timings
    # a wrong BERTScore setting fails before minutes of Java work
    setup = bertscore_setup(settings) if settings is not None else None
    start = time.perf_counter()
    java = meteor is not None
    cands, refs = protocol_text(candidates, references, protocol, java=java)
    timings["tokenize"] = time.perf_counter() - start
    raw_c, raw_r = prepare(candidates, references)  # whitespace collapsed, nothing else
    empty_c = sum(1 for c in raw_c if not c)
    if empty_c:
        notes.append(f"{empty_c} of {len(cands)} candidate explanations are empty; each scores 0 (raw) on every metric")
    empty_r = sum(1 for group in raw_r if not any(group))
    if empty_r:
        notes.append(f"{empty_r} of {len(cands)} items have only empty references")

    start = time.perf_counter()
    bleu = bleu_stats(cands, refs)
    timings["bleu"] = time.perf_counter() - start
    start = time.perf_counter()
    met = np.zeros((len(cands), 23 if java else 0))
    if cands and meteor is not None:
        met = stats_matrix(meteor.stats(cands, refs))
    timings["meteor"] = time.perf_counter() - start
    start = time.perf_counter()
    from pycocoevalcap.rouge.rouge import Rouge

    rouge = Rouge()
    # ROUGE-L of an item depends on that item alone, and pycocoevalcap's corpus score is the plain mean
    rouge_items = np.asarray([rouge.calc_score([c], r) for c, r in zip(cands, refs, strict=True)], dtype=float)
    timings["rouge"] = time.perf_counter() - start
    start = time.perf_counter()
    spice_items = spice_per_item(cands, refs, notes, spice_jar) if spice and cands and java else None
    if spice_items is not None and np.isnan(spice_items).any():
        notes.append(
            f"spice: {int(np.isnan(spice_items).sum())} items have no SPICE score, so SPICE is NaN (as in "
            "pycocoevalcap) and left out of the combined scores"
        )
    timings["spice"] = time.perf_counter() - start
    start = time.perf_counter()
    f1 = np.full(len(cands), np.nan)
    if settings is not None:
        # BERTScore reads the raw text under both protocols (its own tokenizer; whitespace runs mean nothing to it)
        f1 = bertscore_cleaned(raw_c, raw_r, settings, setup)
    timings["bertscore"] = time.perf_counter() - start
    if not java:
        notes.append(
            "scored without Java (eval.java=false): no METEOR or SPICE, so e-ViL's combined scores are None"
            + (
                "; tokenized by vlx's Python imitation of the PTB tokenizer, not the official one"
                if protocol == "coco"
                else ""
            )
            + f"; the protocol is named {protocol}{NO_JAVA}"
        )
    return ExplanationItems(
        protocol if java else protocol + NO_JAVA, cands, refs, bleu, met, rouge_items, f1, spice_items
    )


def _harmonic_mean(values: Sequence[float | None]) -> float | None:
    """Harmonic mean; 0 if a value is 0 (its limit), None if one is missing, negative or there are none."""
    present = [v for v in values if v is not None]
    if not values or len(present) < len(values) or any(math.isnan(v) or v < 0 for v in present):
        return None
    if any(v == 0 for v in present):
        return 0.0
    return len(present) / sum(1.0 / v for v in present)


def _harmonic_rows(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Row-wise `_harmonic_mean` of equally long arrays (NaN where it is None)."""
    stacked = np.vstack(columns).T if len(columns) else np.zeros((0, 0))
    out = np.full(len(stacked), np.nan)
    ok = ~(np.isnan(stacked) | (stacked < 0)).any(axis=1)
    zero = ok & (stacked == 0).any(axis=1)
    rest = ok & ~zero
    out[zero] = 0.0
    out[rest] = stacked.shape[1] / (1.0 / stacked[rest]).sum(axis=1)
    return out


def corpus(
    items: ExplanationItems, counts: np.ndarray, meteor: Meteor | None, idf_from: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Every explanation metric's corpus value for each weighting of the items (rows of counts, shape (R, n)),
    on the protocol's scale: METRIC_KEYS, and the combined scores under their names (`_no_spice` without SPICE).

    CIDEr's document frequencies come from the references of the items in `idf_from` (weights; default: the items
    of the first row, i.e. the scored set when that row is the point value) and are held fixed for every row, so
    a resample's CIDEr is the mean of the items' CIDEr drawn. Recomputing them per resample would count the n-grams
    of an item drawn twice twice, which lowers every resample's CIDEr: on the 14,740-item e-SNLI-VE bench the
    point value 4.689 sat near the top of that interval, [4.591, 4.718].
    """
    counts = np.atleast_2d(counts)
    scale, with_spice = items.scale, items.spice is not None
    cider_items = items.cider.item_scores(counts[0] if idf_from is None else idf_from)
    out = {
        "bleu4": np.asarray(
            [corpus_bleu4(s) if c.sum() else np.nan for s, c in zip(counts @ items.bleu, counts, strict=True)]
        ),
        "meteor": corpus_scores(meteor, items.meteor, counts)
        if meteor is not None and items.java
        else np.full(len(counts), np.nan),
        "rouge_l": weighted_mean(counts, items.rouge),
        "cider": weighted_mean(counts, cider_items),
        "spice": weighted_mean(counts, items.spice) if items.spice is not None else np.full(len(counts), np.nan),
        "bertscore_f1": weighted_mean(counts, items.bertscore),
    }
    used = [k for k in EVIL_OVERLAP_KEYS if k != "spice" or with_spice]
    overlap = _harmonic_rows([out[k] for k in used])
    out[combined_name("evil_avg_overlap", with_spice)] = overlap
    out[combined_name("evil_avg_all", with_spice)] = _harmonic_rows([overlap, out["bertscore_f1"]])
    return {k: v * scale for k, v in out.items()}


def _value(values: np.ndarray) -> float | None:
    value = float(values[0])
    return None if math.isnan(value) else value


def summarise(
    items: ExplanationItems,
    correct: Sequence[bool],
    meteor: Meteor | None,
    *,
    labelled: bool = True,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """The explanation metrics of metrics.json, with an interval for every one.

    Args:
        items: from `score_items`.
        correct: whether each item's label was predicted correctly (e-ViL scores only those).
        meteor: the open METEOR process.
        labelled: the task has labels to be right about; False (HatReD) leaves the correct-only scores None and
            `evil_global` out.
        resamples: bootstrap resamples (0: no intervals).
        level: the intervals' coverage.
        seed: the bootstrap's seed.
        notes: gets plain sentences.

    Returns:
        bleu4, meteor, rouge_l, cider, spice, bertscore_f1 and their `all_` versions, each with `<key>_ci`;
        evil_avg_overlap, evil_avg_all, evil_global (with `_no_spice` where SPICE is missing) and its weight
        `evil_weight` (the share of items marked correct), `evil_avg_overlap_of`,
        `evil_spice`; `n_explained_correct`, `n_explained_all`; `protocol` and `explanation_scale`.
    """
    notes = [] if notes is None else notes
    mask = np.asarray([bool(c) for c in correct], dtype=bool)
    if len(mask) != items.n:
        raise DataError(f"{items.n} candidate explanations but {len(mask)} correctness flags")
    n, with_spice = items.n, items.spice is not None
    idx_correct = np.flatnonzero(mask)
    out: dict[str, Any] = {
        "protocol": items.protocol,
        "explanation_scale": items.scale,
        "evil_spice": with_spice,
        "n_explained_correct": int(len(idx_correct)),
        "n_explained_all": n,
    }
    names = [*METRIC_KEYS, combined_name("evil_avg_overlap", with_spice), combined_name("evil_avg_all", with_spice)]
    used = [k for k in EVIL_OVERLAP_KEYS if k != "spice" or with_spice]
    # without labels (HatReD) no item is correct: the e-ViL scores are None, the all_ ones cover every item
    sets = [("all_", np.arange(n)), ("", idx_correct if labelled else idx_correct[:0])]
    for prefix, idx in sets:
        out[prefix + "evil_avg_overlap_of"] = used
        if not len(idx):
            out.update({prefix + k: None for k in names} | {f"{prefix}{k}_ci": None for k in names})
            continue
        point = np.zeros((1, n), dtype=np.int32)
        point[0, idx] = 1
        draws = np.zeros((max(resamples, 0), n), dtype=np.int32)
        draws[:, idx] = resample_counts(len(idx), resamples, seed)
        values = corpus(items, np.vstack([point, draws]), meteor)
        for key in names:
            out[prefix + key] = _value(values[key])
            out[f"{prefix}{key}_ci"] = percentile_interval(values[key][1:], level) if resamples else None
    if labelled and n:
        _global(out, items, mask, meteor, resamples, level, seed)
    if labelled and n and not len(idx_correct):
        notes.append(
            "no item has a correctly predicted label: the e-ViL explanation scores (correct items only) are "
            "undefined; the all_ scores cover every item"
        )
    if not with_spice and items.java:
        notes.append(
            "SPICE did not run, so e-ViL's combined scores are means of METEOR, ROUGE-L and CIDEr (and BERTScore): "
            "they are named evil_*_no_spice and are not comparable with published ones"
        )
    if any(v is not None and v < 0 for v in (out.get("bertscore_f1"), out.get("all_bertscore_f1"))):
        notes.append("BERTScore F1 is negative (rescaled): e-ViL's harmonic mean with it is undefined")
    return out


def _global(
    out: dict[str, Any],
    items: ExplanationItems,
    mask: np.ndarray,
    meteor: Meteor | None,
    resamples: int,
    level: float,
    seed: int,
) -> None:
    """e-ViL's global score, accuracy x avg_all, and its interval: the bootstrap draws over all scored items, and
    each resample's accuracy multiplies the avg_all of its own correctly labelled items (the `all_` version: of all
    its items)."""
    with_spice = items.spice is not None
    avg_all, name = combined_name("evil_avg_all", with_spice), combined_name("evil_global", with_spice)
    # e-ViL's weight is the share of items whose explanation is scored (eUG.py's nlg_weight): the accuracy for a
    # classification task; for VQA-X the share answered as any annotator did, not the soft-score accuracy
    accuracy = float(mask.mean())
    out["evil_weight"] = accuracy
    draws = resample_counts(items.n, resamples, seed)
    acc = draws @ mask / items.n
    for prefix, weights in (("", draws * mask), ("all_", draws)):
        point = out.get(prefix + avg_all)
        out[prefix + name] = None if point is None else point * accuracy
        if not resamples or point is None:
            out[f"{prefix}{name}_ci"] = None
            continue
        idf_from = mask.astype(float) if prefix == "" else np.ones(items.n)
        values = corpus(items, weights, meteor, idf_from=idf_from)[avg_all]
        out[f"{prefix}{name}_ci"] = percentile_interval(values * acc, level)


def explanation_metrics(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    correct: Sequence[bool],
    settings: BertScoreSettings,
    *,
    protocol: str = DEFAULT_PROTOCOL,
    spice: bool = True,
    spice_jar: str | None = None,
    labelled: bool = True,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    timings: dict[str, float] | None = None,
    java: bool = True,
) -> tuple[dict[str, Any], list[str]]:
    """The explanation metrics of a set of items, each with its interval (`score_items`, then `summarise`).

    Args:
        candidates: the model's explanation per item (raw text).
        references: one or more reference explanations per item.
        correct: whether the item's label was predicted correctly; e-ViL scores explanations only on those items.
        settings: BERTScore settings.
        protocol: "coco" or "evil" (`score_items`).
        spice: try SPICE (`score_items`).
        spice_jar: `eval.spice_jar` (`score_items`).
        labelled: the task has labels to be right about (`summarise`).
        resamples: bootstrap resamples (0: no intervals).
        level: the intervals' coverage.
        seed: the bootstrap's seed.
        timings: if given, filled with seconds per step.
        java: False scores without Java (see the module docstring).

    Returns:
        (metrics, notes): `summarise`'s metrics plus `bertscore` (what BERTScore was computed with); notes are
        plain sentences for the report.
    """
    timings = {} if timings is None else timings
    t_total = time.perf_counter()
    notes: list[str] = []
    if len(correct) != len(candidates):
        raise DataError(f"{len(candidates)} candidate explanations but {len(correct)} correctness flags")
    meteor = open_meteor(len(candidates), java)
    try:
        items = score_items(
            candidates,
            references,
            settings,
            meteor,
            protocol=protocol,
            spice=spice,
            spice_jar=spice_jar,
            notes=notes,
            timings=timings,
        )
        start = time.perf_counter()
        out = summarise(
            items, correct, meteor, labelled=labelled, resamples=resamples, level=level, seed=seed, notes=notes
        )
        timings["corpus_and_intervals"] = time.perf_counter() - start
    finally:
        close_meteor(meteor)
    out["bertscore"] = bertscore_record(settings)
    if not candidates:
        notes.append("no items to score: explanation metrics are undefined")
    timings["total"] = time.perf_counter() - t_total
    logger.info(
        "explanation metrics (%s) on %d items (%d correct) in %.1f s: %s",
        protocol,
        len(candidates),
        out["n_explained_correct"],
        timings["total"],
        ", ".join(f"{k} {v:.1f}s" for k, v in timings.items() if k != "total"),
    )
    return out, notes


def coco_scores(
    candidates: list[str],
    references: list[list[str]],
    spice: bool = True,
    protocol: str = DEFAULT_PROTOCOL,
    java: bool = True,
) -> tuple[dict[str, float | None], list[str]]:
    """Corpus BLEU-4, METEOR, ROUGE-L, CIDEr and SPICE of all the items, without BERTScore or intervals.

    Returns:
        ({bleu4, meteor, rouge_l, cider, spice}, notes) on the protocol's scale; spice is None when skipped, all
        are None for no items.
    """
    if not candidates:
        return dict.fromkeys(COCO_KEYS), ["no items to score"]
    notes: list[str] = []
    meteor = open_meteor(len(candidates), java)
    try:
        items = score_items(candidates, references, None, meteor, protocol=protocol, spice=spice, notes=notes)
        values = corpus(items, np.ones((1, items.n), dtype=np.int32), meteor)
    finally:
        close_meteor(meteor)
    return {k: _value(values[k]) for k in COCO_KEYS}, notes


def item_metrics(items: ExplanationItems) -> dict[str, np.ndarray]:
    """Per-item scores on the protocol's scale (what a human rating is correlated with, what the review page sorts
    by): sentence BLEU-4 (the corpus formula on the item alone), ROUGE-L, CIDEr (the scored items' document
    frequencies), BERTScore F1 and SPICE where it ran. METEOR is left out: an item's score needs a METEOR process."""
    out = {
        "bleu4": np.asarray([corpus_bleu4(row) for row in items.bleu], dtype=float),
        "rouge_l": items.rouge,
        "cider": items.cider.item_scores(np.ones(items.n)),
        "bertscore_f1": items.bertscore,
    }
    if items.spice is not None:
        out["spice"] = items.spice
    return {k: np.asarray(v, dtype=float) * items.scale for k, v in out.items()}


def run_item_metrics(path: Path, metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """id -> `item_metrics` of a scored run, from the per-item statistics stage=eval wrote (`path`, the run's
    `RunDir.explanation_items`; {} without it)."""
    from vlx.run.store import JsonlStore

    if not path.is_file() or "protocol" not in metrics:
        return {}
    rows = JsonlStore(path).rows()
    if not rows:
        return {}
    table = item_metrics(ExplanationItems.from_rows(metrics["protocol"], rows, bool(metrics.get("evil_spice"))))
    return {str(r["id"]): {k: float(v[i]) for k, v in table.items() if math.isfinite(v[i])} for i, r in enumerate(rows)}
