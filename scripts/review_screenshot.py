"""A screenshot of the review page on a run, as in the README (docs/review.png), taken with Debian's Chromium.

    vlx experiment=demo hydra.run.dir=/tmp/demo
    python scripts/review_screenshot.py /tmp/demo/infer docs/review.png --rate 3

Serves the run (on a copy, so its ratings stay untouched), rates the first --rate items as rater "demo" with the
keyboard, as a rater would, and saves the page at 1440 x 900.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rate", type=int, default=3, help="items to rate before the screenshot")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(args.run, copy, ignore=shutil.ignore_patterns("ratings.jsonl", "review_sample.json"))
        log = Path(tmp) / "serve.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "vlx",
                    "stage=review",
                    f"stage.run={copy}",
                    "review.port=0",
                    f"hydra.run.dir={tmp}/hydra",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            while not (match := re.search(r"vlx review: (http://\S+/)", log.read_text())):
                if proc.poll() is not None:
                    raise SystemExit(log.read_text()[-2000:])
                time.sleep(0.05)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, args=FLAGS)
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.goto(match.group(1))
                page.wait_for_selector(".card")
                page.fill("#rater", "demo")
                page.locator("#rater").dispatch_event("change")
                page.locator(".text").click()
                for key in "1214"[: args.rate]:
                    page.keyboard.press(key)
                page.wait_for_timeout(800)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out))
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
