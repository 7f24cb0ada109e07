"""The judge's question, on e-ViL's four-level scale (Kayser et al. 2021, ICCV): one versioned prompt per kind of
task.

e-ViL's human evaluation shows the image, the text (the statement, the question) and the answer with its
explanation, and asks: "Given the image and the statement, does the explanation justify the answer?" (its MTurk
questionnaires, github.com/maximek3/e-ViL). Here a local model (`vlx stage=judge`, `vlx.stages.judge`) is asked the
same for every prediction of a finished run.
"""

from __future__ import annotations

from collections.abc import Iterable

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
