"""The review page's server: a Starlette app over one run directory.

Routes (all JSON but the page itself, its static files and images):

- `GET /`: the page; `GET /static/<file>`: its script and style, from this package (nothing from the internet).
- `GET /api/run`: what the run is (task, model, labels, headline metrics, confusion matrix, the sample, raters).
- `GET /api/items`: one page of items, filtered and sorted on the server (a 15,000-item run stays fast):
  `wrong`, `unparsed`, `gold`, `pred`, `rated` (yes | no, for `rater`), `sample`, `sort` (a per-item metric or
  `confidence`), `order`, `offset`, `limit`.
- `GET /image/<n>`: the image of the run's n-th item. Images are addressed by item, never by path, so no URL can
  reach a file that is not an image of the run.
- `GET /faithfulness-image/<n>`: the n-th ablation image the faithfulness rows show (by number, as items' images).
- `GET /files/<name>`: the run's plots (confusion matrix, reliability diagram), by an allow-list of names.
- `POST /api/rate`: `{"id", "rater", "verdict"}` appended to `<run>/ratings.jsonl` and fsynced before the answer.
  Refused (403) when the request comes from another origin, and (415) when it is not JSON, so no other page the
  browser has open can rate; a body over 64 KiB is refused (413) unread. A rating the disk cannot take (full) is
  refused (507, naming the file, nothing of it left in the file), with one WARNING line in the server's log until
  ratings are saved again.

Every route answers only requests whose `Host` is one the server was bound to (`allowed_hosts`): a page from another
site whose name resolves to this machine (DNS rebinding) gets 403 for reads as well as ratings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from vlx.errors import DataError
from vlx.run.directory import RunDir
from vlx.run.ratings import RatingStore
from vlx.run.records import VERDICTS, Prediction, RunInfo, Verdict

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# the fields of an item the page shows (the rest of a prediction row stays on the server)
ITEM_FIELDS = ("id", "text", "gold", "pred", "explanation", "raw", "refs", "scores", "answers")
# the largest rating request read (a rating is ~100 bytes)
MAX_BODY = 64 * 1024
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def allowed_hosts(host: str, port: int) -> set[str]:
    """The `Host` values a server bound to host:port answers: the loopback names and the bound host, with the port."""
    names = set(LOOPBACK)
    if host not in ("0.0.0.0", "::"):
        names.add(f"[{host}]" if ":" in host else host)
    else:  # every interface, asked for explicitly: this machine's own names too
        import socket

        names.update({socket.gethostname(), socket.getfqdn()})
    return {f"{name.lower()}:{port}" for name in names}


class HostGuard:
    """ASGI middleware: 403 for a request whose Host header is not one of `hosts` (None: a loopback name, any port)."""

    def __init__(self, app: Any, hosts: Collection[str] | None = None) -> None:
        self.app, self.hosts = app, None if hosts is None else {h.lower() for h in hosts}

    def allowed(self, host: str) -> bool:
        """Whether a Host header is allowed: one of `hosts`, or without them a loopback name (any port)."""
        host = host.lower()
        if self.hosts is not None:
            return host in self.hosts
        name, sep, port = host.rpartition(":")
        return (name if sep and port.isascii() and port.isdigit() else host) in LOOPBACK

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Answers 403 to an HTTP request whose Host header is not allowed; passes the others to the app."""
        if scope["type"] == "http" and not self.allowed(Headers(scope=scope).get("host", "")):
            await JSONResponse(
                {"error": "this server answers only requests to the address it printed"}, status_code=403
            )(scope, receive, send)
            return
        await self.app(scope, receive, send)


@dataclass
class ReviewData:
    """Everything the page reads, loaded once when the server starts.

    Attributes:
        run_dir: the run directory.
        rows: the predictions, in the run's order.
        images: item index -> the image file (resolved; None where it is missing).
        metrics: metrics.json with the judges' numbers (`RunDir.results`; {} for a run not scored).
        info: summary.json's run block (empty for a hand-made predictions file).
        item_metrics: id -> {metric: value} per item (ROUGE-L, BERTScore, ...).
        judge: id -> the judge's verdict where the run was judged.
        sample: the ids to rate (every id when no sample was asked for).
        faithfulness: id -> the faithfulness tests' rows of the item, one section per test output
            (`vlx.review.data.faithfulness_views`; read-only).
        faithfulness_images: the ablation images those rows show, by number.
    """

    run_dir: Path
    rows: list[Prediction]
    images: list[Path | None]
    metrics: dict[str, Any]
    info: RunInfo
    item_metrics: dict[str, dict[str, float]]
    judge: dict[str, Verdict]
    sample: list[str]
    faithfulness: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    faithfulness_images: list[Path] = field(default_factory=list)
    store: RatingStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = RatingStore(RunDir(self.run_dir).ratings_file)
        self.index = {r.id: k for k, r in enumerate(self.rows)}
        self.in_sample = set(self.sample)


def _matches(data: ReviewData, k: int, query: Mapping[str, str], rated: Mapping[str, str]) -> bool:
    row = data.rows[k]
    item = row.id
    if query.get("sample") == "1" and item not in data.in_sample:
        return False
    if query.get("wrong") == "1" and (row.gold is None or row.pred == row.gold):
        return False
    if query.get("unparsed") == "1" and row.pred is not None:
        return False
    if query.get("gold") and str(row.gold) != query["gold"]:
        return False
    if query.get("pred") and str(row.pred) != query["pred"]:
        return False
    if query.get("rated") == "yes" and item not in rated:
        return False
    return not (query.get("rated") == "no" and item in rated)


def _sort_key(data: ReviewData, metric: str) -> Any:
    def key(k: int) -> float:
        row = data.rows[k]
        if metric == "confidence":
            scores = row.scores or {}
            value = max(scores.values()) if scores else None
        else:
            value = data.item_metrics.get(row.id, {}).get(metric)
        return value if isinstance(value, (int, float)) and math.isfinite(value) else math.inf

    return key


def item_view(data: ReviewData, k: int, rated: Mapping[str, str]) -> dict[str, Any]:
    """One item as the page shows it."""
    row = data.rows[k]
    item = row.id
    data_row = row.to_json()  # the page's JSON: the file's fields as they are
    view = {key: data_row.get(key) for key in ITEM_FIELDS}
    verdict = data.judge.get(item)
    view.update(
        {
            "index": k,
            "image": f"image/{k}" if data.images[k] is not None else None,
            "image_name": Path(row.image or "").name,
            "metrics": data.item_metrics.get(item, {}),
            "judge": None
            if verdict is None
            else {"verdict": verdict.verdict, "score": verdict.score, "judge": verdict.judge, "raw": verdict.raw},
            "faithfulness": data.faithfulness.get(item, []),
            "rating": rated.get(item),
            "in_sample": item in data.in_sample,
            "correct": row.gold is not None and row.pred == row.gold,
        }
    )
    return view


def create_app(
    data: ReviewData, on_ready: Callable[[], None] | None = None, hosts: Collection[str] | None = None
) -> Starlette:
    """The Starlette app serving `data`.

    Args:
        data: the run (`vlx.review.data.load`).
        on_ready: called once the server has started (its lifespan startup), e.g. to say the page's address: by
            then uvicorn handles Ctrl-C and SIGTERM itself, so a stop that follows the line is a clean shutdown.
        hosts: the `Host` values answered (`allowed_hosts`); None: 127.0.0.1, localhost and [::1] on any port.
    """

    failing: list[OSError] = []  # the ratings refused since the last one saved (a full disk)

    def ratings_of(rater: str) -> dict[str, str]:
        return {item: verdict for (who, item), verdict in data.store.latest().items() if who == rater}

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def run_info(request: Request) -> Response:
        metrics = data.metrics
        headline = {
            k: metrics.get(k)
            for k in ("accuracy", "macro_f1", "auroc", "ece", "bleu4", "bertscore_f1", "judge_score", "human_score")
            if isinstance(metrics.get(k), (int, float))
        }
        labels = list(data.info.labels or metrics.get("confusion_matrix", {}).get("rows") or [])
        raters = sorted({who for who, _ in data.store.latest()})
        names = sorted({n for m in data.item_metrics.values() for n in m})
        return JSONResponse(
            {
                "run": str(data.run_dir),
                "task": data.info.task or metrics.get("task"),
                "split": data.info.split or metrics.get("split"),
                "model": data.info.model,
                "labels": labels,
                "items": len(data.rows),
                "sample": len(data.sample),
                "metrics": headline,
                "confusion_matrix": metrics.get("confusion_matrix"),
                "item_metrics": names,
                "has_scores": any(r.scores for r in data.rows),
                "judged": bool(data.judge),
                "raters": raters,
                "verdicts": list(VERDICTS),
                "files": [p.name for p in RunDir(data.run_dir).plots if p.is_file()],
            }
        )

    async def items(request: Request) -> Response:
        query = request.query_params
        rated = ratings_of(query.get("rater", ""))
        chosen = [k for k in range(len(data.rows)) if _matches(data, k, query, rated)]
        if query.get("sort"):
            chosen.sort(key=_sort_key(data, query["sort"]), reverse=query.get("order") == "desc")
        offset, limit = _int(query.get("offset"), 0), min(_int(query.get("limit"), 50), 500)
        return JSONResponse(
            {
                "total": len(chosen),
                "offset": offset,
                "items": [item_view(data, k, rated) for k in chosen[offset : offset + limit]],
                "rated_in_sample": sum(i in rated for i in data.sample),
            }
        )

    async def image(request: Request) -> Response:
        text = request.path_params["index"]
        k = int(text) if text.isascii() and text.isdigit() else -1  # not int("²"): that raises
        path = data.images[k] if 0 <= k < len(data.images) else None
        if path is None:
            return Response("no such image", status_code=404)
        return FileResponse(path)

    async def faithfulness_image(request: Request) -> Response:
        text = request.path_params["index"]
        k = int(text) if text.isascii() and text.isdigit() else -1
        if not 0 <= k < len(data.faithfulness_images):
            return Response("no such image", status_code=404)
        return FileResponse(data.faithfulness_images[k])

    async def run_file(request: Request) -> Response:
        name = request.path_params["name"]
        served = {p.name: p for p in RunDir(data.run_dir).plots}
        if name not in served or not served[name].is_file():
            return Response("not a file of this run", status_code=404)
        return FileResponse(served[name])

    async def rate(request: Request) -> Response:
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers.get('host')}":
            return JSONResponse({"error": f"ratings from {origin} are refused"}, status_code=403)
        if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
            return JSONResponse({"error": "cross-site requests are refused"}, status_code=403)
        if not request.headers.get("content-type", "").startswith("application/json"):
            return JSONResponse({"error": "send the rating as application/json"}, status_code=415)
        too_big = JSONResponse({"error": f"a rating is at most {MAX_BODY // 1024} KiB"}, status_code=413)
        length = request.headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > MAX_BODY:
            return too_big
        chunks, size = [], 0
        async for chunk in request.stream():  # read no more than the limit, whatever the headers say
            size += len(chunk)
            if size > MAX_BODY:
                return too_big
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
            item, rater, verdict = str(body["id"]), str(body["rater"]), str(body["verdict"])
        except (ValueError, KeyError, TypeError, RecursionError):
            return JSONResponse({"error": "a rating is {id, rater, verdict}"}, status_code=400)
        if item not in data.index:
            return JSONResponse({"error": f"no item {item[:100]!r} in this run"}, status_code=404)
        try:
            row = data.store.add(item, rater, verdict)
        except DataError as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        except OSError as err:
            if not failing:  # once until a rating is saved again, not a line per click on a full disk
                log.warning(
                    "%s: a rating could not be saved (%s); the page tells the rater so, and ratings are "
                    "refused until there is room: free some space (the ratings saved so far are kept)",
                    data.store.path,
                    err.strerror or err,
                )
            failing.append(err)
            return JSONResponse(
                {"error": f"{data.store.path}: the rating could not be saved ({err.strerror}); it was not kept"},
                status_code=507,
            )
        if failing:
            log.info(
                "%s: ratings are saved again (%d were refused meanwhile; their raters were told)",
                data.store.path,
                len(failing),
            )
            failing.clear()
        return JSONResponse(row)

    async def data_error(request: Request, err: Exception) -> Response:  # a bad ratings.jsonl line: one line, no 500
        return JSONResponse({"error": str(err)}, status_code=409)

    routes = [
        Route("/", page),
        Route("/api/run", run_info),
        Route("/api/items", items),
        Route("/api/rate", rate, methods=["POST"]),
        Route("/image/{index}", image),
        Route("/faithfulness-image/{index}", faithfulness_image),
        Route("/files/{name}", run_file),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if on_ready is not None:
            on_ready()
        yield

    from starlette.middleware import Middleware

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={DataError: data_error},
        middleware=[Middleware(HostGuard, hosts=hosts)],
    )


def _int(value: str | None, default: int) -> int:
    try:
        return max(int(value), 0) if value is not None else default
    except ValueError:
        return default
