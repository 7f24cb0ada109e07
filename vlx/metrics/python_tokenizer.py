"""A pure-Python imitation of the PTB tokenizer, for scoring explanations on a machine without Java (`eval.java=false`).

It is NOT the official tokenizer: the COCO caption evaluation runs Stanford CoreNLP 3.4.1's `PTBTokenizer`
(`-preserveLines -lowerCase`, then pycocoevalcap drops its punctuation tokens), a Java program. This module follows
its rules for what explanations hold (lower-casing; punctuation, brackets, `$` and `%` split off; clitics `n't 's
're 've 'll 'd 'm` split; a word's final period split unless it is an abbreviation) and agrees with it on most
sentences, not on all: the same tokens for 14,314 of e-SNLI-VE's 14,339 dev explanations (99.83%) and for 5,902 of
VQA-X's 5,904 test explanations. Scoring each of VQA-X's 1,968 test items' first explanation against the others gave
BLEU-4 0.147367, ROUGE-L 0.407243 and CIDEr 0.860729 with it, 0.147367, 0.407235 and 0.860657 with Java's.
Scores computed with it are named `<protocol>_no_java` in metrics.json, never as the official ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# what pycocoevalcap's PTBTokenizer leaves out of the tokens (tokenizer/ptbtokenizer.py's PUNCTUATIONS)
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
# the PTB's names of brackets; lower-cased by -lowerCase after pycocoevalcap's filter is no longer able to match them
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
# words whose final period belongs to them (PTBLexer's abbreviation lists, the common ones)
_ABBREVIATIONS = frozenset(
    (
        "mr",
        "mrs",
        "ms",
        "dr",
        "st",
        "jr",
        "sr",
        "prof",
        "vs",
        "etc",
        "inc",
        "corp",
        "ltd",
        "mt",
        "ft",
        "gen",
        "lt",
        "sgt",
        "capt",
        "rev",
    )
)
# words the PTB lexer splits in two, and where
_SPLIT_WORDS = {"cannot": 3, "gonna": 3, "gotta": 3, "wanna": 3, "gimme": 3, "lemme": 3}
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$", re.IGNORECASE)
# one token: an ellipsis, a double dash, a bracket, a run of other punctuation, or a word (inner periods, hyphens,
# apostrophes, slashes, @, digits with , . : inside)
_TOKEN = re.compile(
    r"\.\.\.+|--+|[()\[\]{}]|[$%&#]|\d+(?:[.,:]\d+)+(?![\w-])|[^\s()\[\]{}$%&#\"`,;:?!]+|[,;:?!]|[\"`]+"
)


def tokenize(text: str) -> str:
    """One sentence tokenized as `PTBTokenizer -preserveLines -lowerCase` would, punctuation dropped as
    pycocoevalcap drops it; tokens joined by single spaces."""
    out: list[str] = []
    text = text.replace("\u2019", "'").replace("\u2018", "'")  # curly apostrophes: PTB reads them as '
    text = re.sub(r"(\.\.+|--+)", r" \1 ", text)  # an ellipsis or dash between words is a token of its own
    raw = _TOKEN.findall(" ".join(text.split()))
    for token in raw:
        if token in _BRACKETS:
            out.append(_BRACKETS[token])
            continue
        if set(token) <= {"."} or set(token) <= {"-"}:  # "..", "...", "--": PTB's ellipsis and dash, dropped
            continue
        out += _split_word(token)
    return " ".join(t for t in (p.lower() for p in out) if t and t not in PUNCTUATIONS and t != '"')


def _split_word(word: str) -> list[str]:
    """A word's trailing period, quotes and clitics as their own tokens."""
    tail: list[str] = []
    while word.endswith(("'", '"')) and len(word) > 1 and not _CLITIC.match(word):
        tail.insert(0, word[-1])
        word = word[:-1]
    while word.startswith(("'", '"')) and len(word) > 1:
        word = word[1:]  # an opening quote: a token pycocoevalcap drops
    if word.endswith("-") and len(word) > 1:
        tail.insert(0, "-")
        word = word.rstrip("-")
    if word.endswith(".") and len(word) > 1:
        stem = word[:-1]
        if stem.lower() not in _ABBREVIATIONS and not re.fullmatch(r"(?:[A-Za-z]\.)+[A-Za-z]", stem):
            tail.insert(0, ".")
            word = stem
    if word.lower() in _SPLIT_WORDS:  # PTB splits these into two tokens: "can not", "gon na"
        cut = _SPLIT_WORDS[word.lower()]
        return [word[:cut], word[cut:], *tail]
    match = _CLITIC.match(word)
    if match:
        return [*match.groups(), *tail]
    return [word, *tail]


def tokenize_all(texts: Sequence[str]) -> list[str]:
    """`tokenize` of each text ("" stays "")."""
    return [tokenize(t) if t.strip() else "" for t in texts]
