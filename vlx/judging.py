"""A model as the judge of explanations, on e-ViL's four-level scale (Kayser et al. 2021, ICCV).

e-ViL's human evaluation shows the image, the text (the statement, the question) and the answer with its
explanation, and asks: "Given the image and the statement, does the explanation justify the answer?" (its MTurk
questionnaires, github.com/maximek3/e-ViL). The answers yes / weak yes / weak no / no score 1, 2/3, 1/3 and 0, and
the explanation score S_E is the mean over the items whose answer the model got right. vlx reports that mean as
`judge_score` and the same mean over every judged item as `all_judge_score` (the `all_` of `vlx.metrics.text`).

Here a local model (`vlx stage=judge`, `vlx.stages.judge`) answers that question for every prediction of a finished
run. This module holds what does not need the model: the versioned prompt, the parser of the judge's answers, the
score and its interval, and `read_verdicts` for stages that compare judged runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlx.errors import ConfigError
from vlx.metrics.bootstrap import percentile_interval, resample_counts, weighted_mean
from vlx.run.directory import RunDir
from vlx.run.records import Verdict

# e-ViL's scale, best first: verdict -> item score
VERDICT_SCORES: dict[str, float] = {"yes": 1.0, "weak yes": 2 / 3, "weak no": 1 / 3, "no": 0.0}
VERDICTS: tuple[str, ...] = tuple(VERDICT_SCORES)

# Bump on any change to the wording below: verdicts of two prompt versions are never mixed in one file (the judge
# stage refuses to continue a file of another version) nor should their scores be compared.
JUDGE_PROMPT_VERSION = "evil-4level-v1"

_ASK = (
    "Given the image and the {what}, does the explanation justify the answer? An explanation that only repeats the "
    "{what} does not justify it; ignore small grammar or style errors.\n"
    "Reply with exactly one of: yes, weak yes, weak no, no."
)
# the judge's question, per kind of task; {text}, {pred} and {explanation} are the item's
JUDGE_PROMPTS: dict[str, str] = {
    "entailment": (
        "An AI model looked at the image and decided whether the statement below is entailed by it (the image shows "
        "that the statement is true), contradicted by it (the image shows that it is false) or neutral (the image "
        "does not show enough to tell), and explained its answer.\n\n"
        "Statement: {text}\nThe model's answer: {pred}\nThe model's explanation: {explanation}\n\n"
        + _ASK.format(what="statement")
    ),
    "meme": (
        "An AI model looked at the meme (the image and the text written on it), decided whether the meme is "
        "offensive or not offensive, and explained its answer.\n\n"
        "Text of the meme: {text}\nThe model's answer: {pred}\nThe model's explanation: {explanation}\n\n"
        + _ASK.format(what="meme's text")
    ),
    "generic": (
        "An AI model looked at the image and the text below, gave an answer and explained it.\n\n"
        "Text: {text}\nThe model's answer: {pred}\nThe model's explanation: {explanation}\n\n"
        + _ASK.format(what="text")
    ),
}
# how an answer is written when its likelihood is scored (judge decode=score)
ANSWER_TEXTS: dict[str, str] = {"yes": "Yes", "weak yes": "Weak yes", "weak no": "Weak no", "no": "No"}


def prompt_kind(labels: Iterable[str]) -> str:
    """Which of `JUDGE_PROMPTS` fits a task with these labels: e-SNLI-VE's three (and the shapes demo's), Hateful
    Memes' two, or the generic question for any other task."""
    found = {str(label).lower() for label in labels}
    if found and found <= {"entailment", "contradiction", "neutral"}:
        return "entailment"
    if found and found <= {"offensive", "not offensive"}:
        return "meme"
    return "generic"


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


# --- the score -----------------------------------------------------------------------------------------------------


def item_score(verdict: str | None) -> float | None:
    return None if verdict is None else VERDICT_SCORES[verdict]


def mean_with_interval(
    values: Sequence[float], resamples: int, level: float, seed: int
) -> tuple[float | None, list[float] | None]:
    """The mean of item scores and its percentile bootstrap interval over items (None, None for no items)."""
    if not values:
        return None, None
    array = np.asarray(values, dtype=float)
    resampled = weighted_mean(resample_counts(len(array), resamples, seed), array)
    return float(array.mean()), percentile_interval(resampled, level)


def judge_scores(verdicts: Sequence[Verdict], resamples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """e-ViL's explanation score from verdicts (`score`: the item's score or None, `correct`: whether its label
    was right, None without a gold label).

    Items without a verdict (an unparsed answer, no predicted label) are left out of both means, and counted.

    Returns:
        judge_score (S_E: the mean over correctly labelled items), judge_score_ci, judge_n; all_judge_score (the
        mean over every item with a verdict), all_judge_score_ci, all_judge_n.
    """
    scored = [v for v in verdicts if v.score is not None]
    correct = [float(v.score) for v in scored if v.correct and v.score is not None]
    everyone = [float(v.score) for v in scored if v.score is not None]
    out: dict[str, Any] = {}
    for prefix, values in (("", correct), ("all_", everyone)):
        mean, interval = mean_with_interval(values, resamples, level, seed)
        out[f"{prefix}judge_score"], out[f"{prefix}judge_score_ci"] = mean, interval
        out[f"{prefix}judge_n"] = len(values)
    return out


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
        raise ConfigError(f"{run}: {what} ({have}); judge it with `vlx stage=judge stage.run={run} judge_model=<model>`"
                          + (", or name one of them" if names else ""))  # fmt: skip
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
