"""stage=review: the page's server (Starlette's test client) and the page itself in Debian's Chromium (Playwright) on a
run made by the tiny models."""

from __future__ import annotations

import json
import re
import shutil
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import HANG_GUARD_S, POLL_HANG_GUARD_S, lines, start_vlx, wait_for

from vlx.review import data as review_data
from vlx.review.app import MAX_BODY, allowed_hosts, create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """12 shapes items through tiny LLaVA with label scores, scored, plus a judge's verdicts."""
    from conftest import compose_config
    from hydra.core.global_hydra import GlobalHydra

    from vlx.__main__ import run_stage

    root = tmp_path_factory.mktemp("review")
    run = root / "run"
    run_stage(
        compose_config(
            "model=tiny_llava",
            "task=shapes",
            "task.limit=12",
            "decode=score_then_explain",
            "generation.max_new_tokens=12",
            "eval_after_infer=true",
            "eval.resamples=20",
            run_dir=run,
        )
    )
    GlobalHydra.instance().clear()
    rows = lines(run / "predictions.jsonl")
    judge = run / "judgements" / "tiny_llava"
    judge.mkdir(parents=True)
    verdict = {"verdict": "weak yes", "score": 2 / 3, "judge": "tiny_llava", "raw": "Weak yes."}
    (judge / "verdicts.jsonl").write_text("".join(json.dumps({"id": r["id"], **verdict}) + "\n" for r in rows))
    return run, rows


@pytest.fixture
def client(tiny_run, tmp_path):
    from starlette.testclient import TestClient

    run, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    app = create_app(review_data.load(copy), hosts=allowed_hosts("127.0.0.1", 8765))
    return TestClient(app, base_url="http://127.0.0.1:8765"), copy


def test_run_and_items_api(client, tiny_run):
    api, run = client
    _, rows = tiny_run
    info = api.get("/api/run").json()
    assert (
        info["items"] == 12
        and info["task"] == "shapes"
        and info["labels"] == ["entailment", "contradiction", "neutral"]
    )
    assert info["confusion_matrix"]["cols"][-1] == "unparsed" and info["has_scores"] and info["judged"]
    assert {"bleu4", "rouge_l", "cider", "bertscore_f1"} <= set(info["item_metrics"])
    page = api.get("/api/items", params={"limit": 5}).json()
    assert page["total"] == 12 and [i["id"] for i in page["items"]] == [r["id"] for r in rows[:5]]
    first = page["items"][0]
    assert first["image"] == "image/0" and first["judge"]["verdict"] == "weak yes" and first["scores"]
    wrong = api.get("/api/items", params={"wrong": "1", "limit": 50}).json()
    assert wrong["total"] == sum(r["pred"] != r["gold"] for r in rows) and all(not i["correct"] for i in wrong["items"])
    gold = rows[0]["gold"]
    assert api.get("/api/items", params={"gold": gold}).json()["total"] == sum(r["gold"] == gold for r in rows)
    by_rouge = api.get("/api/items", params={"sort": "rouge_l", "order": "desc", "limit": 50}).json()["items"]
    values = [i["metrics"]["rouge_l"] for i in by_rouge]
    assert values == sorted(values, reverse=True)
    assert api.get("/image/0").headers["content-type"] == "image/png"


def test_rating_is_saved_and_filters_follow_it(client):
    api, run = client
    ids = [i["id"] for i in api.get("/api/items").json()["items"]]
    answer = api.post("/api/rate", json={"id": ids[2], "rater": "ana", "verdict": "weak no"})
    assert answer.status_code == 200 and answer.json()["score"] == pytest.approx(1 / 3)
    api.post("/api/rate", json={"id": ids[2], "rater": "ana", "verdict": "yes"})  # changed: the last one counts
    rows = lines(run / "ratings.jsonl")
    assert [(r["id"], r["rater"], r["verdict"]) for r in rows] == [(ids[2], "ana", "weak no"), (ids[2], "ana", "yes")]
    rated = api.get("/api/items", params={"rater": "ana", "rated": "yes"}).json()
    assert [i["id"] for i in rated["items"]] == [ids[2]] and rated["items"][0]["rating"] == "yes"
    assert api.get("/api/items", params={"rater": "ana", "rated": "no"}).json()["total"] == 11
    assert api.get("/api/items", params={"rater": "bob", "rated": "no"}).json()["total"] == 12
    assert api.get("/api/run").json()["raters"] == ["ana"]


def test_writes_from_elsewhere_and_bad_ratings_are_refused(client):
    api, run = client
    item = api.get("/api/items").json()["items"][0]["id"]
    body = {"id": item, "rater": "ana", "verdict": "yes"}
    assert api.post("/api/rate", json=body, headers={"Origin": "http://evil.example"}).status_code == 403
    assert api.post("/api/rate", json=body, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert api.post("/api/rate", content=json.dumps(body), headers={"Content-Type": "text/plain"}).status_code == 415
    assert api.post("/api/rate", json={**body, "verdict": "maybe"}).status_code == 400
    assert api.post("/api/rate", json={**body, "id": "nope"}).status_code == 404
    assert not (run / "ratings.jsonl").exists()  # none of them wrote anything


def test_only_the_bound_host_is_answered(client):
    """DNS rebinding: a page of evil.example whose name resolves to 127.0.0.1 sends Host (and Origin) evil.example;
    it reads nothing and rates nothing."""
    api, run = client
    item = api.get("/api/items").json()["items"][0]["id"]
    evil = {"Host": "evil.example:8765", "Origin": "http://evil.example:8765"}
    for url in ("/", "/api/run", "/api/items", "/image/0", "/files/confusion_matrix.png", "/static/app.js"):
        assert api.get(url, headers=evil).status_code == 403, url
    assert api.post("/api/rate", json={"id": item, "rater": "ana", "verdict": "yes"}, headers=evil).status_code == 403
    assert api.get("/api/run", headers={"Host": "127.0.0.1:9999"}).status_code == 403  # another port
    assert not (run / "ratings.jsonl").exists()
    for host in ("localhost:8765", "[::1]:8765", "LOCALHOST:8765"):
        assert api.get("/api/run", headers={"Host": host}).status_code == 200, host
    assert "192.168.1.5:80" in allowed_hosts("192.168.1.5", 80) and "[fe80::1]:80" in allowed_hosts("fe80::1", 80)


def test_bad_requests_are_refused_with_one_line(client):
    """Oversized bodies and names, deep JSON and odd digits: a 4xx with a message, never a 500, nothing written."""
    api, run = client
    item = api.get("/api/items").json()["items"][0]["id"]
    body = {"id": item, "rater": "ana", "verdict": "yes"}
    big = json.dumps({**body, "pad": "x" * (MAX_BODY + 1)})
    assert api.post("/api/rate", content=big, headers={"Content-Type": "application/json"}).status_code == 413

    def chunks():  # no Content-Length: the limit holds while reading
        yield b'{"pad": "'
        for _ in range(100):
            yield b"x" * 4096

    assert api.post("/api/rate", content=chunks(), headers={"Content-Type": "application/json"}).status_code == 413
    answer = api.post("/api/rate", json={**body, "rater": "a" * 201})
    assert answer.status_code == 400 and "at most 200 characters" in answer.json()["error"]
    deep = "[" * 30_000 + "]" * 30_000  # under the size limit, over the recursion limit
    assert api.post("/api/rate", content=deep, headers={"Content-Type": "application/json"}).status_code == 400
    for url in ("/image/²", "/image/٣", "/image/0x1"):
        assert api.get(url).status_code == 404, url
    assert not (run / "ratings.jsonl").exists()
    assert api.post("/api/rate", json={**body, "rater": "a" * 200}).status_code == 200


def test_a_cut_short_ratings_write_loses_nothing(client, caplog):
    """A write to ratings.jsonl cut short (kill -9, full disk): the next rating starts a line of its own, the page
    and stage=eval's reader keep working, every whole rating counts; a bad line in the middle is named, not a 500."""
    api, run = client
    ids = [i["id"] for i in api.get("/api/items").json()["items"]]
    assert api.post("/api/rate", json={"id": ids[0], "rater": "ana", "verdict": "yes"}).status_code == 200
    path = run / "ratings.jsonl"
    with path.open("a") as f:
        f.write('{"id": "' + ids[1] + '", "rater": "ana", "verd')  # the kill
    assert api.get("/api/items", params={"rater": "ana", "rated": "yes"}).json()["total"] == 1
    assert api.post("/api/rate", json={"id": ids[2], "rater": "ana", "verdict": "no"}).status_code == 200
    text = path.read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 3 and json.loads(text.splitlines()[2])["id"] == ids[2]
    caplog.clear()
    rated = api.get("/api/items", params={"rater": "ana", "rated": "yes"})
    assert rated.status_code == 200 and sorted(i["id"] for i in rated.json()["items"]) == sorted([ids[0], ids[2]])
    assert api.get("/api/run").json()["raters"] == ["ana"]
    from vlx.run.ratings import RatingStore

    assert [r["id"] for r in RatingStore(path).rows()] == [ids[0], ids[2]]  # what stage=eval reads
    assert any(f"{path}:2: a rating cut short" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    path.write_text(text + "not json\n" + text.splitlines()[0] + "\n")  # a hand-broken line in the middle
    answer = api.get("/api/items", params={"rater": "ana"})
    assert answer.status_code == 409 and f"{path}:4: not a JSON line" in answer.json()["error"]


def test_a_full_disk_is_answered_507_and_said_once(client, caplog):
    """A rating the disk cannot take (the kernel refusing the write, as a full disk does): 507 naming the file, one
    WARNING line in the server's log naming it, the file left as it was; once there is room, ratings are saved and
    a line says so."""
    from test_ratings import file_size_limit

    api, run = client
    ids = [i["id"] for i in api.get("/api/items").json()["items"]]
    assert api.post("/api/rate", json={"id": ids[0], "rater": "ana", "verdict": "yes"}).status_code == 200
    path = run / "ratings.jsonl"
    before = path.read_bytes()
    caplog.clear()
    caplog.set_level("INFO", logger="vlx.review.app")
    with file_size_limit(len(before) + 30):  # room for part of one line
        answers = [api.post("/api/rate", json={"id": ids[k], "rater": "ana", "verdict": "no"}) for k in (1, 2, 3)]
    assert [a.status_code for a in answers] == [507] * 3
    assert all(f"{path}: the rating could not be saved" in a.json()["error"] for a in answers)
    assert path.read_bytes() == before  # no part of a refused rating stays
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and str(path) in warned[0] and "could not be saved" in warned[0], warned
    assert api.post("/api/rate", json={"id": ids[4], "rater": "ana", "verdict": "no"}).status_code == 200
    assert [(r["id"], r["verdict"]) for r in lines(path)] == [(ids[0], "yes"), (ids[4], "no")]
    assert any(str(path) in r.getMessage() and "saved again" in r.getMessage() for r in caplog.records)
    rated = api.get("/api/items", params={"rater": "ana", "rated": "yes"})
    assert rated.status_code == 200 and rated.json()["total"] == 2


def test_image_route_serves_only_images(tiny_run, tmp_path):
    """A prediction row naming another file (/etc/passwd, a path with ..) gets no image route."""
    from starlette.testclient import TestClient

    run, rows = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    image = Path(rows[2]["image"])
    edited = [dict(r) for r in rows]
    edited[0]["image"] = "/etc/passwd"
    edited[1]["image"] = str(image.parent / ".." / image.parent.name / image.name)  # exists, but through ..
    (copy / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in edited))
    api = TestClient(create_app(review_data.load(copy)), base_url="http://localhost:8765")
    for url in ("/image/0", "/image/1"):
        answer = api.get(url)
        assert answer.status_code == 404 and b"root:" not in answer.content
    assert api.get("/image/2").headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    "url",
    [
        "/static/../../../../etc/passwd",
        "/static/..%2f..%2f..%2fetc%2fpasswd",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/image/-1",
        "/image/12",
        "/image/..%2f0",
        "/files/predictions.jsonl",
        "/files/..%2fmetrics.json",
        "/files/%2fetc%2fpasswd",
        "/../../etc/passwd",
    ],
)
def test_no_url_reaches_other_files(client, url):
    api, _ = client
    answer = api.get(url)
    assert answer.status_code == 404 and b"root:" not in answer.content


def test_sample_is_kept_across_restarts(tiny_run, tmp_path):
    run, rows = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    first = review_data.load(copy, sample=6, seed=3)
    assert len(first.sample) == 6 and json.loads((copy / "review_sample.json").read_text())["ids"] == first.sample
    assert review_data.load(copy, sample=6, seed=3).sample == first.sample
    assert review_data.load(copy, sample=6, seed=4).sample != first.sample or len(rows) <= 6


def _url(log: Path) -> str | None:
    match = re.search(r"vlx review: (http://\S+/)", log.read_text()) if log.is_file() else None
    return match.group(1) if match else None


def _serve(run: Path, log: Path, port: int = 0):
    proc = start_vlx(
        "stage=review", f"stage.run={run}", f"review.port={port}", f"hydra.run.dir={log.parent / log.stem}", log=log
    )
    wait_for(lambda: _url(log) is not None, proc)
    return proc, _url(log)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopping_the_server_is_a_normal_end(tiny_run, tmp_path, stop):
    """Ctrl-C (or a plain kill) is how a review ends: exit 0, an INFO line saying the server stopped and how many
    ratings the run holds, and no ERROR line (it once said `[ERROR] interrupted; run the same command again`)."""
    log = tmp_path / "serve.log"
    proc, url = _serve(tiny_run[0], log)
    with urllib.request.urlopen(url + "api/run", timeout=HANG_GUARD_S) as answer:  # it serves before it stops
        assert answer.status == 200
    proc.send_signal(stop)
    assert proc.wait(timeout=HANG_GUARD_S) == 0, log.read_text()[-2000:]
    text = log.read_text()
    assert re.search(r"\[vlx\.stages\.review\]\[INFO\] - review server stopped: \d+ ratings in ", text), text
    assert "ERROR" not in text and "Traceback" not in text and "interrupted" not in text, text


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(CHROMIUM).is_file(), reason="Debian's chromium is not installed (apt-get install chromium)"
)
def test_rating_in_the_browser_survives_reload_and_kill(tiny_run, tmp_path):
    """The page in Chromium: filter, rate five items with the keyboard, reload, kill the server mid-way and start
    it again: every rating is kept; a path-traversal URL is refused."""
    from playwright.sync_api import sync_playwright

    run, rows = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    proc, url = _serve(copy, tmp_path / "serve1.log")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_FLAGS, timeout=POLL_HANG_GUARD_S * 1000)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(POLL_HANG_GUARD_S * 1000)  # Playwright's 30 s: too short a hang guard when busy
            page.goto(url)
            page.wait_for_selector(".card")
            wrong = sum(r["pred"] != r["gold"] for r in rows)
            page.check("#f-wrong")
            page.wait_for_function(f"document.querySelector('#count').textContent.startsWith('{wrong} items')")
            assert page.locator("#list li").count() == wrong
            page.uncheck("#f-wrong")
            page.wait_for_function("document.querySelector('#count').textContent.startsWith('12 items')")
            page.fill("#rater", "ana")
            page.locator("#rater").dispatch_event("change")
            page.locator(".text").click()  # focus leaves the name field; keys now rate
            for key in "12341":
                page.keyboard.press(key)
                page.wait_for_function("document.querySelector('#status').textContent.includes('saved')")
            wait_for(lambda: len(lines(copy / "ratings.jsonl")) == 5)
            got = [(r["id"], r["verdict"]) for r in lines(copy / "ratings.jsonl")]
            want = list(zip([r["id"] for r in rows[:5]], ["yes", "weak yes", "weak no", "no", "yes"], strict=True))
            # each item its own verdict; the file's order is the order the saves arrived, which two quick keys
            # may swap (each save is its own request)
            assert sorted(got) == sorted(want)
            page.screenshot(path=str(tmp_path / "review.png"))
            page.reload()
            page.wait_for_selector(".card")
            page.wait_for_function("document.querySelector('#progress-text').textContent.includes('5 of 12')")
            assert page.locator("#list li .dot.yes").count() == 2 and page.locator("#list li .dot.no").count() == 1

            proc.send_signal(signal.SIGKILL)  # the server dies mid-session
            proc.wait(timeout=HANG_GUARD_S)
            # the same address again: the page's origin, and so the rater name it keeps, stay the same
            proc, url = _serve(copy, tmp_path / "serve2.log", port=int(url.rstrip("/").rsplit(":", 1)[1]))
            page.goto(url)
            page.wait_for_function("document.querySelector('#progress-text').textContent.includes('5 of 12')")
            page.locator("#list li").nth(6).click()
            page.keyboard.press("4")
            page.wait_for_function("document.querySelector('#progress-text').textContent.includes('6 of 12')")
            browser.close()
        assert len(lines(copy / "ratings.jsonl")) == 6 and lines(copy / "ratings.jsonl")[-1]["id"] == rows[6]["id"]
        for bad in ("static/..%2f..%2f..%2fetc%2fpasswd", "image/..%2f..%2fpredictions.jsonl", "files/ratings.jsonl"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(url + bad, timeout=POLL_HANG_GUARD_S)
            assert err.value.code == 404
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=HANG_GUARD_S)


def test_fault_script_runs_its_kill_case(tiny_run, tmp_path, capsys):
    """scripts/bench_review_faults.py stays runnable: importable, its options parse, and its kill -9 case (no root
    needed) runs against the real server: one round of two raters, every answered rating found, exit status 0."""
    import importlib.util
    import sys

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("bench_review_faults", REPO / "scripts" / "bench_review_faults.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script
    spec.loader.exec_module(script)
    args = script.parser().parse_args([])
    assert (args.cases, args.rounds, args.clients, args.per_client, args.disk_kib) == ("all", 10, 4, 200, 512)
    code = script.main(
        [
            "--run",
            str(tiny_run[0]),
            "--cases",
            "kill",
            "--rounds",
            "1",
            "--clients",
            "2",
            "--per-client",
            "10",
            "--no-eval",
            "--work",
            str(tmp_path / "work"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "| kill -9 | round 1 | killed after " in out and "0 lost" in out and "**FAIL**" not in out, out
    assert not (tiny_run[0] / "ratings.jsonl").exists()  # it rated a copy


def test_binding_beyond_loopback_is_warned(caplog):
    from vlx.errors import ConfigError
    from vlx.stages.review import check_host

    with caplog.at_level("WARNING", logger="vlx.stages.review"):
        assert check_host("127.0.0.1") == "127.0.0.1" and check_host("localhost") == "localhost"
        assert check_host("::1") == "::1"
        assert not caplog.records
        for host in ("0.0.0.0", "::", "192.168.1.5"):
            assert check_host(host) == host
        assert len(caplog.records) == 3 and "reachable from other machines" in caplog.records[0].getMessage()
    with pytest.raises(ConfigError, match="review.host is empty"):
        check_host("  ")


def test_mistakes_are_named(make_cfg, tiny_run, tmp_path):
    from vlx.__main__ import run_stage
    from vlx.errors import ConfigError
    from vlx.stages.review import bind

    with pytest.raises(ConfigError, match="needs stage.run=<run dir>"):
        run_stage(make_cfg("stage=review"))
    with pytest.raises(ConfigError, match="no predictions.jsonl there"):
        run_stage(make_cfg("stage=review", f"stage.run={tmp_path}"))
    with pytest.raises(ConfigError, match="review.sample=0"):
        review_data.load(tiny_run[0], sample=0)
    with pytest.raises(ConfigError, match="review.port=-3"):
        bind("127.0.0.1", -3)
    for empty in ("review.host=", "review.host=null"):
        with pytest.raises(ConfigError, match="review.host is empty"):
            run_stage(make_cfg("stage=review", f"stage.run={tiny_run[0]}", empty))
    taken = bind("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match="cannot listen there"):
            bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
