"""Few-shot demonstration selection: seeded, balanced, never the query, every strategy and its errors."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vlx.engine.shots import STRATEGIES, ShotSelector, correct_ids_from_predictions, minilm_embedder
from vlx.errors import ConfigError
from vlx.tasks.items import Example

ESNLI = ["entailment", "neutral", "contradiction"]
MEME = ["not offensive", "offensive"]


def ex(id: str, label: str | None, text: str = "") -> Example:
    return Example(id=id, image=Path(f"/nowhere/{id}.jpg"), text=text or f"text of {id}", label=label)


def make_pool(labels: list[str], per_class: int, prefix: str = "p") -> list[Example]:
    return [ex(f"{prefix}{c}-{i}", label) for c, label in enumerate(labels) for i in range(per_class)]


def ids(examples: list[Example]) -> list[str]:
    return [e.id for e in examples]


QUERY = ex("q1", "neutral")


# --- determinism and the seed -------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["balanced_random", "from_correct"])
@pytest.mark.parametrize("per_query", [False, True])
def test_random_strategies_are_seeded(strategy: str, per_query: bool):
    pool = make_pool(ESNLI, 30)
    correct = {e.id for e in pool[::2]} if strategy == "from_correct" else None

    def chosen(seed: int) -> list[str]:
        sel = ShotSelector(pool, ESNLI, 3, strategy, seed=seed, per_query=per_query, correct_ids=correct)
        return ids(sel.select(QUERY))

    assert chosen(0) == chosen(0)
    assert len({tuple(chosen(s)) for s in range(5)}) > 1
    if correct is not None:
        assert all(set(chosen(s)) <= correct for s in range(5))


def test_per_query_false_reuses_one_set_and_per_query_true_varies():
    pool = make_pool(ESNLI, 30)
    queries = [ex(f"q{i}", "entailment") for i in range(10)]
    shared = ShotSelector(pool, ESNLI, 3, seed=1)
    assert len({tuple(ids(shared.select(q))) for q in queries}) == 1
    own = ShotSelector(pool, ESNLI, 3, seed=1, per_query=True)
    assert len({tuple(ids(own.select(q))) for q in queries}) > 1


def test_per_query_false_logs_the_chosen_ids_once(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="vlx.engine.shots")
    sel = ShotSelector(make_pool(ESNLI, 5), ESNLI, 3, seed=2)
    for i in range(3):
        sel.select(ex(f"q{i}", "neutral"))
    logged = [r.getMessage() for r in caplog.records if "same 3 demonstrations" in r.getMessage()]
    assert len(logged) == 1
    assert all(i in logged[0] for i in ids(sel.select(QUERY)))


def test_per_query_does_not_depend_on_processing_order():
    pool = make_pool(ESNLI, 20)
    queries = [ex(f"q{i}", ESNLI[i % 3]) for i in range(12)]
    forward = ShotSelector(pool, ESNLI, 4, seed=3, per_query=True)
    backward = ShotSelector(pool, ESNLI, 4, seed=3, per_query=True)
    a = {q.id: ids(forward.select(q)) for q in queries}
    b = {q.id: ids(backward.select(q)) for q in reversed(queries)}
    resumed = ShotSelector(pool, ESNLI, 4, seed=3, per_query=True)  # a resumed run sees only the last queries
    c = {q.id: ids(resumed.select(q)) for q in queries[7:]}
    assert a == b
    assert all(a[q] == c[q] for q in c)


def test_fixed_and_similar_are_deterministic_and_seed_free():
    pool = make_pool(ESNLI, 4)
    fixed = ["p2-1", "p0-0", "p1-3"]
    for seed in (0, 1, 2):
        assert ids(ShotSelector(pool, ESNLI, 3, "fixed", seed=seed, ids=fixed).select(QUERY)) == fixed
    chosen = [
        ids(ShotSelector(pool, ESNLI, 2, "similar", seed=seed, balanced=False, embed=fake_embed).select(QUERY))
        for seed in (0, 7)
    ]
    assert chosen[0] == chosen[1] and len(chosen[0]) == 2  # the nearest items, whatever the seed


# --- balance --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "k", "expected"),
    [
        (MEME, 2, [1, 1]),
        (MEME, 3, [1, 2]),
        (MEME, 4, [2, 2]),
        (MEME, 6, [3, 3]),
        (ESNLI, 2, [0, 1, 1]),
        (ESNLI, 3, [1, 1, 1]),
        (ESNLI, 4, [1, 1, 2]),
        (ESNLI, 6, [2, 2, 2]),
    ],
)
@pytest.mark.parametrize("per_query", [False, True])
def test_balanced_counts(labels: list[str], k: int, expected: list[int], per_query: bool):
    pool = make_pool(labels, 10)
    extras_went_to = Counter()
    for seed in range(12):
        sel = ShotSelector(pool, labels, k, seed=seed, per_query=per_query)
        demos = sel.select(QUERY)
        assert len(demos) == k and len(set(ids(demos))) == k
        counts = Counter(d.label for d in demos)
        assert sorted(counts[c] for c in labels) == expected
        extras_went_to.update(c for c in labels if counts[c] == max(expected) and max(expected) > min(expected))
    if max(expected) > min(expected):  # the extra places move between classes with the seed
        assert len(extras_went_to) == len(labels)


def test_short_class_is_filled_from_the_others_with_a_warning(caplog: pytest.LogCaptureFixture):
    pool = [ex("e0", "entailment")] + make_pool(["neutral", "contradiction"], 10)
    caplog.set_level(logging.WARNING, logger="vlx.engine.shots")
    demos = ShotSelector(pool, ESNLI, 6, seed=0).select(QUERY)
    counts = Counter(d.label for d in demos)
    assert counts == {"entailment": 1, "neutral": 3, "contradiction": 2} or counts == {
        "entailment": 1,
        "neutral": 2,
        "contradiction": 3,
    }
    assert any("too few pool items of class(es) entailment" in r.getMessage() for r in caplog.records)


def test_prompt_order_is_shuffled_not_grouped_by_class():
    pool = make_pool(ESNLI, 10)
    orders = {tuple(d.label for d in ShotSelector(pool, ESNLI, 3, seed=s).select(QUERY)) for s in range(20)}
    assert len(orders) > 2


def test_unlabelled_pool_items_are_never_demonstrations():
    pool = make_pool(MEME, 3) + [ex(f"u{i}", None) for i in range(20)]
    for seed in range(10):
        assert all(d.label in MEME for d in ShotSelector(pool, MEME, 4, seed=seed).select(QUERY))


# --- never the query ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["balanced_random", "from_correct", "similar"])
@pytest.mark.parametrize("per_query", [False, True])
def test_query_from_the_pool_is_never_its_own_demonstration(strategy: str, per_query: bool):
    pool = make_pool(ESNLI, 3)  # 9 items, k=8: every shared set holds most of the pool
    correct = {e.id for e in pool}
    sel = ShotSelector(pool, ESNLI, 8, strategy, seed=4, per_query=per_query, correct_ids=correct, embed=fake_embed)
    for query in pool:
        demos = sel.select(query)
        assert query.id not in ids(demos)
        assert len(demos) == 8 and len(set(ids(demos))) == 8


def test_query_in_the_shared_set_gets_a_seeded_redraw_and_others_keep_the_set():
    pool = make_pool(ESNLI, 5)
    sel = ShotSelector(pool, ESNLI, 3, seed=5)
    shared = ids(sel.select(QUERY))
    inside = next(e for e in pool if e.id == shared[0])
    redraw = ids(sel.select(inside))
    assert inside.id not in redraw
    assert Counter(next(e.label for e in pool if e.id == i) for i in redraw) == Counter(ESNLI)
    assert redraw == ids(ShotSelector(pool, ESNLI, 3, seed=5).select(inside))
    assert ids(sel.select(ex("q9", "neutral"))) == shared


def test_fixed_demonstration_that_is_the_query_is_replaced_by_the_same_class():
    pool = make_pool(ESNLI, 4)
    sel = ShotSelector(pool, ESNLI, 3, "fixed", ids=["p0-0", "p1-0", "p2-0"])
    demos = sel.select(pool[4])  # p1-0
    assert ids(demos)[0] == "p0-0" and ids(demos)[2] == "p2-0"
    assert demos[1].id != "p1-0" and demos[1].label == "neutral"


def test_k_zero_is_always_empty():
    for strategy in STRATEGIES:
        assert ShotSelector(make_pool(ESNLI, 2), ESNLI, 0, strategy).select(QUERY) == []
    assert ShotSelector([], [], 0, "from_correct").select(QUERY) == []


# --- from_correct and the predictions file --------------------------------------------------------------------


def test_correct_ids_from_a_real_predictions_file(tmp_path: Path):
    pool = make_pool(MEME, 6)
    rows = [{"id": e.id, "gold": e.label, "pred": e.label if i % 3 else "offensive"} for i, e in enumerate(pool)]
    rows.append({"id": "x", "gold": None, "pred": None})
    rows.append({"id": "y", "gold": "offensive", "pred": None})
    path = tmp_path / "run" / "predictions.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    correct = correct_ids_from_predictions(path)
    assert correct == {r["id"] for r in rows if r["gold"] is not None and r["pred"] == r["gold"]}
    assert correct_ids_from_predictions(path.parent) == correct  # the run directory works too
    for seed in range(10):
        sel = ShotSelector(pool, MEME, 4, "from_correct", seed=seed, correct_ids=correct, per_query=seed % 2 == 0)
        demos = sel.select(QUERY)
        assert set(ids(demos)) <= correct and Counter(d.label for d in demos) == {"offensive": 2, "not offensive": 2}


def test_predictions_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"task.split=train shots=0"):
        correct_ids_from_predictions(tmp_path / "missing.jsonl")
    bad = tmp_path / "predictions.jsonl"
    bad.write_text('{"id": "a", "gold": "x", "pred": "x"}\n{"id": "b", "gold"\n')
    with pytest.raises(ConfigError, match=r"predictions.jsonl:2"):
        correct_ids_from_predictions(bad)
    bad.write_text('{"id": "a", "gold": "x", "pred": "x"}\n\n{"id": "b", "gold": "x"}\n')
    with pytest.raises(ConfigError, match=r"predictions.jsonl:3: .*pred"):
        correct_ids_from_predictions(bad)


def test_from_correct_errors():
    pool = make_pool(MEME, 3)
    with pytest.raises(ConfigError, match=r"task.split=train shots=0"):
        ShotSelector(pool, MEME, 2, "from_correct")
    with pytest.raises(ConfigError, match=r"none of the 2 correct ids"):
        ShotSelector(pool, MEME, 2, "from_correct", correct_ids={"other-1", "other-2"})
    with pytest.raises(ConfigError, match=r"k=3 .* only 2 correctly predicted"):
        ShotSelector(pool, MEME, 3, "from_correct", correct_ids={"p0-0", "p1-0"})


# --- fixed ----------------------------------------------------------------------------------------------------


def test_fixed_keeps_order_and_validates_ids():
    pool = make_pool(ESNLI, 3) + [ex("nolabel", None)]
    order = ["p2-2", "p0-1", "p2-0"]
    sel = ShotSelector(pool, ESNLI, 3, "fixed", ids=order)
    assert ids(sel.select(QUERY)) == order and ids(sel.select(ex("q2", "entailment"))) == order
    with pytest.raises(ConfigError, match=r"'p9-9' is not in the pool"):
        ShotSelector(pool, ESNLI, 3, "fixed", ids=["p0-0", "p9-9", "p1-1"])
    with pytest.raises(ConfigError, match=r"exactly k=3 ids, got 2"):
        ShotSelector(pool, ESNLI, 3, "fixed", ids=["p0-0", "p1-1"])
    with pytest.raises(ConfigError, match=r"exactly k=2 ids, got no"):
        ShotSelector(pool, ESNLI, 2, "fixed")
    with pytest.raises(ConfigError, match=r"'nolabel' has label None"):
        ShotSelector(pool, ESNLI, 1, "fixed", ids=["nolabel"])
    with pytest.raises(ConfigError, match=r"repeat"):
        ShotSelector(pool, ESNLI, 2, "fixed", ids=["p0-0", "p0-0"])


# --- similar --------------------------------------------------------------------------------------------------


# hand-made 2-d embeddings: a text "a<deg>" is the unit vector at that angle, so cosine similarity is cos(difference)
def fake_embed(texts: list[str]) -> np.ndarray:
    fake_embed.calls.append(list(texts))  # type: ignore[attr-defined]
    out = []
    for t in texts:
        deg = float(t[1:]) if t.startswith("a") else float(sum(map(ord, t)) % 360)
        out.append([np.cos(np.radians(deg)), np.sin(np.radians(deg))])
    return np.array(out) * 3.0  # not unit length: the selector normalises


fake_embed.calls = []  # type: ignore[attr-defined]


def angle_pool() -> list[Example]:
    # entailment at 0, 10, 100 deg; neutral at 20, 170; contradiction at 5, 200
    spec = [("e0", 0, "entailment"), ("e1", 10, "entailment"), ("e2", 100, "entailment")]
    spec += [("n0", 20, "neutral"), ("n1", 170, "neutral"), ("c0", 5, "contradiction"), ("c1", 200, "contradiction")]
    return [ex(i, label, f"a{deg}") for i, deg, label in spec]


def test_similar_unbalanced_is_the_true_nearest_most_similar_last():
    sel = ShotSelector(angle_pool(), ESNLI, 3, "similar", balanced=False, embed=fake_embed)
    # query at 8 deg: distances e1 2, c0 3, e0 8, n0 12
    assert ids(sel.select(ex("q", "neutral", "a8"))) == ["e0", "c0", "e1"]
    # query at 190: c1 10, n1 20, e2 90
    assert ids(sel.select(ex("q", "neutral", "a190"))) == ["e2", "n1", "c1"]


def test_similar_balanced_takes_the_nearest_per_class():
    sel = ShotSelector(angle_pool(), ESNLI, 3, "similar", embed=fake_embed)
    # query at 8: nearest entailment e1 (2), contradiction c0 (3), neutral n0 (12)
    assert ids(sel.select(ex("q", "neutral", "a8"))) == ["n0", "c0", "e1"]
    demos = ShotSelector(angle_pool(), ESNLI, 4, "similar", embed=fake_embed, seed=0).select(ex("q", "x", "a8"))
    assert sorted(Counter(d.label for d in demos).values()) == [1, 1, 2]


def test_similar_excludes_the_query_and_embeds_the_pool_once():
    pool = angle_pool()
    fake_embed.calls.clear()  # type: ignore[attr-defined]
    sel = ShotSelector(pool, ESNLI, 2, "similar", balanced=False, embed=fake_embed)
    assert ids(sel.select(pool[3])) == ["c0", "e1"]  # query n0 (20 deg) left out: e1 10 away, c0 15, e0 20
    sel.select(pool[0])
    sel.select(pool[3])
    sizes = [len(c) for c in fake_embed.calls]  # type: ignore[attr-defined]
    assert sizes.count(len(pool)) == 1 and sizes.count(1) == 3


@pytest.fixture(scope="module")
def minilm():
    return minilm_embedder()


def test_similar_with_the_real_minilm_prefers_the_paraphrase(minilm):
    texts = [
        "The stock market fell sharply on Monday.",
        "A chef is slicing vegetables in a kitchen.",
        "Two kids are playing football in the park.",
        "The weather will be rainy tomorrow.",
    ]
    pool = [ex(f"s{i}", "neutral", t) for i, t in enumerate(texts)]
    query = ex("q", "neutral", "A cook cuts up carrots and onions in the kitchen.")
    sel = ShotSelector(pool, ESNLI, 1, "similar", balanced=False, embed=minilm)
    assert ids(sel.select(query)) == ["s1"]
    vectors = minilm(texts)
    assert vectors.shape == (4, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    two = ShotSelector(pool, ESNLI, 2, "similar", balanced=False, embed=minilm).select(query)
    assert two[-1].id == "s1"


# --- other errors ---------------------------------------------------------------------------------------------


def test_errors():
    pool = make_pool(MEME, 2)
    with pytest.raises(ConfigError, match=r"unknown"):
        ShotSelector(pool, MEME, 2, "nearest")
    with pytest.raises(ConfigError, match=r"negative"):
        ShotSelector(pool, MEME, -1)
    with pytest.raises(ConfigError, match=r"k=5 is larger than the pool: only 4"):
        ShotSelector(pool, MEME, 5)
    with pytest.raises(ConfigError, match=r"k=5 is larger than the pool: only 4"):
        ShotSelector(pool, MEME, 5, "similar", embed=fake_embed)
    sel = ShotSelector(pool, MEME, 4, per_query=True)
    with pytest.raises(ConfigError, match=r"without query 'p0-0': only 3"):
        sel.select(pool[0])
