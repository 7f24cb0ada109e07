"""SPICE (Anderson et al. 2016) through its jar, run as pycocoevalcap's `Spice` runs it.

SPICE parses every sentence with Stanford CoreNLP 3.6.0, which is not in the pycocoevalcap wheel: its `Spice()`
downloads the two CoreNLP jars (~400 MB) into `pycocoevalcap/spice/lib/` on first use, and fails offline. vlx
never downloads. It runs SPICE where the jars are already there:

- `eval.spice_jar=<path of spice-1.0.jar>`: a SPICE 1.0 folder of your own, with `lib/stanford-corenlp-3.6.0.jar`
  and `lib/stanford-corenlp-3.6.0-models.jar` beside the jar (the SPICE release's own layout);
- otherwise the copy inside pycocoevalcap, once `python -m pycocoevalcap.spice.get_stanford_models` has fetched
  CoreNLP on a machine with internet.

The command line is pycocoevalcap's (`java -jar -Xmx8G spice-1.0.jar <in.json> -cache <dir> -out <out.json>
-subset -silent`), and the score of an item is its "All" F-score; a corpus SPICE is the plain mean over items (NaN
if one item has none, as pycocoevalcap's). Where SPICE cannot run, the e-ViL combined scores are computed without
it and say so in their names (`evil_*_no_spice`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vlx.errors import ConfigError

logger = logging.getLogger(__name__)

CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
GET_MODELS = "python -m pycocoevalcap.spice.get_stanford_models"


def default_jar() -> Path | None:
    """pycocoevalcap's own spice-1.0.jar, or None where pycocoevalcap is not installed."""
    try:
        from pycocoevalcap.spice import spice
    except ImportError:
        return None
    return Path(spice.__file__).parent / spice.SPICE_JAR


def spice_missing(jar: str | None = None) -> str | None:
    """Why SPICE cannot run (None when it can), found without starting Java or touching the network.

    Args:
        jar: `eval.spice_jar`; None = pycocoevalcap's copy.

    Raises:
        ConfigError: `jar` was given and is not a SPICE jar with CoreNLP beside it (what the user asked for cannot
            run, which should stop the run rather than become a note).
    """
    path = Path(jar).expanduser() if jar else default_jar()
    if path is None:
        return "spice skipped: pycocoevalcap is not installed"
    lib = path.parent / "lib"
    missing = [lib / name for name in CORENLP_JARS if not (lib / name).is_file()]
    if jar and not path.is_file():
        raise ConfigError(f"eval.spice_jar={jar!r}: no such file; give the path of SPICE 1.0's spice-1.0.jar")
    if jar and missing:
        raise ConfigError(
            f"eval.spice_jar={jar!r}: SPICE needs Stanford CoreNLP 3.6.0 in {lib} ({missing[0].name} is missing); "
            "copy both CoreNLP jars there (SPICE's own get_stanford_models script fetches them)"
        )
    if missing:
        return (
            f"spice skipped: Stanford CoreNLP 3.6.0 is not installed ({missing[0]} is missing and vlx downloads "
            f"nothing); run `{GET_MODELS}` on a machine with internet, or set eval.spice_jar=<spice-1.0.jar of a "
            "SPICE folder with CoreNLP in its lib/>"
        )
    if shutil.which("java") is None:
        return "spice skipped: Java is not installed"
    return None


def run_spice(jar: Path, candidates: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
    """Per-item SPICE F-scores (NaN where SPICE gives none), from one run of the jar."""
    data = [
        {"image_id": i, "test": c, "refs": list(r)} for i, (c, r) in enumerate(zip(candidates, references, strict=True))
    ]
    cache = Path(tempfile.gettempdir()) / "vlx-spice-cache"  # SPICE's parse cache: reruns skip CoreNLP
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vlx-spice-") as tmp:
        source, target = Path(tmp) / "in.json", Path(tmp) / "out.json"
        source.write_text(json.dumps(data))
        cmd = [
            shutil.which("java") or "java",
            "-jar",
            "-Xmx8G",
            str(jar),
            str(source),
            "-cache",
            str(cache),
            "-out",
            str(target),
            "-subset",
            "-silent",
        ]
        proc = subprocess.run(cmd, cwd=jar.parent, capture_output=True, check=False)
        if proc.returncode != 0 or not target.is_file():
            raise RuntimeError(f"SPICE exited with {proc.returncode}: {proc.stderr.decode()[-1500:]}")
        results = json.loads(target.read_text())
    by_id = {int(r["image_id"]): r["scores"]["All"]["f"] for r in results}
    return np.asarray([_number(by_id.get(i)) for i in range(len(data))], dtype=float)


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def spice_per_item(
    candidates: Sequence[str], references: Sequence[Sequence[str]], notes: list[str], jar: str | None = None
) -> np.ndarray | None:
    """Per-item SPICE F-scores, or None with a note saying why SPICE did not run (the note is the only word of it:
    stage=eval logs its notes once, at the end)."""
    why = spice_missing(jar)
    if why is None:
        path = Path(jar).expanduser() if jar else default_jar()
        assert path is not None  # spice_missing found the jar
        try:
            return run_spice(path, candidates, references)
        except Exception as err:  # noqa: BLE001 - SPICE is optional: a JVM, memory or parse failure becomes a note
            if jar:
                raise ConfigError(f"eval.spice_jar={jar!r}: SPICE failed ({type(err).__name__}: {err})") from err
            why = f"spice skipped: SPICE failed ({type(err).__name__}: {err})"
    logger.debug("%s", why)
    notes.append(why)
    return None
