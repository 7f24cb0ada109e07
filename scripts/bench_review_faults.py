"""The review server under real faults: a full disk (a small tmpfs) and kill -9 while raters post ratings.

    python scripts/bench_review_faults.py                       # makes a tiny run first (tiny LLaVA, 12 items)
    python scripts/bench_review_faults.py --run <finished run> --rounds 10 --clients 4 --per-client 200
    python scripts/bench_review_faults.py --cases kill --no-eval   # no root needed, no stage=eval (30 s each)

Full disk (needs root: mounts a tmpfs of --disk-kib; skipped with a message where it cannot mount): a copy of the
run on the tmpfs, filled by a filler file to one free page (tmpfs allocates by 4 KiB pages) and that page by earlier
ratings to within a few hundred bytes; the real server (`vlx stage=review`) started with its Hydra folder on the
normal disk, and again with it on the full disk (started on the full disk, then on a disk that fills while it runs);
ratings are posted until the disk is full and past it, then the filler is deleted and more are posted. Recorded:
each answer's status and body, the server's output, whether the page still answers, what the ratings reader (the
one the page and `stage=eval` use) keeps, and `stage=eval`'s human score afterwards.

kill -9: --clients threads, each its own rater, post --per-client ratings each while the server is killed with
SIGKILL at a random moment (--rounds times, started again each time, on one ratings file). At the end every rating
answered 200 must be in ratings.jsonl exactly once and in its rater's order, nothing else may be there but ratings
whose request got no answer (in flight at the kill), the last rating per rater and item counts, and the page and
`stage=eval` read the file.

Prints a markdown table of the cases and their outcomes (FAIL marks a broken promise), the machine and the command;
exits 1 if anything failed.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.client
import json
import logging
import os
import platform
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VERDICTS = ("yes", "weak yes", "weak no", "no")
PAGE = 4096  # tmpfs allocates whole pages
START_GUARD_S = 300  # a hang guard for a server's start, not a timing


@dataclass
class Outcome:
    """One line of the table: a case, a step, what happened, and whether that keeps the promise (None: a fact)."""

    case: str
    step: str
    outcome: str
    ok: bool | None = None


@dataclass
class Post:
    """One rating posted, and its answer (status None: no answer, the connection broke)."""

    item: str
    rater: str
    verdict: str
    status: int | None = None
    body: str = ""
    time: float | None = None


@dataclass
class Report:
    rows: list[Outcome] = field(default_factory=list)

    def add(self, case: str, step: str, outcome: str, ok: bool | None = None) -> None:
        self.rows.append(Outcome(case, step, outcome, ok))
        mark = "" if ok is None else (" ok" if ok else " FAIL")
        print(f"  [{case}] {step}: {outcome}{mark}", file=sys.stderr, flush=True)

    @property
    def failed(self) -> list[Outcome]:
        return [r for r in self.rows if r.ok is False]

    def table(self) -> str:
        out = ["| case | step | outcome | |", "|---|---|---|---|"]
        for r in self.rows:
            mark = "" if r.ok is None else ("ok" if r.ok else "**FAIL**")
            out.append(f"| {r.case} | {r.step} | {r.outcome.replace('|', '/')} | {mark} |")
        return "\n".join(out)


# --- the server and its clients -------------------------------------------------------------------------------------


class Server:
    """`vlx stage=review stage.run=<run>` in a subprocess, its output in `log`."""

    def __init__(self, run: Path, hydra_dir: Path, log: Path) -> None:
        self.run, self.hydra_dir, self.log = run, hydra_dir, log
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.offset = 0  # where the output read by `new_output` starts

    def start(self) -> bool:
        """Starts the server and waits for its address; False where it ends first (its output says why)."""
        with self.log.open("a") as out:
            self.offset = out.tell()
            env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "vlx",
                    "stage=review",
                    f"stage.run={self.run}",
                    "review.port=0",
                    f"hydra.run.dir={self.hydra_dir}",
                ],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + START_GUARD_S
        while time.monotonic() < deadline:
            match = re.search(r"vlx review: http://127\.0\.0\.1:(\d+)/", self.output())
            if match:
                self.port = int(match.group(1))
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        raise TimeoutError(f"the server did not start in {START_GUARD_S} s: {self.output()[-2000:]}")

    def output(self) -> str:
        """What the server printed since it started."""
        with self.log.open("rb") as f:
            f.seek(self.offset)
            return f.read().decode("utf-8", "replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int | None:
        """Ctrl-C, as a rater ends a review; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 30
    ) -> tuple[int | None, str]:
        """One request as the page sends it (same origin); (status, body), status None where the connection broke."""
        origin = f"http://127.0.0.1:{self.port}"
        headers = {"Origin": origin, "Sec-Fetch-Site": "same-origin"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            answer = conn.getresponse()
            return answer.status, answer.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as err:
            return None, f"{type(err).__name__}: {err}"
        finally:
            conn.close()

    def rate(self, item: str, rater: str, verdict: str) -> Post:
        post = Post(item, rater, verdict)
        post.status, post.body = self.request("POST", "/api/rate", {"id": item, "rater": rater, "verdict": verdict})
        if post.status == 200:
            post.time = json.loads(post.body)["time"]
        return post


def read_ratings(path: Path) -> tuple[list[dict[str, Any]] | None, list[str], str]:
    """The ratings file as the page and `stage=eval` read it: (rows or None, the warnings logged, the error if any)."""
    from vlx.errors import DataError
    from vlx.run.ratings import RatingStore

    warnings: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    logger = logging.getLogger("vlx.run.ratings")
    handler = Catch(logging.WARNING)
    logger.addHandler(handler)
    try:
        return RatingStore(path).rows(), warnings, ""
    except (DataError, OSError) as err:
        return None, warnings, str(err)
    finally:
        logger.removeHandler(handler)


def run_eval(run: Path, hydra_dir: Path, resamples: int) -> tuple[int, str, dict[str, Any]]:
    """`vlx stage=eval stage.run=<run>`: exit code, output, metrics.json."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlx",
            "stage=eval",
            f"stage.run={run}",
            f"eval.resamples={resamples}",
            f"hydra.run.dir={hydra_dir}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    metrics = json.loads((run / "metrics.json").read_text()) if res.returncode == 0 else {}
    return res.returncode, res.stdout + res.stderr, metrics


def item_ids(run: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (run / "predictions.jsonl").read_text().splitlines() if line.strip()]


def copy_run(source: Path, dest: Path) -> Path:
    """The run's files without its ratings, lock and sample (the case starts from no ratings)."""
    shutil.copytree(
        source, dest, ignore=shutil.ignore_patterns("ratings.jsonl", ".vlx.lock", "review_sample.json", "*.png")
    )
    return dest


def make_tiny_run(dest: Path) -> Path:
    """12 shapes items through tiny LLaVA, scored (what tests/test_review.py rates)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "vlx",
            "model=tiny_llava",
            "task=shapes",
            "task.limit=12",
            "decode=score_then_explain",
            "generation.max_new_tokens=12",
            "eval_after_infer=true",
            "eval.resamples=20",
            f"hydra.run.dir={dest}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if res.returncode != 0:
        raise SystemExit(f"could not make the tiny run: {(res.stdout + res.stderr)[-2000:]}")
    return dest


def server_lines(text: str) -> str:
    """The server's output beyond its start lines, in a table cell."""
    keep = [
        line
        for line in text.splitlines()
        if line.strip() and "vlx review: http" not in line and "review of " not in line
    ]
    if not keep:
        return "nothing"
    shown = "; ".join(line[line.find("- ") + 2 :] if line.startswith("[20") else line for line in keep[:4])
    more = f" (+{len(keep) - 4} more lines)" if len(keep) > 4 else ""
    return f"{len(keep)} line(s): {shown[:400]}{more}"


# --- full disk ------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(size_kib: int) -> Iterator[Path | None]:
    """A tmpfs of `size_kib` mounted on a fresh folder (None where this process cannot mount), unmounted after."""
    where = Path(tempfile.mkdtemp(prefix="vlx-fulldisk-"))
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(where)], capture_output=True, text=True
    )
    if res.returncode != 0:
        where.rmdir()
        print(
            f"cannot mount a tmpfs ({res.stderr.strip() or 'mount failed'}): the full-disk cases need root",
            file=sys.stderr,
        )
        yield None
        return
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)
        where.rmdir()


def fill(disk: Path, free_pages: int = 1) -> Path:
    """A filler file taking all but `free_pages` pages of the disk."""
    filler = disk / "filler"
    block = b"\xff" * PAGE
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            os.write(fd, block)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    size = filler.stat().st_size // PAGE * PAGE
    os.truncate(filler, max(size - free_pages * PAGE, 0))
    return filler


def free_bytes(disk: Path) -> int:
    stat = os.statvfs(disk)
    return stat.f_bavail * stat.f_frsize


def seed_ratings(path: Path, items: list[str], left: int) -> list[dict[str, Any]]:
    """Earlier ratings filling the ratings file's page to exactly `left` bytes before its end (the last one's rater
    name padded to fit)."""
    rows: list[dict[str, Any]] = []

    def line(k: int, rater: str = "seed") -> tuple[dict[str, Any], bytes]:
        row = {
            "id": items[k % len(items)],
            "rater": rater,
            "verdict": VERDICTS[k % 4],
            "score": 1.0,
            "time": 1000000000.001 + k,
        }
        return row, (json.dumps(row, ensure_ascii=False) + "\n").encode()

    shortest = len(line(0)[1])
    with path.open("ab") as f:
        for k in range(10_000):
            row, data = line(k)
            if PAGE - f.tell() - len(data) - left < shortest + 10:  # the last one is padded to fit exactly
                row, data = line(k, "seed" + "x" * (PAGE - f.tell() - left - len(data)))
                f.write(data)
                rows.append(row)
                break
            f.write(data)
            rows.append(row)
        f.flush()
        os.fsync(f.fileno())
    return rows


def line_length(item: str, rater: str, verdict: str) -> int:
    """The bytes of the line the server writes for this rating (its time with 3 decimals, as it mostly has)."""
    row = {
        "id": item,
        "rater": rater,
        "verdict": verdict,
        "score": 1.0 if verdict == "yes" else 0.0,
        "time": 1796684197.463,
    }
    return len((json.dumps(row, ensure_ascii=False) + "\n").encode())


def check_kept(report: Report, case: str, path: Path, posts: list[Post], seeds: list[dict[str, Any]]) -> None:
    """Every 200 (and every earlier rating) is in the file as read; no refused rating counts."""
    rows, warnings, error = read_ratings(path)
    if rows is None:
        report.add(case, "ratings file read (page's and eval's reader)", f"refused: {error}", False)
        return
    have = [(r["id"], r["rater"], r["verdict"], r.get("time")) for r in rows]
    saved = [(p.item, p.rater, p.verdict, p.time) for p in posts if p.status == 200]
    want = [(r["id"], r["rater"], r["verdict"], r["time"]) for r in seeds] + saved
    lost = [w for w in want if w not in have]
    refused = {(p.item, p.rater, p.verdict) for p in posts if p.status not in (200, None)}
    kept_refused = [h for h in have if h[:3] in refused and h not in saved]
    named = all(str(path) in w for w in warnings)
    report.add(
        case,
        "ratings file read (page's and eval's reader)",
        f"{len(rows)} ratings ({len(seeds)} earlier + {len(saved)} answered 200), {len(lost)} lost, "
        f"{len(kept_refused)} refused-but-kept; {len(warnings)} warning(s)"
        + (f": {warnings[0][:160]}" if warnings else ""),
        not lost and not kept_refused and len(have) == len(want) and named,
    )


def full_disk_case(
    report: Report,
    case: str,
    source: Path,
    work: Path,
    disk: Path,
    hydra_on_disk: bool,
    left: int,
    posts_full: int,
    posts_after: int,
    do_eval: bool,
    resamples: int,
) -> bool:
    """One full-disk case; `hydra_on_disk`: the server's Hydra folder (its log) on the full disk too; `left`: the
    bytes left in the ratings file's last page when the ratings begin (0: its length less one, so that the first
    rating is cut just before its newline). Returns whether the first rating on the full disk was refused (False:
    its line fitted after all, as one whose time has fewer decimals does)."""
    run = copy_run(source, disk / "run")
    items = item_ids(run)
    slug = re.sub(r"\W+", "-", case)
    hydra_dir = (disk if hydra_on_disk else work) / f"hydra-{slug}"
    server = Server(run, hydra_dir, work / f"{slug}.log")
    filler = None
    if hydra_on_disk:  # first: started on a disk already full
        filler = fill(disk, free_pages=0)
        started = server.start()
        out = server.output()
        report.add(
            case,
            "start on a full disk",
            (f"started (port {server.port})" if started else f"exit {server.proc.returncode}")
            + f"; output: {server_lines(out)}",
            "Traceback" not in out and (started or (len(out.strip().splitlines()) == 1 and str(disk) in out)),
        )  # one line naming the file

        server.kill() if started else None
        filler.unlink()
        shutil.rmtree(hydra_dir, ignore_errors=True)
    else:
        filler = fill(disk, free_pages=1)
    try:
        started = server.start()
        report.add(
            case,
            "start" + (" (disk with one free page)" if not hydra_on_disk else ""),
            f"{'started' if started else 'did not start'}; output: {server_lines(server.output())}",
            started,
        )
        if not started:
            return True
        if hydra_on_disk:  # the disk fills while the server runs
            filler = fill(disk, free_pages=1)
        if not left:
            left = line_length(items[0], "full", VERDICTS[0]) - 1
        seeds = seed_ratings(run / "ratings.jsonl", items, left)
        report.add(
            case,
            "disk before the ratings",
            f"{free_bytes(disk)} bytes free on the disk; ratings.jsonl "
            f"{(run / 'ratings.jsonl').stat().st_size} bytes, {len(seeds)} earlier ratings, "
            f"{PAGE - (run / 'ratings.jsonl').stat().st_size} bytes left in its page",
        )
        before = len(server.output())
        posts: list[Post] = []
        for k in range(posts_full):
            post = server.rate(items[k % len(items)], "full", VERDICTS[k % 4])
            posts.append(post)
            page, _ = server.request("GET", "/api/items?rater=full&limit=50")
            size = (run / "ratings.jsonl").stat().st_size
            report.add(
                case,
                f"rating {k + 1} on the full disk",
                f"{post.status} {post.body[:200]}; then GET items {page}; ratings.jsonl {size} bytes",
                post.status in (200, 507) and page == 200,
            )
        out = server.output()[before:]
        report.add(
            case,
            "server output while full",
            server_lines(out),
            "Traceback" not in out and str(run / "ratings.jsonl") in out,
        )
        check_kept(report, case, run / "ratings.jsonl", posts, seeds)
        filler.unlink()
        report.add(case, "filler deleted", f"{free_bytes(disk)} bytes free")
        after = []
        for k in range(posts_after):
            after.append(server.rate(items[(k + 5) % len(items)], "after", VERDICTS[k % 4]))
        report.add(
            case,
            f"{posts_after} ratings after freeing space",
            ", ".join(str(p.status) for p in after),
            all(p.status == 200 for p in after),
        )
        pages = [server.request("GET", p)[0] for p in ("/", "/api/run", "/api/items?rater=full&limit=50")]
        report.add(case, "page, run info, items", ", ".join(map(str, pages)), pages == [200, 200, 200])
        check_kept(report, case, run / "ratings.jsonl", posts + after, seeds)
    finally:
        code = server.stop()
    out = server.output()
    report.add(
        case,
        "Ctrl-C",
        f"exit {code}; last line: {out.strip().splitlines()[-1][-200:] if out.strip() else ''}",
        code == 0 and "Traceback" not in out,
    )
    if do_eval:
        rows, _, _ = read_ratings(run / "ratings.jsonl")
        pairs = len({(r["rater"], r["id"]) for r in rows or []})
        code, text, metrics = run_eval(run, work / f"eval-{slug}", resamples)
        cut = [line for line in text.splitlines() if "cut short" in line]
        report.add(
            case,
            "stage=eval",
            f"exit {code}; human_ratings {metrics.get('human_ratings')} (want {pairs}); "
            f"all_human_score {metrics.get('all_human_score')}; {len(cut)} warning line(s)"
            + (f": {cut[0][cut[0].find('- ') + 2 :][:160]}" if cut else ""),
            code == 0 and metrics.get("human_ratings") == pairs,
        )
    shutil.rmtree(run)
    return not posts or posts[0].status != 200


# --- kill -9 --------------------------------------------------------------------------------------------------------


def kill_round(
    server: Server, posts: dict[str, list[Post]], items: list[str], per_client: int, target: int, delay: float
) -> int:
    """One rater per thread posting `per_client` ratings while the server is killed with SIGKILL `delay` seconds
    after the `target`-th answer; a rater stops at its first request without an answer. The answers counted then."""
    answered = [0]
    lock = threading.Lock()
    hit = threading.Event()

    def client(rater: str) -> None:
        mine = posts[rater]
        start = len(mine)
        for k in range(per_client):
            n = start + k
            post = server.rate(items[(n * 5 + int(rater[5:])) % len(items)], rater, VERDICTS[n % 4])
            mine.append(post)
            if post.status is None:  # the server is gone (the kill): this rater stops, as a page would
                return
            with lock:
                answered[0] += 1
                if answered[0] >= target:
                    hit.set()

    threads = [threading.Thread(target=client, args=(rater,)) for rater in posts]
    for thread in threads:
        thread.start()
    hit.wait(timeout=600)
    time.sleep(delay)  # a moment within the next requests
    killed_at = answered[0]
    server.kill()
    for thread in threads:
        thread.join()
    return killed_at


def kill_cases(
    report: Report,
    source: Path,
    work: Path,
    rounds: int,
    clients: int,
    per_client: int,
    seed: int,
    do_eval: bool,
    resamples: int,
) -> None:
    run = copy_run(source, work / "run-kill")
    items = item_ids(run)
    rng = random.Random(seed)
    posts: dict[str, list[Post]] = {f"rater{c}": [] for c in range(clients)}
    for number in range(1, rounds + 1):
        server = Server(run, work / "hydra-kill", work / "kill.log")
        if not server.start():
            report.add(
                "kill -9", f"round {number}", f"the server did not start: {server_lines(server.output())}", False
            )
            return
        target = rng.randint(1, clients * per_client - 1)
        sizes = {rater: len(mine) for rater, mine in posts.items()}
        answered = kill_round(server, posts, items, per_client, target, rng.uniform(0, 0.005))
        new = [p for rater, mine in posts.items() for p in mine[sizes[rater] :]]
        statuses = {}
        for p in new:
            statuses[p.status] = statuses.get(p.status, 0) + 1
        ended = server.output()
        report.add(
            "kill -9",
            f"round {number}",
            f"killed after {answered} answers (aimed at {target}); answers: "
            + ", ".join(f"{k if k is not None else 'no answer'} x{v}" for k, v in statuses.items())
            + ("; Traceback in output" if "Traceback" in ended else ""),
            set(statuses) <= {200, None} and "Traceback" not in ended,
        )

    rows, warnings, error = read_ratings(run / "ratings.jsonl")
    if rows is None:
        report.add("kill -9", "ratings file read", f"refused: {error}", False)
        return
    total = sum(p.status == 200 for ps in posts.values() for p in ps)
    unanswered = sum(p.status is None for ps in posts.values() for p in ps)
    lost, extra, kept_unanswered, latest = 0, 0, 0, {}
    for rater, ps in posts.items():
        mine = [r for r in rows if r["rater"] == rater]
        j = 0
        for p in ps:
            here = (
                j < len(mine)
                and (mine[j]["id"], mine[j]["verdict"]) == (p.item, p.verdict)
                and (p.time is None or mine[j]["time"] == p.time)
            )
            if here:
                kept_unanswered += p.status is None
                latest[(rater, p.item)] = p.verdict
                j += 1
            elif p.status == 200:
                lost += 1
        extra += len(mine) - j
    others = [r for r in rows if r["rater"] not in posts]
    report.add(
        "kill -9",
        "every rating answered 200 is in ratings.jsonl, in order",
        f"{total} answered 200: {lost} lost; {len(rows)} lines read, {extra + len(others)} unexplained; "
        f"{unanswered} requests got no answer (in flight at a kill), {kept_unanswered} of them written",
        lost == 0 and extra == 0 and not others,
    )
    from vlx.run.ratings import RatingStore

    counted = RatingStore(run / "ratings.jsonl").latest()
    report.add(
        "kill -9",
        "the last rating per rater and item counts",
        f"{len(counted)} (rater, item) pairs; {sum(counted.get(k) != v for k, v in latest.items())} differ",
        counted == latest,
    )
    ends = (run / "ratings.jsonl").read_bytes().endswith(b"\n")
    cut = len(warnings)
    report.add(
        "kill -9",
        "cut lines",
        f"{cut} cut line(s) skipped"
        + (f": {warnings[0][:160]}" if warnings else "")
        + f"; file ends with a newline: {ends}",
        all(str(run) in w for w in warnings),
    )
    server = Server(run, work / "hydra-kill", work / "kill.log")
    if server.start():
        answers = [server.request("GET", p) for p in ("/", "/api/run", "/api/items?rater=rater0&rated=yes&limit=500")]
        rated = json.loads(answers[2][1])["total"] if answers[2][0] == 200 else None
        want = len({i for (r, i) in latest if r == "rater0"})
        report.add(
            "kill -9",
            "page after the kills",
            f"{', '.join(str(a[0]) for a in answers)}; rater0 has {rated} items rated (want {want})",
            [a[0] for a in answers] == [200] * 3 and rated == want,
        )
        code = server.stop()
        report.add("kill -9", "Ctrl-C", f"exit {code}", code == 0)
    if do_eval:
        code, text, metrics = run_eval(run, work / "eval-kill", resamples)
        report.add(
            "kill -9",
            "stage=eval",
            f"exit {code}; human_ratings {metrics.get('human_ratings')} (want "
            f"{len(latest)}); all_human_score {metrics.get('all_human_score')}",
            code == 0 and metrics.get("human_ratings") == len(latest),
        )


# --- main -----------------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parse.add_argument("--run", type=Path, help="a finished run to copy (default: make a tiny one, ~30 s)")
    parse.add_argument("--cases", choices=("all", "full-disk", "kill"), default="all")
    parse.add_argument("--rounds", type=int, default=10, help="kill -9 rounds (default 10)")
    parse.add_argument("--clients", type=int, default=4, help="raters posting at once (default 4)")
    parse.add_argument("--per-client", type=int, default=200, help="ratings each rater posts per round (200)")
    parse.add_argument("--posts-full", type=int, default=8, help="ratings posted on the full disk (default 8)")
    parse.add_argument("--posts-after", type=int, default=4, help="ratings posted after freeing it (default 4)")
    parse.add_argument("--disk-kib", type=int, default=512, help="the tmpfs's size (default 512)")
    parse.add_argument("--no-eval", action="store_true", help="skip stage=eval on the files afterwards")
    parse.add_argument("--resamples", type=int, default=20, help="stage=eval's bootstrap resamples (default 20)")
    parse.add_argument("--seed", type=int, default=0, help="chooses the kill moments")
    parse.add_argument("--work", type=Path, help="a folder for the copies and logs (default: a new temp folder)")
    return parse


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="vlx-review-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    source = args.run or make_tiny_run(work / "tiny-run")
    report = Report()
    if args.cases in ("all", "full-disk"):
        cases = (
            ("full disk", False, 250),
            ("full disk, log there too", True, 250),
            ("full disk, cut before a newline", False, 0),
        )
        for case, hydra_on_disk, left in cases:
            for _ in range(5):  # the cut before a newline misses where the rating's time has fewer decimals: again
                attempt = Report()
                with tmpfs(args.disk_kib) as disk:
                    if disk is None:
                        report.add(case, "skipped", "cannot mount a tmpfs here (needs root)")
                        break
                    hit = full_disk_case(
                        attempt,
                        case,
                        source,
                        work,
                        disk,
                        hydra_on_disk,
                        left,
                        args.posts_full,
                        args.posts_after,
                        not args.no_eval,
                        args.resamples,
                    )
                if hit or left:
                    break
            report.rows += attempt.rows if disk is not None else []
            if disk is None:
                break
    if args.cases in ("all", "kill"):
        kill_cases(
            report,
            source,
            work,
            args.rounds,
            args.clients,
            args.per_client,
            args.seed,
            not args.no_eval,
            args.resamples,
        )
    print(
        f"\n## review server under faults: {len(report.failed)} of {sum(r.ok is not None for r in report.rows)} "
        f"checks failed\n"
    )
    print(report.table())
    print(
        f"\nmachine: {os.cpu_count()} cores, {platform.platform()}; python {platform.python_version()}; "
        f"work folder {work}"
    )
    print("command: " + shlex.join([Path(sys.executable).name, *sys.argv]))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
