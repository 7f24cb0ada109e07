"""The COCO caption evaluation's pieces that vlx runs itself: text clean-up, Java, pycocoevalcap's PTB tokenizer,
BLEU from per-item statistics and ROUGE-L per item (pycocoevalcap 1.2 semantics)."""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from vlx.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

# columns of bleu_stats(): what pycocoevalcap's BleuScorer sums over a corpus
BLEU_STATS_COLUMNS = (
    "testlen",
    "reflen",
    *(f"guess{k}" for k in range(1, 5)),
    *(f"correct{k}" for k in range(1, 5)),
)

# a last line after the real ones, so the PTB tokenizer output can be checked for alignment
_PTB_SENTINEL = "vlxendofinput"


def clean_text(text: str) -> str:
    """Whitespace collapsed to single spaces: str.split() also splits on the Unicode line separators Java honours."""
    return " ".join(str(text).split())


def prepare(
    candidates: Sequence[str], references: Sequence[Sequence[str] | str], clean: Callable[[str], str] = clean_text
) -> tuple[list[str], list[list[str]]]:
    """Candidates and references through `clean` (whitespace collapsed by default); a plain string reference counts
    as a list of one."""
    if len(candidates) != len(references):
        raise DataError(f"{len(candidates)} candidate explanations but {len(references)} reference lists")
    refs = []
    for i, item in enumerate(references):
        group = [item] if isinstance(item, str) else list(item)
        if not group:
            raise DataError(f"item {i} has no reference explanation; every scored item needs at least one")
        refs.append([clean(r) for r in group])
    return [clean(c) for c in candidates], refs


# what a machine without Java is told, wherever explanation scoring would need it
JAVA_MISSING = (
    "explanation metrics need Java (pycocoevalcap's PTB tokenizer, METEOR and SPICE are Java programs) and there is "
    "no `java` on PATH: install a JRE (e.g. `apt-get install default-jre-headless`), or add eval.java=false to score "
    "without METEOR and SPICE, with vlx's Python tokenizer (scores named <protocol>_no_java in metrics.json, not "
    "comparable with official ones)"
)


def java_missing() -> bool:
    """Whether `java` is absent from PATH (what every Java scorer would start)."""
    return shutil.which("java") is None


def check_java(use_java: bool, needed: bool = True) -> None:
    """Refuses, before anything slow, a run that would score explanations with Java on a machine without it.

    Args:
        use_java: `eval.java` (False: the run scores without Java, so nothing is checked).
        needed: whether explanations will be scored at all (a task without reference explanations needs no Java).

    Raises:
        ConfigError: Java is needed and not on PATH (the message says what to install, and how to go on without).
    """
    if use_java and needed and java_missing():
        raise ConfigError(JAVA_MISSING)


def java() -> str:
    """The `java` executable's path."""
    java = shutil.which("java")
    if java is None:
        raise ConfigError(JAVA_MISSING)
    return java


# ---------------------------------------------------------------------------------------------------------------
# PTB tokenizer


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """Tokenizes as pycocoevalcap's PTBTokenizer does, in one Java run.

    Same jar, flags (-preserveLines -lowerCase) and punctuation filter as `PTBTokenizer.tokenize`; unlike it, the
    temporary file goes to the system temp folder rather than into site-packages (which may be read-only), empty
    strings skip the tokenizer and the output is checked to line up with the input.

    Args:
        texts: sentences; whitespace is collapsed first.

    Returns:
        One tokenized string per input, tokens joined by single spaces ("" for an empty input).
    """
    from pycocoevalcap.tokenizer import ptbtokenizer

    cleaned = [clean_text(t) for t in texts]
    out = [""] * len(cleaned)
    todo = [i for i, t in enumerate(cleaned) if t]
    if not todo:
        return out
    jar = Path(ptbtokenizer.__file__).parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
    lines = [cleaned[i] for i in todo] + [_PTB_SENTINEL]
    with tempfile.TemporaryDirectory(prefix="vlx-ptb-") as tmp:
        path = Path(tmp) / "sentences.txt"
        path.write_bytes("\n".join(lines).encode())
        cmd = [java(), "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"]
        # generous: ~30k sentences take about 2 s; the limit only stops a stuck JVM from hanging the run
        proc = subprocess.run([*cmd, str(path)], capture_output=True, timeout=120 + len(lines) / 100, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the PTB tokenizer failed (exit {proc.returncode}): {proc.stderr.decode()[-2000:]}")
    got = proc.stdout.decode().split("\n")
    if len(got) < len(lines) or got[len(lines) - 1].strip() != _PTB_SENTINEL:
        raise RuntimeError(f"the PTB tokenizer returned {len(got)} lines for {len(lines)}: output does not line up")
    punctuation = set(ptbtokenizer.PUNCTUATIONS)
    for i, line in zip(todo, got, strict=False):
        out[i] = " ".join(w for w in line.rstrip().split(" ") if w not in punctuation)
    return out


def tokenize_all(cands: list[str], refs: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Candidates and references through one tokenizer run (the JVM start is most of a small run's cost)."""
    flat = cands + [r for group in refs for r in group]
    tok = ptb_tokenize(flat)
    tok_c, pos, tok_r = tok[: len(cands)], len(cands), []
    for group in refs:
        tok_r.append(tok[pos : pos + len(group)])
        pos += len(group)
    return tok_c, tok_r


# ---------------------------------------------------------------------------------------------------------------
# BLEU


def bleu_stats(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> np.ndarray:
    """Per-item sufficient statistics of corpus BLEU, as pycocoevalcap's BleuScorer computes them.

    Args:
        candidates: tokenized candidates (tokens split on whitespace, as BleuScorer does; no tokenizer is run here).
        references: tokenized references per item.

    Returns:
        int64 array (n, 10), columns BLEU_STATS_COLUMNS: candidate length, the 'closest' reference length (ties
        to the shorter, as BleuScorer), n-gram guesses for n = 1..4 and clipped matches for n = 1..4.
    """
    from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test

    rows = np.zeros((len(candidates), len(BLEU_STATS_COLUMNS)), dtype=np.int64)
    for i, (cand, refs) in enumerate(zip(candidates, references, strict=True)):
        cooked = cook_test(cand, cook_refs(list(refs)), eff="closest")
        rows[i, 0] = cooked["testlen"]
        rows[i, 1] = cooked["reflen"]
        rows[i, 2:6] = cooked["guess"]
        rows[i, 6:10] = cooked["correct"]
    return rows


def corpus_bleu4(stats: np.ndarray) -> float:
    """Corpus BLEU-4 (0-1) from rows of bleu_stats(), e.g. a subset or a bootstrap resample of the items.

    The arithmetic is BleuScorer.compute_score's, in the same order and with its smoothing constants (1e-9 in the
    denominators, 1e-15 in the numerators), so the result equals pycocoevalcap's `Bleu(4)` 4th value on those items.
    """
    totals = [int(v) for v in np.asarray(stats, dtype=np.int64).reshape(-1, len(BLEU_STATS_COLUMNS)).sum(axis=0)]
    testlen, reflen, guess, correct = totals[0], totals[1], totals[2:6], totals[6:10]
    small, tiny = 1e-9, 1e-15
    bleu = 1.0
    for k in range(4):
        bleu *= float(correct[k] + tiny) / (guess[k] + small)
    bleu4 = bleu ** (1.0 / 4)
    ratio = (testlen + tiny) / (reflen + small)
    if ratio < 1:
        bleu4 *= math.exp(1 - 1 / ratio)
    return bleu4
