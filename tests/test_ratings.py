"""Human ratings: the ratings file, the sample, e-ViL's human score, rater and judge agreement, eval's use of them."""

from __future__ import annotations

import contextlib
import json
import math
import resource
import signal
from collections.abc import Iterator

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score

from vlx.errors import DataError
from vlx.metrics.human import KAPPA_UNDEFINED, cohen_kappa, fleiss_kappa, human_metrics
from vlx.run.ratings import RatingStore, draw_sample
from vlx.run.records import Prediction


def test_store_appends_and_the_last_rating_counts(tmp_path):
    store = RatingStore(tmp_path / "ratings.jsonl")
    store.add("a", "ana", "yes")
    store.add("b", "ana", "weak no")
    store.add("a", "ana", "no")  # changed her mind
    store.add("a", " bo  b ", "weak yes")
    assert store.latest() == {("ana", "a"): "no", ("ana", "b"): "weak no", ("bo b", "a"): "weak yes"}
    assert [r["score"] for r in store.rows()] == [1.0, 1 / 3, 0.0, 2 / 3]
    with open(store.path, "a") as f:
        f.write('{"id": "c", "rater": "ana", "verd')  # a write cut by a kill
    assert len(store.rows()) == 4
    with pytest.raises(DataError, match="use one of yes, weak yes, weak no, no"):
        store.add("a", "ana", "maybe")
    with pytest.raises(DataError, match="needs a rater name"):
        store.add("a", "  ", "yes")
    store.path.write_text('{"id": "a", "rater": "ana", "verdict": "yes"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(DataError, match=r"ratings.jsonl:2: not a JSON line"):
        store.rows()


def test_a_cut_short_write_loses_no_rating(tmp_path, caplog):
    """A kill or a full disk mid-line: the next rating starts a new line, both whole ratings count, the cut line is
    left out with a warning naming it, wherever later ratings put it; a hand-broken line stays an error."""
    store = RatingStore(tmp_path / "ratings.jsonl")
    store.add("a", "ana", "yes")
    with open(store.path, "a") as f:
        f.write('{"id": "b", "rater": "ana", "verdict": "we')
    store.add("c", "ana", "no")
    assert store.latest() == {("ana", "a"): "yes", ("ana", "c"): "no"}
    assert any(f"{store.path}:2:" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    with open(store.path, "ab") as f:
        f.write('{"id": "d", "rater": "zoë'.encode()[:-1])  # cut inside a character
    store.add("e", "ana", "yes")
    with open(store.path, "a") as f:
        f.write('{"id": "f", "rater": "ana", "ver\n')  # cut, then a newline (a full disk's last line)
    assert [r["id"] for r in store.rows()] == ["a", "c", "e"]
    store.path.write_bytes(b'{"id": "a", "rater": "ana", "verdict": "yes"}\n{"id": 1 2}\n' + store.path.read_bytes())
    with pytest.raises(DataError, match=r"ratings.jsonl:2: not a JSON line"):
        store.rows()
    with pytest.raises(DataError, match="at most 200 characters"):
        store.add("a", "x" * 201, "yes")


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Files of this process may not grow past `limit` bytes (RLIMIT_FSIZE): the kernel cuts a write across it short
    and refuses the next one (EFBIG), as a disk that fills up does (ENOSPC), without root or a real disk to fill."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of the process being killed
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@pytest.mark.parametrize("room", [40, -1], ids=["mid-line", "before-its-newline"])
def test_a_write_the_disk_cuts_short_is_undone(tmp_path, caplog, room):
    """A rating whose write the kernel cuts short (the disk fills mid-line, or just before the line's newline)
    raises, and leaves the file as it was: no cut line to warn about, and no refused rating that counts after all
    once the next rating ends its line."""
    row = {"id": "b", "rater": "ana", "verdict": "yes", "score": 1.0, "time": 1796684303.123}
    line = len(json.dumps(row)) + 1  # the rating's line, where its time has 3 decimals (9 times in 10)
    for attempt in range(20):  # a time with fewer decimals makes a shorter line, which fits: try again
        store = RatingStore(tmp_path / f"ratings{attempt}.jsonl")
        store.add("a", "ana", "yes")
        before = store.path.read_bytes()
        try:
            with file_size_limit(len(before) + (room if room > 0 else line + room)):
                store.add("b", "ana", "yes")
        except OSError:
            break
    else:
        pytest.fail("no write was cut short")
    assert store.path.read_bytes() == before
    store.add("c", "ana", "no")
    assert [(r["id"], r["verdict"]) for r in store.rows()] == [("a", "yes"), ("c", "no")]
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_sample_is_seeded_and_balanced():
    rows = [
        Prediction(id=f"i{k}", gold="entailment" if k < 70 else "neutral" if k < 95 else "contradiction")
        for k in range(100)
    ]
    sample = draw_sample(rows, 30, seed=1)
    assert sample == draw_sample(rows, 30, seed=1) and sample != draw_sample(rows, 30, seed=2)
    golds = [next(r.gold for r in rows if r.id == i) for i in sample]
    # contradiction has only 5 items: all of them, the rest split evenly
    assert golds.count("contradiction") == 5 and golds.count("neutral") in (12, 13) and len(set(sample)) == 30
    assert sample == [r.id for r in rows if r.id in set(sample)]  # in the run's order
    unbalanced = draw_sample(rows, 30, seed=1, balanced=False)
    assert len(unbalanced) == 30 and draw_sample(rows, 500) == [r.id for r in rows]


def test_kappas_equal_the_references():
    rng = np.random.default_rng(0)
    verdicts = ["yes", "weak yes", "weak no", "no"]
    a = [verdicts[i] for i in rng.integers(0, 4, 80)]
    b = [x if rng.random() < 0.6 else verdicts[rng.integers(0, 4)] for x in a]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    # Fleiss (1971) as worked on Wikipedia's "Fleiss' kappa" page: 10 items, 14 raters, 5 categories -> 0.210
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert fleiss_kappa(np.asarray(table)) == pytest.approx(0.20993, abs=1e-5)
    assert fleiss_kappa(np.asarray([[2, 0], [1, 0]])) is None  # unequal numbers of raters


def test_kappa_of_a_single_category_is_undefined_as_in_the_references():
    """Both raters said only "yes": chance agreement is 1 and kappa 0 / 0. scikit-learn gives NaN, statsmodels'
    fleiss_kappa computes (1 - 1) / (1 - 1), NaN too; vlx gives None (null in metrics.json) with a note, not 1."""
    same = ["yes"] * 5
    with pytest.warns(UserWarning):  # scikit-learn says it is undefined
        assert math.isnan(cohen_kappa_score(same, same))
    assert cohen_kappa(same, same) is None
    assert fleiss_kappa(np.asarray([[3, 0, 0, 0]] * 4)) is None
    # different single categories are defined: chance agreement 0, kappa 0, as scikit-learn's
    assert cohen_kappa(same, ["no"] * 5) == pytest.approx(cohen_kappa_score(same, ["no"] * 5)) == 0
    correct = {i: True for i in "abc"}
    two = human_metrics(
        {(r, i): "yes" for r in ("ana", "bob") for i in "abc"}, correct, resamples=0, judge={i: 1.0 for i in "abc"}
    )
    assert two["human_kappa"]["value"] is None and "undefined" in two["human_kappa"]["note"]
    assert two["human_judge_kappa"]["value"] is None and "2 of 2 raters" in two["human_judge_kappa"]["note"]
    three = human_metrics({(r, i): "no" for r in ("ana", "bob", "cy") for i in "abc"}, correct, resamples=0)
    assert three["human_kappa"] == {"method": "Fleiss", "items": 3, "value": None, "note": KAPPA_UNDEFINED}
    mixed = human_metrics(
        {("ana", "a"): "yes", ("bob", "a"): "yes", ("ana", "b"): "no", ("bob", "b"): "yes"}, correct, resamples=0
    )
    assert "note" not in mixed["human_kappa"] and mixed["human_kappa"]["value"] == pytest.approx(
        cohen_kappa_score(["yes", "no"], ["yes", "yes"])
    )


def test_human_score_is_evils_s_e():
    correct = {"a": True, "b": True, "c": False, "d": True, "e": True}
    ratings = {
        ("ana", "a"): "yes",
        ("ana", "b"): "weak no",
        ("ana", "c"): "no",
        ("bob", "a"): "weak yes",
        ("bob", "b"): "weak no",
        ("bob", "c"): "yes",
        ("ana", "d"): "no",
    }
    judge = {"a": 1.0, "b": 1 / 3, "c": 2 / 3, "d": 0.0, "e": 1.0}
    metrics = {"a": {"rouge_l": 0.9}, "b": {"rouge_l": 0.4}, "c": {"rouge_l": 0.5}, "d": {"rouge_l": 0.1}}
    out = human_metrics(ratings, correct, judge=judge, item_metrics=metrics, resamples=200)
    item = {"a": (1 + 2 / 3) / 2, "b": 1 / 3, "c": 0.5, "d": 0.0}  # raters averaged per item
    assert out["human_score"] == pytest.approx(np.mean([item["a"], item["b"], item["d"]]))  # correct items only
    assert out["all_human_score"] == pytest.approx(np.mean(list(item.values())))
    assert (out["human_n"], out["all_human_n"], out["human_raters"], out["human_ratings"]) == (3, 4, ["ana", "bob"], 7)
    low, high = out["human_score_ci"]
    assert low <= out["human_score"] <= high
    assert out["human_kappa"]["method"] == "Cohen" and out["human_kappa"]["items"] == 3
    assert out["human_kappa"]["value"] == pytest.approx(
        cohen_kappa_score(["yes", "weak no", "no"], ["weak yes", "weak no", "yes"])
    )
    rho = spearmanr([0.9, 0.4, 0.5, 0.1], [item[i] for i in "abcd"]).statistic
    assert out["human_metric_spearman"]["rouge_l"]["rho"] == pytest.approx(rho)
    judge_rho = spearmanr([1.0, 1 / 3, 2 / 3, 0.0], [item[i] for i in "abcd"]).statistic
    assert out["human_judge_spearman"]["rho"] == pytest.approx(judge_rho)
    ana = cohen_kappa_score(["yes", "weak no", "weak yes", "no"], ["yes", "weak no", "no", "no"])
    bob = cohen_kappa_score(["yes", "weak no", "weak yes"], ["weak yes", "weak no", "yes"])
    assert out["human_judge_kappa"]["value"] == pytest.approx((ana + bob) / 2)
    with pytest.raises(DataError, match="does not have"):
        human_metrics({("ana", "zz"): "yes"}, correct)


def test_eval_reads_the_ratings(make_cfg, tmp_path):
    """stage=eval adds the human score of <run>/ratings.jsonl, and correlations with the automatic metrics."""
    from test_compare import run_rows

    from vlx.__main__ import run_stage

    run = tmp_path / "r"
    run.mkdir()
    rows = run_rows(0.7, 0.5, seed=3)
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = RatingStore(run / "ratings.jsonl")
    for k, r in enumerate(rows[:20]):
        store.add(r["id"], "ana", ["yes", "weak yes", "weak no", "no"][k % 4])
    run_stage(make_cfg("stage=eval", f"stage.run={run}", "task=esnli", "eval.resamples=50", run_dir=run / "eval"))
    saved = json.loads((run / "metrics.json").read_text())
    right = [k for k, r in enumerate(rows[:20]) if r["pred"] == r["gold"]]
    assert saved["human_score"] == pytest.approx(np.mean([[1, 2 / 3, 1 / 3, 0][k % 4] for k in right]))
    assert saved["all_human_n"] == 20 and saved["human_raters"] == ["ana"]
    assert {"bleu4", "rouge_l", "cider", "bertscore_f1"} <= saved["human_metric_spearman"].keys()
    assert saved["human_metric_spearman"]["rouge_l"]["n"] == 20
