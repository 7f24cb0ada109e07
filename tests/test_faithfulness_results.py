"""The faithfulness tests' numbers as every other metric's: stage=report's tables with intervals and settings,
stage=compare's paired differences over the items both runs tested alike, W&B's summary and tables, and the review
page's rows beside the original; on tiny models through stage=infer and stage=faithfulness."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import POLL_HANG_GUARD_S, lines, wandb_run
from test_faithfulness import faithfulness, infer

from vlx.__main__ import run_stage
from vlx.faithfulness import counterfactual
from vlx.faithfulness.catalog import DECLARED, declared_test
from vlx.faithfulness.measures import item_counts
from vlx.faithfulness.paired import faithfulness_differences, lower_is_better
from vlx.faithfulness.results import value_text
from vlx.metrics.bootstrap import percentile_interval, resample_indices
from vlx.run.directory import RunDir

CF = ("stage.positions=1", "stage.words_per_position=2")


@pytest.fixture(scope="module")
def tested(tmp_path_factory) -> dict:
    """Two runs of 6 shapes items: A (the tiny LLaVA-NeXT, labels scored) and B (the tiny PaliGemma, explaining too),
    both tested by counterfactual edits and mean-colour ablations; A on all 6 items, B on a sample of 4."""
    from conftest import compose_config
    from hydra.core.global_hydra import GlobalHydra

    root = tmp_path_factory.mktemp("faith")

    def make_cfg(*overrides: str, run_dir: Path) -> object:
        return compose_config(*overrides, run_dir=run_dir)

    a = infer(make_cfg, root / "A")
    b = infer(make_cfg, root / "B", "model=tiny_paligemma", "decode=score_then_explain", "generation.max_new_tokens=6")
    faithfulness(make_cfg, a, *CF)
    faithfulness(make_cfg, b, *CF, "stage.sample=4")
    GlobalHydra.instance().clear()
    return {"root": root, "a": a, "b": b, "make_cfg": make_cfg}


def test_report_shows_each_tests_numbers_with_intervals_and_settings(tested, make_cfg, tmp_path):
    a, b = tested["a"], tested["b"]
    run_stage(make_cfg("stage=report", f"stage.runs=[{a.path},{b.path}]", run_dir=tmp_path / "report"))
    text = (tmp_path / "report" / "results.md").read_text()
    assert "## Faithfulness" in text and "### counterfactual (Counterfactual edits)" in text
    assert "### image_reliance_mean_colour (Image reliance)" in text
    numbers = a.faithfulness_results()["counterfactual"]
    section = text[text.index("### counterfactual") : text.index("### image_reliance")]
    header, _, row_a, row_b = section.strip().splitlines()[2:6]
    cells = [c.strip() for c in row_a.strip("|").split("|")]
    titles = [c.strip() for c in header.strip("|").split("|")]
    assert titles == ["Run", *(m.title for m in counterfactual.TEST.measures), "Settings"]
    assert cells[0] == str(a.path) and cells[1] == value_text(numbers["flip_rate"])
    low, high = numbers["flip_rate"]["ci"]
    assert cells[1] == f"{numbers['flip_rate']['value']:.4f} [{low:.4f}, {high:.4f}] n=12"
    words = ", ".join(counterfactual.WORDS[:3])
    assert cells[-1] == f"sample=None; seed=0; positions=1; words_per_position=2; words=40 ({words}, ...); decode=score"
    assert "sample=4" in row_b and "decode=score_then_explain" in row_b and "n=8" in row_b
    assert "Lower is better for Unfaithful among flips (edits), Unfaithful among flips (items)." in section
    rows = (tmp_path / "report" / "faithfulness.csv").read_text().splitlines()
    assert rows[0] == "run,test,measure,value,ci_low,ci_high,n,settings"
    assert any(
        r.startswith(f"{a.path},counterfactual,flip_rate,{numbers['flip_rate']['value']},{low},{high},12,")
        for r in rows
    )


def independent_difference(rows_a, rows_b, items, part, resamples, seed, level=0.95):
    """B - A of a ratio of sums over `items` (`part(row)`: the row's (numerator, denominator) or None), its
    interval and p-value, resampled item by item with index draws."""

    def per_item(rows):
        out = {i: [0.0, 0.0] for i in items}
        for r in rows:
            if r["item"] in out and part(r) is not None:
                top, bottom = part(r)
                out[r["item"]][0] += top
                out[r["item"]][1] += bottom
        return np.asarray([out[i] for i in items], dtype=float)

    pa, pb = per_item(rows_a), per_item(rows_b)

    def ratio(c, idx):
        return c[idx, 0].sum() / c[idx, 1].sum() if c[idx, 1].sum() else np.nan

    every = np.arange(len(items))
    point = ratio(pb, every) - ratio(pa, every)
    diffs = np.asarray([ratio(pb, idx) - ratio(pa, idx) for idx in resample_indices(len(items), resamples, seed)])
    diffs = diffs[~np.isnan(diffs)]
    p = (1 + np.count_nonzero(np.abs(diffs - point) >= abs(point) - 1e-12)) / (len(diffs) + 1)
    return point, percentile_interval(diffs, level), p


def flips(r):
    return None if r["flipped"] is None else (float(r["flipped"]), 1.0)


def unfaithful_among_flips(r):
    return None if r["flipped"] is None else (float(bool(r["unfaithful"])), float(bool(r["flipped"])))


def probability_change(r):
    return None if r["probability_change"] is None else (r["probability_change"], 1.0)


def test_compare_pairs_the_items_both_runs_tested_alike(tested, make_cfg, tmp_path):
    a, b = tested["a"], tested["b"]
    run_stage(
        make_cfg("stage=compare", f"stage.runs=[{a.path},{b.path}]", "eval.resamples=200", run_dir=tmp_path / "c")
    )
    result = json.loads((tmp_path / "c" / "comparison.json").read_text())
    rows_a, rows_b = a.faithfulness_rows("counterfactual"), b.faithfulness_rows("counterfactual")
    items = sorted({r["item"] for r in rows_b})
    assert len(items) == 4 and result["faithfulness"]["counterfactual"]["items"] == 4
    # the same edits of the shared items in both runs: seeded by the item's id, not by the sample
    assert {(r["id"], r["text"]) for r in rows_b} == {(r["id"], r["text"]) for r in rows_a if r["item"] in items}
    got = result["metrics"]["counterfactual.flip_rate"]
    point, ci, p = independent_difference(rows_a, rows_b, items, flips, 200, 0)
    assert got["difference"] == pytest.approx(point) and got["ci"] == pytest.approx(ci)
    assert got["p_value"] == pytest.approx(p) and got["n"] == 4
    assert got["a"] == pytest.approx(sum(r["flipped"] for r in rows_a if r["item"] in items) / 8)
    # a number that differs item by item: the label's probability change under the mean-colour blank
    image = result["metrics"]["image_reliance_mean_colour.probability_change"]
    ia, ib = (r.faithfulness_rows("image_reliance_mean_colour") for r in (a, b))
    point, ci, p = independent_difference(ia, ib, items, probability_change, 200, 0)
    assert image["difference"] == pytest.approx(point) and image["ci"] == pytest.approx(ci) and ci[0] < ci[1]
    assert image["p_value"] == pytest.approx(p)
    probs = {r["item"]: r["probability_change"] for r in ia}
    assert image["a"] == pytest.approx(np.mean([probs[i] for i in items])) and image["a"] != 0
    for measure in DECLARED["counterfactual"].measures:
        assert f"counterfactual.{measure.name}" in result["metrics"] or measure.name.endswith("unfaithful_rate")
    assert any("labels and explanations not compared" in n for n in result["notes"])  # neither run is scored
    md = (tmp_path / "c" / "comparison.md").read_text()
    assert "| counterfactual.flip_rate |" in md and "faithfulness counterfactual: 4 items both runs tested alike" in md


def test_compare_says_in_one_line_when_the_settings_differ(tested, make_cfg, tmp_path, caplog):
    a = tested["a"]
    other = RunDir(tmp_path / "B2")
    shutil.copytree(tested["b"].path, other.path)
    shutil.rmtree(other.faithfulness_dir)
    faithfulness(make_cfg, other, "stage.tests=[counterfactual]", "stage.positions=2", "stage.words_per_position=2")
    run_stage(
        make_cfg("stage=compare", f"stage.runs=[{a.path},{other.path}]", "eval.resamples=50", run_dir=tmp_path / "c")
    )
    result = json.loads((tmp_path / "c" / "comparison.json").read_text())
    assert not any(k.startswith("counterfactual.") for k in result["metrics"])
    (note,) = [n for n in result["notes"] if n.startswith("faithfulness counterfactual")]
    assert "settings differ (A -> B: positions: 1 -> 2)" in note and "\n" not in note
    assert any(n.startswith("faithfulness image_reliance_mean_colour not compared: only") for n in result["notes"])
    assert note in caplog.text


def test_stage_faithfulness_logs_its_numbers_and_rows_to_wandb(tested, make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "local-0123456789abcdef0123456789abcdef01234567")
    run = RunDir(tmp_path / "A")
    shutil.copytree(tested["a"].path, run.path)
    cfg = make_cfg(
        "stage=faithfulness",
        f"stage.run={run.path}",
        "stage.tests=[counterfactual]",
        *CF,
        "stage.resamples=100",
        "logger=wandb",
        run_dir=tmp_path / "f",
    )
    results = run_stage(cfg)
    (folder,) = (tmp_path / "f" / "wandb").glob("offline-run-*")
    summary = wandb_run(folder)["summary"]
    flip = results["counterfactual"]["flip_rate"]
    assert summary["counterfactual.flip_rate"] == pytest.approx(flip["value"])
    assert [summary["counterfactual.flip_rate_ci_low"], summary["counterfactual.flip_rate_ci_high"]] == flip["ci"]
    assert summary["counterfactual.flip_rate_n"] == 12
    assert "image_reliance_mean_colour.flip_rate" in summary  # every output faithfulness.json holds
    (table,) = (folder / "files" / "media" / "table").glob("faithfulness_counterfactual_*.table.json")
    data = json.loads(table.read_text())
    assert data["columns"][:5] == ["id", "item", "word", "position", "text"]
    assert [r[0] for r in data["data"]] == [r["id"] for r in lines(run.faithfulness_file("counterfactual"))]


def write_output(run: RunDir, output: str, rows: list[dict], **settings) -> None:
    """A test output's rows and numbers as stage=faithfulness writes them."""
    run.faithfulness_dir.mkdir(parents=True)
    run.faithfulness_file(output).write_text("".join(json.dumps(r) + "\n" for r in rows))
    run.faithfulness_results_file.write_text(json.dumps({output: {"settings": {"seed": 0, **settings}}}))


def test_rates_with_their_own_denominators_are_paired_item_by_item(tmp_path):
    """Unfaithful edits among each run's own flipping edits: items without a flip in one run weigh nothing there;
    an item whose edits differ between the runs is left out, and said."""
    rng = np.random.default_rng(3)

    def rows(flip_p: float) -> list[dict]:
        out = []
        for i in range(30):
            for k in range(3):
                flipped = bool(rng.random() < flip_p)
                unfaithful = flipped and bool(rng.random() < 0.5)
                word = "odd" if (i, k) == (29, 0) and flip_p > 0.5 else "old"
                out.append({"id": f"i{i}|cf{k}", "item": f"i{i}", "word": word, "position": k, "flipped": flipped,
                            "unfaithful": unfaithful})  # fmt: skip
        return out

    a, b = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    rows_a, rows_b = rows(0.3), rows(0.6)
    write_output(a, "counterfactual", rows_a, positions=3, sample=None)
    write_output(b, "counterfactual", rows_b, positions=3, sample=20)  # another sample: still paired
    found, notes, info = faithfulness_differences(a, b, resamples=300, seed=1, level=0.9)
    items = [f"i{i}" for i in range(29)]
    assert info["counterfactual"]["items"] == 29 and notes == [
        "faithfulness counterfactual: 1 shared items left out, their changes differ between the runs"
    ]
    got = found["counterfactual.unfaithful_rate"]
    point, ci, p = independent_difference(rows_a, rows_b, sorted(items), unfaithful_among_flips, 300, 1, 0.9)
    assert (
        got.difference == pytest.approx(point) and list(got.ci) == pytest.approx(ci) and got.p_value == pytest.approx(p)
    )
    assert 0 < got.p_value <= 1 and got.ci[0] < got.ci[1]
    assert lower_is_better(list(found)) == ["counterfactual.unfaithful_rate", "counterfactual.item_unfaithful_rate"]
    write_output(RunDir(tmp_path / "c"), "counterfactual", rows_a, positions=2, sample=None)
    found, notes, _ = faithfulness_differences(a, RunDir(tmp_path / "c"), resamples=10, seed=0, level=0.95)
    assert found == {} and notes == [
        "faithfulness counterfactual not compared: the runs' settings differ (A -> B: positions: 3 -> 2), so their "
        "items were not changed alike; rerun one with the other's settings"
    ]


def test_a_test_is_found_by_its_outputs_name():
    assert declared_test("counterfactual") is DECLARED["counterfactual"]
    assert declared_test("image_reliance_other_item") is DECLARED["image_reliance"]
    assert declared_test("cc_shap") is DECLARED["cc_shap"] and declared_test("a_newer_test") is None
    rows = [
        {"item": "a", "flipped": True, "unfaithful": True},
        {"item": "a", "flipped": None, "unfaithful": None},
        {"item": "b", "flipped": None, "unfaithful": None},
    ]
    unfaithful = DECLARED["counterfactual"].measure("unfaithful_rate")
    assert item_counts(rows, unfaithful) == {"a": (1.0, 1.0), "b": (0.0, 0.0)}


def _serve(run: Path):
    import uvicorn

    from vlx.review import data as review_data
    from vlx.review.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(review_data.load(run)), port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + POLL_HANG_GUARD_S
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the review server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}/"


def test_review_api_serves_each_items_rows_and_ablation_images(tested, tmp_path):
    from starlette.testclient import TestClient

    from vlx.review import data as review_data
    from vlx.review.app import create_app

    b = tested["b"]
    api = TestClient(create_app(review_data.load(b.path)), base_url="http://127.0.0.1:8765")
    items = api.get("/api/items").json()["items"]
    tested_ids = {r["item"] for r in b.faithfulness_rows("counterfactual")}
    assert {i["id"] for i in items if i["faithfulness"]} == tested_ids
    item = next(i for i in items if i["faithfulness"])
    cf, image = item["faithfulness"]
    rows = [r for r in b.faithfulness_rows("counterfactual") if r["item"] == item["id"]]
    assert cf["output"] == "counterfactual" and [r["id"] for r in cf["rows"]] == [r["id"] for r in rows]
    for view, row in zip(cf["rows"], rows, strict=True):
        assert view["marked"][1].lower() == row["word"] and " ".join(p for p in view["marked"] if p) == row["text"]
        assert (view["label"], view["explanation"], view["flipped"]) == (
            row["label"],
            row["explanation"],
            row["flipped"],
        )
    assert image["output"] == "image_reliance_mean_colour" and image["rows"][0]["image"].startswith(
        "faithfulness-image/"
    )
    png = api.get("/" + image["rows"][0]["image"])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert api.get("/faithfulness-image/99").status_code == 404


@pytest.mark.skipif(not Path(shutil.which("chromium") or "/usr/bin/chromium").is_file(), reason="no Debian chromium")
def test_review_page_shows_the_changes_beside_the_original(tested):
    from playwright.sync_api import sync_playwright
    from test_review import BROWSER_FLAGS, CHROMIUM

    b = tested["b"]
    rows = b.faithfulness_rows("counterfactual")
    first = next(r for r in b.predictions() if r.id in {x["item"] for x in rows})
    server, thread, url = _serve(b.path)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS, timeout=POLL_HANG_GUARD_S * 1000)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(POLL_HANG_GUARD_S * 1000)
            page.goto(url)
            page.wait_for_selector(".card")
            index = [r.id for r in b.predictions()].index(first.id)
            page.locator("#list li").nth(index).click()
            page.wait_for_selector(".faith[data-output=counterfactual]")
            mine = [r for r in rows if r["item"] == first.id]
            section = page.locator(".faith[data-output=counterfactual]")
            assert f"original label {first.pred}" in section.locator("h3").inner_text()
            assert section.locator("mark").all_inner_texts() == [r["text"].split()[r["position"]] for r in mine]
            assert section.locator("tr[data-id] .badge").all_inner_texts() == [r["label"] for r in mine]
            assert section.locator(".fexpl").all_inner_texts() == [(r["explanation"] or "") for r in mine]
            assert section.locator(".badge.flip").count() == sum(bool(r["flipped"]) for r in mine)
            image = page.locator(".faith[data-output=image_reliance_mean_colour] img.fimg")
            page.wait_for_function("document.querySelector('img.fimg').naturalWidth > 0")
            assert image.count() == 1 and page.locator(".rate button").count() == 4  # rating stays as it was
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=POLL_HANG_GUARD_S)


def test_cc_shap_is_compared_item_by_item_and_its_cost_is_not(tmp_path):
    """CC-SHAP changes nothing of the input: every shared item pairs; its scores are tested, the seconds and model
    evaluations a run spent are not (they say how the run went, not how the model behaves)."""
    rng = np.random.default_rng(5)

    def rows(shift: float) -> list[dict]:
        return [
            {"id": f"i{i}", "item": f"i{i}", "label": "yes", "cc_shap": float(rng.uniform(-1, 1)) * 0.5 + shift,
             "text_share_label": 0.5, "text_share_explanation": 0.6, "evals": 600, "seconds": 1.0 + shift}
            for i in range(12)
        ]  # fmt: skip

    a, b = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    rows_a, rows_b = rows(0.0), rows(0.4)
    write_output(a, "cc_shap", rows_a, shap_evals=600)
    write_output(b, "cc_shap", rows_b, shap_evals=600)
    found, notes, info = faithfulness_differences(a, b, resamples=200, seed=0, level=0.95)
    assert notes == [] and info["cc_shap"]["items"] == 12
    mean = lambda rs: sum(r["cc_shap"] for r in rs) / len(rs)  # noqa: E731
    assert found["cc_shap.cc_shap"].difference == pytest.approx(mean(rows_b) - mean(rows_a))
    assert "cc_shap.text_share_label" in found and "cc_shap.js_distance" not in found  # no values: nothing to test
    assert not {"cc_shap.seconds_per_item", "cc_shap.evals_per_item"} & set(found)
