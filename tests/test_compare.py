"""stage=compare: paired bootstrap differences and McNemar's test between two scored runs, against independent
computations on the shared items."""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vlx.__main__ import run_stage
from vlx.errors import ConfigError

ESNLI = ("entailment", "contradiction", "neutral")
REFS = (Path(__file__).parent / "data" / "esnlive_test_explanations_300.txt").read_text().splitlines()
N, RESAMPLES = 60, 200


def run_rows(hit_rate: float, copy_rate: float, seed: int) -> list[dict]:
    """e-SNLI-VE-like predictions with label probabilities: right about `hit_rate` of the time, the explanation a
    copy of the reference about `copy_rate` of the time (else another item's)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(N):
        gold = ESNLI[i % 3]
        hit = rng.random() < hit_rate
        pred = gold if hit else ESNLI[(i + 1 + int(rng.random() < 0.5)) % 3]
        p = np.full(3, 0.1)
        p[ESNLI.index(pred)] = 0.8
        p = rng.dirichlet(p * 20)
        p[[ESNLI.index(pred), int(np.argmax(p))]] = p[[int(np.argmax(p)), ESNLI.index(pred)]]  # pred stays argmax
        expl = REFS[i].lower() if rng.random() < copy_rate else REFS[(i + 7) % 300]
        rows.append(
            {
                "id": f"x{i:03d}",
                "image": f"{i}.jpg",
                "text": "h",
                "gold": gold,
                "pred": pred,
                "explanation": expl,
                "raw": f"{pred}. {expl}",
                "refs": [REFS[i]],
                "scores": {label: float(v) for label, v in zip(ESNLI, p, strict=True)},
            }
        )
    return rows


def scored_run(make_cfg, folder: Path, rows: list[dict], *extra: str) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_stage(
        make_cfg(
            "stage=eval",
            f"stage.run={folder}",
            "task=esnli",
            f"eval.resamples={RESAMPLES}",
            *extra,
            run_dir=folder / "eval",
        )
    )
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Baseline A and a better run B (which lacks 5 of A's items), both scored, then compared."""
    from conftest import compose_config
    from hydra.core.global_hydra import GlobalHydra

    root = tmp_path_factory.mktemp("compare")
    make_cfg = compose_config
    rows_a, rows_b = run_rows(0.4, 0.3, seed=1), run_rows(0.9, 0.7, seed=2)[5:]
    metrics_a = scored_run(make_cfg, root / "A", rows_a)
    metrics_b = scored_run(make_cfg, root / "B", rows_b)
    for name, rows, shift in (("A", rows_a, 0), ("B", rows_b, 1)):  # verdicts as stage=judge writes them
        folder = root / name / "judgements" / "tiny_llava"
        folder.mkdir(parents=True)
        verdicts = [
            {"id": r["id"], "score": [0.0, 1 / 3, 2 / 3, 1.0][(i + shift) % 4] if i % 9 else None}
            for i, r in enumerate(rows)
        ]
        (folder / "verdicts.jsonl").write_text("".join(json.dumps(v) + "\n" for v in verdicts))
    returned = run_stage(
        make_cfg(
            "stage=compare",
            f"stage.runs=[{root / 'A'},{root / 'B'}]",
            f"eval.resamples={RESAMPLES}",
            run_dir=root / "cmp",
        )
    )
    result = json.loads((root / "cmp" / "comparison.json").read_text())
    yield {
        "root": root,
        "a": rows_a,
        "b": rows_b,
        "ma": metrics_a,
        "mb": metrics_b,
        "result": result,
        "returned": returned,
        "make_cfg": make_cfg,
    }
    GlobalHydra.instance().clear()


def _shared(two_runs):
    by_a = {r["id"]: r for r in two_runs["a"]}
    ids = sorted(r["id"] for r in two_runs["b"])
    by_b = {r["id"]: r for r in two_runs["b"]}
    return ids, [by_a[i] for i in ids], [by_b[i] for i in ids]


def test_counts_and_files(two_runs):
    result, root = two_runs["result"], two_runs["root"]
    assert (result["n_a"], result["n_b"], result["n_shared"]) == (N, N - 5, N - 5)
    assert result["task"] == "esnli" and result["protocol"] == "coco" and result["resamples"] == RESAMPLES
    md = (root / "cmp" / "comparison.md").read_text()
    assert "55 shared items (60 in A, 55 in B)" in md and "McNemar" in md and "| accuracy |" in md
    assert (root / "cmp" / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert two_runs["returned"]["accuracy_difference"] == result["metrics"]["accuracy"]["difference"]


def test_accuracy_difference_paired_interval_and_mcnemar(two_runs):
    """The paired interval equals an independent bootstrap of the difference with the same draws; McNemar's exact
    p equals the binomial tail computed by hand."""
    ids, a, b = _shared(two_runs)
    ra = np.asarray([r["pred"] == r["gold"] for r in a])
    rb = np.asarray([r["pred"] == r["gold"] for r in b])
    got = two_runs["result"]["metrics"]["accuracy"]
    assert got["a"] == pytest.approx(ra.mean()) and got["b"] == pytest.approx(rb.mean())
    assert got["difference"] == pytest.approx(rb.mean() - ra.mean())
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(RESAMPLES):
        idx = rng.integers(0, len(ids), size=len(ids))
        diffs.append(rb[idx].mean() - ra[idx].mean())
    assert got["ci"] == pytest.approx(list(np.quantile(diffs, [0.025, 0.975])), abs=1e-12)
    d = got["difference"]
    assert got["p_value"] == pytest.approx((1 + sum(abs(x - d) >= abs(d) - 1e-12 for x in diffs)) / (RESAMPLES + 1))
    only_a, only_b = int((ra & ~rb).sum()), int((rb & ~ra).sum())
    m = only_a + only_b
    tail = sum(math.comb(m, k) for k in range(min(only_a, only_b) + 1)) / 2**m
    test = two_runs["result"]["mcnemar"]
    assert (test["only_a_right"], test["only_b_right"]) == (only_a, only_b)
    assert test["p_value"] == pytest.approx(min(1.0, 2 * tail), abs=1e-12)
    assert got["difference"] > 0.3 and got["p_value"] < 0.01 and test["p_value"] < 0.01  # B is clearly better here


def test_explanation_differences_are_the_metrics_of_the_shared_items(two_runs):
    """Point values: each run's e-ViL scores on its own correctly labelled shared items, as coco_scores gives."""
    from vlx.metrics.text import coco_scores

    _, a, b = _shared(two_runs)
    metrics = two_runs["result"]["metrics"]
    for rows, side in ((a, "a"), (b, "b")):
        right = [r for r in rows if r["pred"] == r["gold"]]
        want, _ = coco_scores([r["explanation"] for r in right], [r["refs"] for r in right], spice=False)
        for key in ("bleu4", "meteor", "rouge_l", "cider"):
            assert metrics[key][side] == pytest.approx(want[key], abs=1e-9), (key, side)
    every_b, _ = coco_scores([r["explanation"] for r in b], [r["refs"] for r in b], spice=False)
    assert metrics["all_cider"]["b"] == pytest.approx(every_b["cider"], abs=1e-9)
    # run B scored on all its items is the same as on the shared ones (it has no others)
    assert metrics["all_bleu4"]["b"] == pytest.approx(two_runs["mb"]["all_bleu4"], abs=1e-12)
    for key in ("evil_global_no_spice", "all_evil_global_no_spice", "evil_avg_all_no_spice"):  # accuracy x avg_all
        assert metrics[key]["b"] == pytest.approx(two_runs["mb"][key], abs=1e-12), key
    for key in ("bleu4", "meteor", "cider", "bertscore_f1", "evil_avg_all_no_spice", "all_rouge_l"):
        m = metrics[key]
        assert m["ci"][0] <= m["difference"] <= m["ci"][1] and 0 < m["p_value"] <= 1, key
    assert metrics["all_cider"]["difference"] > 0  # B copies its references more often


def test_calibration_differences(two_runs):
    _, a, b = _shared(two_runs)
    from sklearn.metrics import log_loss

    metrics = two_runs["result"]["metrics"]
    for rows, side in ((a, "a"), (b, "b")):
        order = sorted(ESNLI)  # log_loss's columns are the labels in sorted order
        probs = [[r["scores"][label] for label in order] for r in rows]
        assert metrics["nll"][side] == pytest.approx(log_loss([r["gold"] for r in rows], probs, labels=order))
    assert {"ece", "brier", "macro_f1"} <= metrics.keys()


def test_identical_runs_differ_by_nothing(two_runs, tmp_path):
    root = two_runs["root"]
    run_stage(
        two_runs["make_cfg"](
            "stage=compare", f"stage.runs=[{root / 'A'},{root / 'A'}]", "eval.resamples=50", run_dir=tmp_path
        )
    )
    result = json.loads((tmp_path / "comparison.json").read_text())
    for key, m in result["metrics"].items():
        assert m["difference"] == 0 and m["ci"] == [0.0, 0.0] and m["p_value"] == 1.0, key
    assert result["mcnemar"]["p_value"] == 1.0 and result["mcnemar"]["only_a_right"] == 0


def test_refuses_runs_that_cannot_be_paired(two_runs, tmp_path):
    import shutil

    root, make_cfg = two_runs["root"], two_runs["make_cfg"]
    other = tmp_path / "other"
    shutil.copytree(root / "B", other)
    metrics = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**metrics, "split": "dev"}))
    with pytest.raises(ConfigError, match="different splits"):
        run_stage(make_cfg("stage=compare", f"stage.runs=[{root / 'A'},{other}]", run_dir=tmp_path / "c1"))
    (other / "metrics.json").write_text(json.dumps({**metrics, "protocol": "evil", "explanation_scale": 100.0}))
    with pytest.raises(ConfigError, match="scored differently.*eval.protocol=coco"):
        run_stage(make_cfg("stage=compare", f"stage.runs=[{root / 'A'},{other}]", run_dir=tmp_path / "c2"))
    with pytest.raises(ConfigError, match="needs two runs"):
        run_stage(make_cfg("stage=compare", f"stage.runs=[{root / 'A'}]", run_dir=tmp_path / "c3"))
    (other / "metrics.json").unlink()
    with pytest.raises(ConfigError, match="no metrics.json.*stage=eval"):
        run_stage(make_cfg("stage=compare", f"stage.runs=[{root / 'A'},{other}]", run_dir=tmp_path / "c4"))


def test_refuses_to_pair_different_items_under_the_same_ids(two_runs, tmp_path):
    """Ids that are row numbers of different files name different items: refused, naming them, before any test."""
    import shutil

    root, make_cfg = two_runs["root"], two_runs["make_cfg"]
    other = tmp_path / "other"
    shutil.copytree(root / "A", other)
    changed = [
        {**r, "image": f"elsewhere/{i}.jpg", "gold": ESNLI[(i + 1) % 3] if i % 3 == 0 else r["gold"]}
        for i, r in enumerate(two_runs["a"])
    ]
    (other / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in changed))
    with pytest.raises(
        ConfigError,
        match=r"different items under the same ids: of 60 shared ids, 60 items \(x000: "
        r"image, gold; x001: image; x002: image; x003: image, gold; x004: image; "
        r"and 55 more\) differ .*Compare runs made over the same data",
    ):
        run_stage(make_cfg("stage=compare", f"stage.runs=[{root / 'A'},{other}]", run_dir=tmp_path / "c1"))
    assert not (tmp_path / "c1" / "comparison.json").exists()
    texts = [{**r, "text": "another hypothesis"} if r["id"] == "x007" else r for r in two_runs["a"]]
    (other / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in texts))
    with pytest.raises(ConfigError, match=r"of 55 shared ids, 1 item \(x007: text\) differ"):
        run_stage(make_cfg("stage=compare", f"stage.runs=[{other},{root / 'B'}]", run_dir=tmp_path / "c2"))


def test_judge_scores_compared_on_items_both_have_verdicts(two_runs):
    """S_E (mean item score over correctly labelled items with a verdict in both runs) of each run, paired."""
    ids, a, b = _shared(two_runs)

    def scores(name):
        path = two_runs["root"] / name / "judgements" / "tiny_llava" / "verdicts.jsonl"
        return {v["id"]: v["score"] for v in map(json.loads, path.read_text().splitlines())}

    sa, sb = scores("A"), scores("B")
    both = [i for i in ids if sa[i] is not None and sb[i] is not None]
    by_a, by_b = {r["id"]: r for r in a}, {r["id"]: r for r in b}
    want_a = np.mean([sa[i] for i in both if by_a[i]["pred"] == by_a[i]["gold"]])
    want_b = np.mean([sb[i] for i in both if by_b[i]["pred"] == by_b[i]["gold"]])
    got = two_runs["result"]["metrics"]["judge_score"]
    assert got["a"] == pytest.approx(want_a) and got["b"] == pytest.approx(want_b) and got["n"] == len(both)
    every = two_runs["result"]["metrics"]["all_judge_score"]
    assert every["difference"] == pytest.approx(np.mean([sb[i] for i in both]) - np.mean([sa[i] for i in both]))
    assert every["ci"][0] <= every["difference"] <= every["ci"][1]


def test_report_against_a_baseline(two_runs, tmp_path):
    root = two_runs["root"]
    run_stage(
        two_runs["make_cfg"](
            "stage=report",
            f"stage.runs=[{root / 'A'},{root / 'B'}]",
            f"stage.baseline={root / 'A'}",
            f"eval.resamples={RESAMPLES}",
            run_dir=tmp_path,
        )
    )
    table = (tmp_path / "results.md").read_text().splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert "accuracy vs baseline" in header and "evil_avg_all vs baseline" in header
    row_a, row_b = ([c.strip() for c in line.strip("|").split("|")] for line in table[2:4])
    col = header.index("accuracy vs baseline")
    want = two_runs["result"]["metrics"]["accuracy"]
    assert row_a[col] == "" and row_b[col].startswith(f"{want['difference']:+.4f} [{want['ci'][0]:+.4f}, ")
    assert f"p={want['p_value']:.3g}" in row_b[col]
    assert json.loads((tmp_path / "comparisons" / "B.json").read_text())["metrics"]["accuracy"] == want


def test_comparison_and_calibration_reach_wandb(two_runs, tmp_path, monkeypatch):
    """Offline W&B: the comparison table (one row per metric) and plot; eval's reliability diagram."""
    import shutil

    from helpers import wandb_run

    monkeypatch.setenv("WANDB_API_KEY", "local-0123456789abcdef0123456789abcdef01234567")
    root, make_cfg = two_runs["root"], two_runs["make_cfg"]
    run_stage(
        make_cfg(
            "stage=compare",
            f"stage.runs=[{root / 'A'},{root / 'B'}]",
            "eval.resamples=50",
            "logger=wandb",
            run_dir=tmp_path / "cmp",
        )
    )
    (folder,) = (tmp_path / "cmp" / "wandb").glob("offline-run-*")
    wandb_run(folder)
    (table,) = (folder / "files" / "media" / "table").glob("comparison_*.table.json")
    data = json.loads(table.read_text())
    assert data["columns"][:4] == ["metric", "a", "b", "difference"]
    saved = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [row[0] for row in data["data"]] == list(saved["metrics"])
    assert list((folder / "files" / "media" / "images").glob("comparison_plot_*.png"))
    scored = tmp_path / "A"
    shutil.copytree(root / "A", scored)
    run_stage(
        make_cfg(
            "stage=eval",
            f"stage.run={scored}",
            "task=esnli",
            "eval.resamples=20",
            "logger=wandb",
            run_dir=tmp_path / "ev",
        )
    )
    (folder,) = (tmp_path / "ev" / "wandb").glob("offline-run-*")
    assert wandb_run(folder)["summary"]["ece"] == json.loads((scored / "metrics.json").read_text())["ece"]
    assert list((folder / "files" / "media" / "images").glob("reliability_diagram_*.png"))


def test_plot_names_the_runs_and_centres_zero(two_runs, tmp_path):
    """The plot's title names both runs (their folders here: no overrides recorded), and its x axis is symmetric
    around 0 and holds every interval; identical runs give dots at 0 on the minimum span, not float noise on a
    1e-14 axis."""
    from vlx.stages.compare import MIN_HALF_SPAN, figure

    result = two_runs["result"]
    ax = figure(result).axes[0]
    title = ax.get_title().splitlines()
    assert title[0] == "B: B  vs  A: A (baseline)"
    assert title[1].startswith("esnli") and title[1].endswith(", 55 shared items")
    low, high = ax.get_xlim()
    assert low == -high and high >= MIN_HALF_SPAN
    assert all(low <= m["ci"][0] <= m["ci"][1] <= high for m in result["metrics"].values() if m["ci"])
    root = two_runs["root"]
    run_stage(
        two_runs["make_cfg"](
            "stage=compare", f"stage.runs=[{root / 'A'},{root / 'A'}]", "eval.resamples=20", run_dir=tmp_path
        )
    )
    same = figure(json.loads((tmp_path / "comparison.json").read_text())).axes[0]
    assert same.get_xlim() == (-MIN_HALF_SPAN, MIN_HALF_SPAN)
    assert {tuple(line.get_xdata()) for line in same.get_lines() if line.get_marker() == "o"} == {(0.0,)}


def test_run_labels_say_what_a_sweep_changed(tmp_path):
    """Sweep jobs 0 and 1 are named by the overrides that differ (Hydra's own left out), with their sweep folder;
    without recorded overrides, by the ends of their paths."""
    from vlx.stages.compare import run_labels

    sweep = tmp_path / "multirun" / "2026-01-02" / "10-11-12"
    for job, k in (("0", 0), ("1", 3)):
        (sweep / job / ".hydra").mkdir(parents=True)
        (sweep / job / ".hydra" / "overrides.yaml").write_text(
            f"- model=tiny_llava\n- shots.k={k}\n- hydra.run.dir=/x/{job}\n"
        )
    assert run_labels(sweep / "0", sweep / "1") == ("shots.k=0", "shots.k=3", "10-11-12/0", "10-11-12/1")
    (tmp_path / "p" / "run").mkdir(parents=True)
    (tmp_path / "q" / "run").mkdir(parents=True)
    assert run_labels(tmp_path / "p" / "run", tmp_path / "q" / "run") == ("p/run", "q/run", "p/run", "q/run")


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_run_with_no_label_right_compares_without_warnings(two_runs, tmp_path):
    """A run that labels no item right has no e-ViL explanation scores (they cover correct items): the comparison
    says so by leaving them out, with no numpy warning on the way (CIDEr's idf of no items was log(0))."""
    wrong = [{**r, "pred": ESNLI[(ESNLI.index(r["gold"]) + 1) % 3]} for r in two_runs["a"]]
    scored_run(two_runs["make_cfg"], tmp_path / "W", wrong)
    run_stage(
        two_runs["make_cfg"](
            "stage=compare",
            f"stage.runs=[{tmp_path / 'W'},{two_runs['root'] / 'B'}]",
            "eval.resamples=50",
            run_dir=tmp_path / "cmp",
        )
    )
    result = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert result["metrics"]["accuracy"]["a"] == 0 and "all_cider" in result["metrics"]


@contextlib.contextmanager
def held_by_another_process(run: Path):
    """`run`'s lock held by a child process, as an infer run still writing there holds it, until the block ends."""
    code = (
        "import sys, time; from pathlib import Path; from vlx.run.lock import exclusive\n"
        "with exclusive(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        yield child
    finally:
        child.kill()
        child.wait()


def test_a_run_still_being_written_is_refused_by_every_reader(two_runs, tmp_path):
    """compare, eval, judge and review read a run's predictions and scores: while another vlx process holds the
    run's lock, each refuses it in one line naming the run and the process, and writes nothing."""
    from vlx.stages import compare, review

    make_cfg, busy, idle = two_runs["make_cfg"], two_runs["root"] / "A", two_runs["root"] / "B"
    before = {p: p.read_bytes() for p in busy.glob("*.json*")}
    with held_by_another_process(busy) as child:
        expected = rf"{busy} is being written by another vlx run \(pid {child.pid} .*\); wait for it to finish"
        for order in ([busy, idle], [idle, busy]):
            cfg = make_cfg(
                "stage=compare", f"stage.runs=[{order[0]},{order[1]}]", "eval.resamples=50", run_dir=tmp_path / "cmp"
            )
            for call in (run_stage, compare.run):  # the early check, and the stage's own before it reads
                with pytest.raises(ConfigError, match=expected) as refused:
                    call(cfg)
                assert "\n" not in str(refused.value)
        assert not (tmp_path / "cmp" / "comparison.json").exists()
        readers = [("stage=eval", "task=esnli"), ("stage=judge", "judge_model=tiny_llava"), ("stage=review",)]
        for args in readers:
            with pytest.raises(ConfigError, match=expected):
                run_stage(make_cfg(*args, f"stage.run={busy}", run_dir=tmp_path / "reader"))
        with pytest.raises(ConfigError, match=expected):  # the review stage itself, not only the early check
            review.run(make_cfg("stage=review", f"stage.run={busy}", "review.port=0", run_dir=tmp_path / "reader"))
    assert {p: p.read_bytes() for p in busy.glob("*.json*")} == before
    # once the writer is gone, the same comparison runs
    run_stage(make_cfg("stage=compare", f"stage.runs=[{busy},{idle}]", "eval.resamples=50", run_dir=tmp_path / "cmp"))
    assert (tmp_path / "cmp" / "comparison.json").is_file()
