"""CIDEr of the items under the document frequencies of any weighting of them, without re-scoring.

pycocoevalcap's `Cider` computes its document frequencies from the references of the items it scores, so an item's
CIDEr depends on which other items are scored with it (the correctly labelled ones, or the items two runs share).
`CiderItems` cooks the n-grams of every item once (as `cider_scorer.precook` does: whitespace tokens, n = 1..4) into
flat arrays; `CiderItems.item_scores(weights)` then gives every item's CIDEr with the document frequencies of the
items drawn by `weights` (repeats count), in numpy: equal to `Cider().compute_score`'s per-item scores on those
items.

The arithmetic is CiderScorer's: the tf-idf value of an n-gram is tf * (log(items) - log(max(1, df))), where df
counts the drawn items whose references contain it; the similarity of the candidate and each reference is the sum
over shared n-grams of min(candidate value, reference value) * reference value, over the product of their norms,
times the Gaussian length penalty exp(-delta^2 / 72) where the lengths are bigram counts (pycocoevalcap's own
choice); the item's score is 10 * the mean over n of the mean over its references, and CIDEr is the mean over
items. Sums are taken in another order than pycocoevalcap's loops, so values agree to about 1e-12.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

ORDER = 4
SIGMA = 6.0


def _ngrams(text: str) -> Counter[tuple[str, ...]]:
    words = text.split()
    return Counter(tuple(words[i : i + k]) for k in range(1, ORDER + 1) for i in range(len(words) - k + 1))


def _flat(
    counters: list[Counter[tuple[str, ...]]], vocab: dict[tuple[str, ...], int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(owner, n-gram id, order - 1, tf) of every distinct n-gram of every counter."""
    owner, gid, order, tf = [], [], [], []
    for i, counts in enumerate(counters):
        for gram, count in counts.items():
            owner.append(i)
            gid.append(vocab.setdefault(gram, len(vocab)))
            order.append(len(gram) - 1)
            tf.append(count)
    return (
        np.asarray(owner, dtype=np.int64),
        np.asarray(gid, dtype=np.int64),
        np.asarray(order, dtype=np.int64),
        np.asarray(tf, dtype=float),
    )


class CiderItems:
    """The n-grams of n scored items, cooked once.

    Args:
        candidates: one (tokenized) candidate per item.
        references: the item's (tokenized) references, at least one each.
    """

    def __init__(self, candidates: Sequence[str], references: Sequence[Sequence[str]]) -> None:
        self.n = len(candidates)
        vocab: dict[tuple[str, ...], int] = {}
        cand = [_ngrams(c) for c in candidates]
        refs = [_ngrams(r) for group in references for r in group]
        self.ref_item = np.repeat(np.arange(self.n), [len(group) for group in references])
        self.refs_per_item = np.bincount(self.ref_item, minlength=self.n).astype(float)
        h_item, h_gid, h_order, self.h_tf = _flat(cand, vocab)
        r_ref, r_gid, r_order, self.r_tf = _flat(refs, vocab)
        self.vocab = len(vocab)
        self.h_gid, self.r_gid = h_gid, r_gid
        self.h_slot = h_item * ORDER + h_order  # (item, order) of each candidate n-gram
        self.r_slot = r_ref * ORDER + r_order  # (reference, order) of each reference n-gram
        # document frequency: each item counts once per n-gram found in any of its references
        doc = np.unique(self.ref_item[r_ref] * max(len(vocab), 1) + r_gid)
        self.doc_item, self.doc_gid = doc // max(len(vocab), 1), doc % max(len(vocab), 1)
        # the pairs (candidate n-gram, reference n-gram) of one item with the same n-gram: the only terms of the dot
        h_key = h_item * max(len(vocab), 1) + h_gid
        r_key = self.ref_item[r_ref] * max(len(vocab), 1) + r_gid
        order_r = np.argsort(r_key, kind="stable")
        sorted_keys = r_key[order_r]
        lo, hi = np.searchsorted(sorted_keys, h_key, "left"), np.searchsorted(sorted_keys, h_key, "right")
        matches = hi - lo
        self.pair_h = np.repeat(np.arange(len(h_key)), matches)
        # positions lo, lo + 1, ..., hi - 1 of every candidate n-gram's run of equal reference keys
        run_start = np.repeat(np.cumsum(matches) - matches, matches)
        self.pair_r = order_r[np.repeat(lo, matches) + np.arange(len(self.pair_h)) - run_start]
        self.pair_slot = r_ref[self.pair_r] * ORDER + r_order[self.pair_r]
        # the length penalty depends on bigram counts only, not on the weights
        h_len = np.bincount(h_item, weights=self.h_tf * (h_order == 1), minlength=self.n)
        r_len = np.bincount(r_ref, weights=self.r_tf * (r_order == 1), minlength=len(refs))
        self.penalty = np.exp(-((h_len[self.ref_item] - r_len) ** 2) / (2 * SIGMA**2))
        self.n_refs = len(refs)

    def item_scores(self, weights: np.ndarray) -> np.ndarray:
        """Every item's CIDEr under the idf of one weighting (weights: how often each item is drawn); all NaN when
        the weighting draws no item (no references to take document frequencies from: log(0) items)."""
        weights = np.asarray(weights, dtype=float)
        if not weights.sum() > 0:  # e.g. the correctly labelled items of a run that labels none correctly
            return np.full(self.n, np.nan)
        df = np.bincount(self.doc_gid, weights=weights[self.doc_item], minlength=self.vocab)
        idf = np.log(weights.sum()) - np.log(np.maximum(df, 1.0))
        vh, vr = self.h_tf * idf[self.h_gid], self.r_tf * idf[self.r_gid]
        norm_h = np.sqrt(np.bincount(self.h_slot, weights=vh**2, minlength=self.n * ORDER))
        norm_r = np.sqrt(np.bincount(self.r_slot, weights=vr**2, minlength=self.n_refs * ORDER))
        a, b = vh[self.pair_h], vr[self.pair_r]
        # float even when no n-gram is shared (numpy's bincount of nothing is an int array)
        dot = np.bincount(self.pair_slot, weights=np.minimum(a, b) * b, minlength=self.n_refs * ORDER).astype(float)
        norms = (norm_h.reshape(self.n, ORDER)[self.ref_item] * norm_r.reshape(self.n_refs, ORDER)).ravel()
        sim = np.divide(dot, norms, out=dot.copy(), where=norms != 0).reshape(self.n_refs, ORDER)
        per_ref = sim.mean(axis=1) * self.penalty
        return 10.0 * np.bincount(self.ref_item, weights=per_ref, minlength=self.n) / self.refs_per_item
