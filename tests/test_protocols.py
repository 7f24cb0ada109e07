"""eval.protocol: coco (PTB-tokenised) and evil (e-ViL's nlg_eval.py: raw strings), against the scorers called the
way each protocol calls them, on 300 real e-SNLI-VE test references; and the resampled corpus scores behind every
interval against pycocoevalcap on the resampled items."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest

from vlx.metrics import text
from vlx.metrics.bootstrap import resample_counts
from vlx.metrics.text import coco_scores, corpus, open_meteor, score_items

# the first 300 explanations of the official esnlive_test.csv, one per line
REFS = (Path(__file__).parent / "data" / "esnlive_test_explanations_300.txt").read_text().splitlines()
# exact copies, lower-cased and without the final period: identical words, different strings
COPIES = [r.lower().removesuffix(".") for r in REFS]


@pytest.fixture(scope="module")
def pyc_meteor():
    """One pycocoevalcap Meteor() for the module (each one starts a JVM)."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def _scorers(gts: dict, res: dict, meteor) -> dict[str, float]:
    """pycocoevalcap's Bleu(4), Meteor, Rouge and Cider, as e-ViL's eval_nlp_scores calls them."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    return {
        "bleu4": Bleu(4).compute_score(gts, res, verbose=0)[0][3],
        "meteor": meteor.compute_score(gts, res)[0],
        "rouge_l": float(Rouge().compute_score(gts, res)[0]),
        "cider": float(Cider().compute_score(gts, res)[0]),
    }


@pytest.fixture(scope="module")
def evil_direct(pyc_meteor) -> dict[str, float]:
    # e-ViL's get_nlg_scores for e-SNLI-VE: eval_nlp_scores([[x] for x in gen_expl], [[x] for x in gt_expl])
    return _scorers({i: [r] for i, r in enumerate(REFS)}, {i: [c] for i, c in enumerate(COPIES)}, pyc_meteor)


@pytest.fixture(scope="module")
def coco_direct(pyc_meteor) -> dict[str, float]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = PTBTokenizer().tokenize({i: [{"caption": r}] for i, r in enumerate(REFS)})
    res = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(COPIES)})
    return _scorers(gts, res, pyc_meteor)


def test_reference_file_is_real_esnlive():
    assert len(REFS) == 300 and REFS[0] == "One cannot be on a jumping horse cannot be a diner ordering food."
    assert sum(r.endswith(".") for r in REFS) == 256


def test_evil_protocol_is_evils_code(evil_direct):
    """Raw strings, one reference, x100: equal to the scorers called as nlg_eval.py calls them."""
    got, _ = coco_scores(COPIES, [[r] for r in REFS], spice=False, protocol="evil")
    for key in ("bleu4", "rouge_l", "cider"):
        assert got[key] == pytest.approx(100 * evil_direct[key], abs=1e-8), key
    assert got["meteor"] == pytest.approx(100 * evil_direct["meteor"], abs=1e-12)
    # the figures measured independently when the difference was found (issue 17)
    assert (
        round(evil_direct["bleu4"], 3),
        round(evil_direct["meteor"], 3),
        round(evil_direct["rouge_l"], 3),
        round(evil_direct["cider"], 2),
    ) == (0.786, 0.613, 0.778, 6.93)


def test_coco_protocol_tokenises_first(coco_direct):
    got, _ = coco_scores(COPIES, [[r] for r in REFS], spice=False, protocol="coco")
    for key in ("bleu4", "meteor", "rouge_l", "cider"):
        assert got[key] == pytest.approx(coco_direct[key], abs=1e-9), key
    # after PTB tokenisation the copies are the references: perfect scores (CIDEr's maximum is 10)
    assert got["bleu4"] == pytest.approx(1.0, abs=1e-9) and got["meteor"] == 1.0 and got["rouge_l"] == 1.0
    assert got["cider"] == pytest.approx(9.9917, abs=1e-4)


def test_evil_combined_scores_follow_get_average_nlg(evil_direct):
    """e-ViL's avg_overlap (harmonic mean of METEOR, ROUGE-L, CIDEr, SPICE) and avg_all (with BERTScore), on its
    scale; without SPICE the names say so."""
    from vlx.metrics.bertscore import BertScoreSettings

    metrics, notes = text.explanation_metrics(
        COPIES[:60],
        [[r] for r in REFS[:60]],
        [True] * 60,
        BertScoreSettings(),
        protocol="evil",
        spice=False,
        resamples=0,
    )
    assert metrics["protocol"] == "evil" and metrics["explanation_scale"] == 100.0 and metrics["evil_spice"] is False
    overlap = statistics.harmonic_mean([metrics[k] / 100 for k in ("meteor", "rouge_l", "cider")])
    assert metrics["evil_avg_overlap_no_spice"] == pytest.approx(100 * overlap, abs=1e-9)
    both = statistics.harmonic_mean([overlap, metrics["bertscore_f1"] / 100])
    assert metrics["evil_avg_all_no_spice"] == pytest.approx(100 * both, abs=1e-9)
    assert metrics["evil_global_no_spice"] == pytest.approx(100 * both * 1.0, abs=1e-9)
    assert "evil_avg_all" not in metrics and "evil_global" not in metrics
    assert any("evil_*_no_spice" in n for n in notes)


def test_unknown_protocol_is_refused():
    from vlx.errors import ConfigError

    with pytest.raises(ConfigError, match="eval.protocol='bleu'.*coco.*evil"):
        text.protocol_text(["a"], [["b"]], "bleu")


@pytest.mark.parametrize("protocol", ["coco", "evil"])
def test_resampled_corpus_scores_equal_pycocoevalcap_on_the_resample(protocol, pyc_meteor):
    """What every interval is made of: each resample's METEOR (summed statistics, one EVAL), BLEU-4 and ROUGE-L
    equal the scorers run on the items drawn, repeats included; its CIDEr is the mean of the drawn items' CIDEr
    under the scored set's document frequencies."""
    from pycocoevalcap.cider.cider import Cider

    n = 80
    cands = [c if i % 3 else REFS[(i + 5) % 300] for i, c in enumerate(COPIES[:n])]
    refs = [[REFS[i]] + ([REFS[i + 1]] if i % 4 == 0 else []) for i in range(n)]
    meteor = open_meteor(n)
    try:
        items = score_items(cands, refs, None, meteor, protocol=protocol, spice=False)
        draws = resample_counts(n, 3, seed=7)
        got = corpus(items, np.vstack([np.ones((1, n), dtype=np.int32), draws]), meteor)
    finally:
        meteor.close()
    scale = 100.0 if protocol == "evil" else 1.0
    _, per_item = Cider().compute_score(
        {i: r for i, r in enumerate(items.references)}, {i: [c] for i, c in enumerate(items.candidates)}
    )
    assert got["cider"][0] == pytest.approx(scale * per_item.mean(), abs=1e-9)
    for r, row in enumerate(draws, start=1):
        drawn = np.repeat(np.arange(n), row)
        gts = {k: items.references[i] for k, i in enumerate(drawn)}
        res = {k: [items.candidates[i]] for k, i in enumerate(drawn)}
        want = _scorers(gts, res, pyc_meteor)
        assert got["meteor"][r] == pytest.approx(scale * want["meteor"], abs=1e-12)
        for key in ("bleu4", "rouge_l"):
            assert got[key][r] == pytest.approx(scale * want[key], abs=1e-9), key
        assert got["cider"][r] == pytest.approx(scale * per_item[drawn].mean(), abs=1e-9)


def test_cider_items_under_any_set_equal_pycocoevalcap():
    """CiderItems.item_scores: every item's CIDEr with the document frequencies of a subset or a resample (repeats
    count), as Cider() on exactly those items."""
    from pycocoevalcap.cider.cider import Cider

    from vlx.metrics.cider import CiderItems

    n = 120
    cands = [c if i % 4 else REFS[(i + 9) % 300].lower() for i, c in enumerate(COPIES[:n])]
    refs = [[r.lower()] + ([REFS[(i + 1) % 300].lower()] if i % 5 == 0 else []) for i, r in enumerate(REFS[:n])]
    cider = CiderItems(cands, refs)
    rng = np.random.default_rng(3)
    for weights in (np.ones(n), (rng.random(n) < 0.6).astype(float), np.bincount(rng.integers(0, n, n), minlength=n)):
        drawn = np.repeat(np.arange(n), weights.astype(int))
        _, want = Cider().compute_score(
            {k: refs[i] for k, i in enumerate(drawn)}, {k: [cands[i]] for k, i in enumerate(drawn)}
        )
        assert cider.item_scores(weights)[drawn] == pytest.approx(want, abs=1e-9)
    assert CiderItems(["a b"], [["c d"]]).item_scores(np.ones(1)) == pytest.approx([0.0])


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_cider_items_of_no_drawn_item_are_nan_without_warnings():
    """A weighting that draws no item (the correctly labelled items of a run that labels none right, as stage=compare
    meets it) has no references to take document frequencies from: every item's CIDEr is NaN, computed without
    numpy's divide-by-zero and invalid-value warnings (log(0) items)."""
    from vlx.metrics.cider import CiderItems

    cider = CiderItems(["a man rides a bike", "a dog"], [["a man on a bike"], ["the dog runs"]])
    assert np.isnan(cider.item_scores(np.zeros(2))).all()
    assert np.isfinite(cider.item_scores(np.array([1.0, 0.0]))).all()
