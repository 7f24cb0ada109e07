"""The review stage: a local web page to read a run's predictions and rate its explanations.

    vlx stage=review stage.run=outputs/2026-11-30/12-00-00                    # http://127.0.0.1:8765/
    vlx stage=review stage.run=<run dir> review.sample=300 review.port=0      # rate a balanced sample; any free port

The page (`vlx.review`) shows each item's image, text, gold and predicted label, explanation, references, per-item
scores, label probabilities and the judge's verdict; filters and a clickable confusion matrix choose the items.
Ratings (e-ViL's four answers, by click or keys 1-4) go to `<run>/ratings.jsonl` as they are given; `stage=eval`
turns them into e-ViL's human score. The server binds 127.0.0.1 unless review.host names another address (then with
a warning: other machines reach the page); it answers only requests addressed to the host it was bound to. Ctrl-C
stops it, and nothing given before is lost.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from omegaconf import DictConfig

from vlx.config_schema import check_value
from vlx.errors import ConfigError
from vlx.run.directory import RunDir
from vlx.run.lock import check_idle

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free one), so the URL printed is the one that works."""
    check_value("review.port", port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(
            f"review.host={host} review.port={port}: cannot listen there ({err.strerror}); choose "
            "another port (review.port=0 takes any free one)"
        ) from err
    sock.listen(128)
    return sock


def check_host(host: Any) -> str:
    """review.host as a name to bind: empty is refused (it would mean every interface); a host beyond loopback is
    bound as asked, with a warning that other machines reach the page."""
    import ipaddress

    text = "" if host is None else str(host).strip()
    if not text:
        raise ConfigError(
            "review.host is empty: name the address to listen on (127.0.0.1, the default, for this "
            "machine only; 0.0.0.0 for every interface)"
        )
    try:
        loopback = ipaddress.ip_address(text.strip("[]")).is_loopback
    except ValueError:
        loopback = text.lower() == "localhost"
    if not loopback:
        log.warning(
            "review.host=%s: the page and every rating are reachable from other machines on the network (no "
            "password); use review.host=127.0.0.1 (an SSH tunnel reaches it) unless the network is trusted",
            text,
        )
    return text.strip("[]")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Serves the page until stopped; returns how many ratings the run holds then."""
    import uvicorn

    from vlx.review import data
    from vlx.review.app import allowed_hosts, create_app

    if not cfg.stage.run:
        raise ConfigError("stage=review needs stage.run=<run dir> (a directory written by stage=infer)")
    settings = cfg.review
    bind_host = check_host(settings.host)
    run_dir = RunDir.find(cfg.stage.run, "stage.run").path
    check_idle(run_dir)  # not while an infer run still writes the predictions (nor eval its scores)
    start = time.perf_counter()
    review = data.load(
        run_dir, sample=settings.sample, seed=settings.seed, balanced=settings.balanced, judge=settings.judge
    )
    sock = bind(bind_host, settings.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    url = f"http://{shown}:{port}/"
    log.info(
        "review of %s: %d items (%d to rate), loaded in %.2f s",
        run_dir,
        len(review.rows),
        len(review.sample),
        time.perf_counter() - start,
    )

    def ready() -> None:  # the address, once the server answers and handles Ctrl-C itself
        print(f"vlx review: {url}  (ratings go to {review.store.path}; Ctrl-C stops)", flush=True)

    app = create_app(review, on_ready=ready, hosts=allowed_hosts(bind_host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        # Ctrl-C (or SIGTERM) is how a review ends, not a failure: uvicorn has shut down cleanly by now and only
        # re-raises the signal it caught, so the stage returns (exit 0) instead of reporting an interrupted run
        pass
    finally:
        sock.close()
    ratings = len(review.store.rows())
    log.info("review server stopped: %d ratings in %s", ratings, review.store.path)
    return {"ratings": ratings, "items": len(review.rows)}
