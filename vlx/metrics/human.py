"""Human ratings scored: e-ViL's human score and the agreement of raters, judge and automatic metrics.

e-ViL's human score S_E (Kayser et al. 2021) is the mean item score (yes 1, weak yes 2/3, weak no 1/3, no 0) over
the rated items whose label was predicted correctly; an item rated by several raters counts with the mean of their
scores. `all_human_score` covers every rated item. Agreement between raters: Cohen's kappa for two, Fleiss' kappa
for any number (both on the four answers as categories); between the judge (`stage=judge`) and the humans: Cohen's
kappa of the judge's verdict and each rater's, and the Spearman correlation of the judge's item score with the mean
human score. Every automatic per-item metric gets its Spearman correlation with the mean human score. The ratings
themselves are read from a run's ratings.jsonl by `vlx.run.ratings.RatingStore`.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vlx.errors import DataError
from vlx.metrics.bootstrap import percentile_interval, resample_counts, weighted_mean
from vlx.run.records import VERDICT_SCORES, VERDICTS

# metrics.json's note beside a kappa of None where the ratings used a single category
KAPPA_UNDEFINED = (
    "undefined: every rating compared is the same category, so chance agreement is 1 and kappa is "
    "0 / 0 (scikit-learn's cohen_kappa_score and statsmodels' fleiss_kappa give NaN)"
)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' categories on the same items, as scikit-learn's `cohen_kappa_score`.

    None for no items, and None where kappa is undefined: both raters used one and the same category only, so the
    agreement expected by chance is 1 and kappa is 0 / 0 (scikit-learn gives NaN there; `KAPPA_UNDEFINED` says why
    in metrics.json).
    """
    if not a:
        return None
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[c] * cb[c] for c in set(ca) | set(cb)) / n**2
    if expected == 1:  # only when both used one and the same category (then observed == 1 too)
        return None
    return (observed - expected) / (1 - expected)


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa of a (items, categories) table of how many raters chose each category, every item rated by the
    same number (>= 2) of raters, as statsmodels' `fleiss_kappa`.

    None for a table that is not one (no items, fewer than 2 raters or unequal numbers of raters), and None where
    kappa is undefined: every rating is the same category, so the agreement expected by chance is 1 and kappa is
    0 / 0 (statsmodels gives NaN there).
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or not len(counts):
        return None
    raters = counts.sum(axis=1)
    if raters.min() < 2 or raters.min() != raters.max():
        return None
    n, m = counts.shape[0], raters[0]
    p_item = ((counts * (counts - 1)).sum(axis=1)) / (m * (m - 1))
    p_cat = counts.sum(axis=0) / (n * m)
    p_bar, p_e = p_item.mean(), (p_cat**2).sum()
    if p_e == 1:  # one category only (then p_bar == 1 too)
        return None
    return float((p_bar - p_e) / (1 - p_e))


def _spearman(x: Sequence[float], y: Sequence[float]) -> dict[str, Any] | None:
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import spearmanr

    result = spearmanr(x, y)
    return {"rho": float(result.statistic), "p_value": float(result.pvalue), "n": len(x)}


def human_metrics(
    ratings: Mapping[tuple[str, str], str],
    correct: Mapping[str, bool],
    *,
    judge: Mapping[str, float | None] | None = None,
    item_metrics: Mapping[str, Mapping[str, float]] | None = None,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The human scores of metrics.json.

    Args:
        ratings: (rater, id) -> verdict (`RatingStore.latest`).
        correct: id -> whether the item's label was predicted correctly, for the items of the run.
        judge: id -> the judge's item score (`vlx.judging.verdicts.read_verdicts`), where the run was judged.
        item_metrics: id -> {metric: per-item value} (ROUGE-L, BERTScore, ...), for the correlations.
        resamples: bootstrap resamples of the score intervals (over rated items).
        level: the intervals' coverage.
        seed: the bootstrap's seed.

    Returns:
        human_score (S_E) and human_score_ci, all_human_score and its ci, human_n, all_human_n, human_raters,
        human_ratings, human_kappa (Cohen's for two raters, Fleiss' on the items every rater rated),
        human_judge_kappa, human_judge_spearman and human_metric_spearman ({metric: {rho, p_value, n}}).
    """

    unknown = sorted({i for _, i in ratings} - set(correct))
    if unknown:
        raise DataError(
            f"ratings name items the run does not have ({', '.join(unknown[:5])}): ratings.jsonl "
            "belongs to another run, or the predictions changed"
        )
    by_item: dict[str, dict[str, str]] = defaultdict(dict)
    for (rater, item), verdict in ratings.items():
        by_item[item][rater] = verdict
    ids = sorted(by_item)
    raters = sorted({r for r, _ in ratings})
    mean = np.asarray([np.mean([VERDICT_SCORES[v] for v in by_item[i].values()]) for i in ids], dtype=float)
    right = np.asarray([bool(correct[i]) for i in ids], dtype=bool)
    out: dict[str, Any] = {"human_raters": raters, "human_ratings": len(ratings)}
    draws = resample_counts(len(ids), resamples, seed) if ids else np.zeros((0, 0))
    for prefix, mask in (("", right), ("all_", np.ones(len(ids), dtype=bool))):
        out[f"{prefix}human_n"] = int(mask.sum())
        out[f"{prefix}human_score"] = float(mean[mask].mean()) if mask.any() else None
        out[f"{prefix}human_score_ci"] = (
            percentile_interval(weighted_mean(draws * mask, mean), level) if mask.any() and resamples else None
        )
    both = [i for i in ids if len(by_item[i]) == len(raters)]
    if len(raters) >= 2:
        given = [v for i in both for v in by_item[i].values()]
        if len(raters) == 2:
            value = cohen_kappa([by_item[i][raters[0]] for i in both], [by_item[i][raters[1]] for i in both])
            out["human_kappa"] = {"method": "Cohen", "items": len(both), "value": value}
        else:
            table = np.asarray([[sum(v == c for v in by_item[i].values()) for c in VERDICTS] for i in both])
            out["human_kappa"] = {"method": "Fleiss", "items": len(both), "value": fleiss_kappa(table)}
        if len(set(given)) == 1:
            out["human_kappa"]["note"] = KAPPA_UNDEFINED
    if judge:
        scored = {i: s for i in ids if (s := judge.get(i)) is not None}
        judged = list(scored)
        to_verdict = {s: v for v, s in VERDICT_SCORES.items()}
        pairs = [
            (
                [to_verdict[scored[i]] for i in judged if r in by_item[i]],
                [by_item[i][r] for i in judged if r in by_item[i]],
            )
            for r in raters
        ]
        pairs = [(j, h) for j, h in pairs if j]  # raters who rated a judged item
        kappas = [k for k in (cohen_kappa(j, h) for j, h in pairs) if k is not None]
        out["human_judge_kappa"] = {
            "method": "Cohen, judge against each rater, averaged",
            "items": len(judged),
            "value": float(np.mean(kappas)) if kappas else None,
        }
        if len(kappas) < len(pairs):
            out["human_judge_kappa"]["note"] = (
                f"{len(pairs) - len(kappas)} of {len(pairs)} raters' kappas with the "
                f"judge left out of the mean: {KAPPA_UNDEFINED}"
            )
        index = {i: k for k, i in enumerate(ids)}
        out["human_judge_spearman"] = _spearman([float(scored[i]) for i in judged], [mean[index[i]] for i in judged])
    if item_metrics:
        index = {i: k for k, i in enumerate(ids)}
        names = sorted({name for i in ids for name in item_metrics.get(i, {})})
        out["human_metric_spearman"] = {}
        for name in names:
            have = [i for i in ids if _finite(item_metrics.get(i, {}).get(name))]
            out["human_metric_spearman"][name] = _spearman(
                [float(item_metrics[i][name]) for i in have], [mean[index[i]] for i in have]
            )
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
