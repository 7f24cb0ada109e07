"""The judge's verdicts on e-ViL's four-level scale: the scale, the parser of the judge's answers, and a judged
run's verdicts for the stages that read them (eval, compare, review).

The answers yes / weak yes / weak no / no score 1, 2/3, 1/3 and 0 (e-ViL's human evaluation, Kayser et al. 2021,
ICCV); the question the judge is asked is `vlx.judging.prompts`, the score over a run's items
`vlx.metrics.judge_scores`.
"""

from __future__ import annotations

import re
from pathlib import Path

from vlx.errors import ConfigError
from vlx.run.directory import RunDir
from vlx.run.records import VERDICT_SCORES, Verdict

# --- reading the judge's answer ---------------------------------------------------------------------------------

_PHRASE = r"(weak yes|weak no|yes|no)"
# a verdict word ends where a word would: "no" is not read in "not", "none" or "nothing", nor "yes" in "yesterday"
_END = r"(?![a-z0-9]|-[a-z])"
_LEAD = re.compile(
    r"^(?:(?:the|my|final|your|judge'?s?)\s+)*(?:answer|verdict|rating|judge?ment|response|assessment|evaluation)"
    r"\s*(?:is|would be)?\s*[:=\-–—]?\s*"
)
_AT_START = re.compile(_PHRASE + _END)
_AMBIGUOUS = re.compile(r"\s*(?:/|\bor\b|\band\b)\s*" + _PHRASE + _END)
_CUE = r"(?:\b(?:answer|verdict|rating)\s*(?:is|would be)?\s*[:=\-–—]?|\bi would say|\bi'd say|\bi say)\s*"
_CUED = re.compile(_CUE + _PHRASE + _END)
_LAST_SENTENCE = re.compile(r"(?:^|[.!?;\n])\s*" + _PHRASE + r"\s*[.!]*\s*$")


def _normalise(text: str) -> str:
    text = text.lower().replace("’", "'").replace("‘", "'")
    text = re.sub(r"[*_`#\"“”]", " ", text)  # markdown emphasis and headings, double quotes
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # single quotes, not apostrophes
    text = re.sub(r"\bweakly\b", "weak", text)
    text = re.sub(r"\bweak\s*[-–—/]?\s*(yes|no)\b", r"weak \1", text)  # weak-yes, weak/no, weak  yes
    return " ".join(text.split())


def parse_verdict(text: str | None) -> str | None:
    """The judge's answer as one of `VERDICTS`, or None when it does not say one clearly (never guessed).

    Case, markdown (`**No**`), quotes, a trailing full stop or explanation ("No, the explanation ...", "Yes — it
    ...") and "weak-yes" / "weakly yes" are accepted. In order:

    1. the answer starts with a verdict, after an optional lead-in ("Answer:", "The answer is:", "Verdict -");
    2. else, exactly one verdict follows a cue anywhere ("... so my answer is weak no", "I would say yes");
    3. else, the last sentence is a verdict alone ("The explanation ignores the dog. No.").

    A verdict ends where a word ends, so "not", "none", "nothing" are not "no" and "yesterday" is not "yes"; a
    verdict offered with another ("yes or no", "yes/no") is not read.
    """
    if not text:
        return None
    normal = _normalise(text)
    start = _LEAD.sub("", normal, count=1).lstrip(" .:;,-–—([{'")
    if (match := _AT_START.match(start)) is not None:
        return None if _AMBIGUOUS.match(start, match.end()) else match.group(1)
    cued = {m.group(1) for m in _CUED.finditer(normal)}
    if len(cued) == 1:
        return cued.pop()
    if not cued and (match := _LAST_SENTENCE.search(normal)) is not None:
        return match.group(1)
    return None


def item_score(verdict: str | None) -> float | None:
    """A verdict's score on e-ViL's scale (`VERDICT_SCORES`); None for no verdict."""
    return None if verdict is None else VERDICT_SCORES[verdict]


# --- reading a run's verdicts ---------------------------------------------------------------------------------------


def judge_names(run_dir: str | Path) -> list[str]:
    """The judges that have judged a run (its root or its infer/)."""
    return RunDir.find(run_dir, "run").judge_names()


def chosen_judge(run_dir: str | Path, judge: str | None = None) -> str:
    """The judge whose verdicts to read: `judge`, or the run's only one.

    Raises:
        ConfigError: the run has no verdicts of that judge, or several judges and none was named.
    """
    run = RunDir.find(run_dir, "run")
    names = run.judge_names()
    if judge is None and len(names) == 1:
        judge = names[0]
    if judge is None or judge not in names:
        have = f"it has verdicts of {', '.join(names)}" if names else "it has no verdicts"
        what = "which judge's verdicts to read" if judge is None and names else f"no verdicts of judge {judge!r}"
        raise ConfigError(
            f"{run}: {what} ({have}); judge it with `vlx stage=judge stage.run={run} judge_model=<model>`"
            + (", or name one of them" if names else "")
        )
    return judge


def run_verdicts(run_dir: str | Path, judge: str | None = None) -> list[Verdict]:
    """A judged run's verdicts, one per item, of `judge` (None: the run's only judge; see `chosen_judge`)."""
    return RunDir.find(run_dir, "run").verdicts(chosen_judge(run_dir, judge))


def read_verdicts(run_dir: str | Path, judge: str | None = None) -> dict[str, float | None]:
    """Item id -> e-ViL item score (1, 2/3, 1/3, 0; None where the judge's answer was not read or the item had no
    predicted label) of a judged run.

    Args:
        run_dir: the run's directory (its root or its infer/).
        judge: the judge's name (its folder under <run>/judgements/); None: the only judge of the run.

    Raises:
        ConfigError: see `chosen_judge`.
    """
    return {v.id: (None if v.score is None else float(v.score)) for v in run_verdicts(run_dir, judge)}
