"""Free-text answers of chat VLMs -> (label or None, one-line explanation).

LLaVA-1.6 and PaliGemma answer "classify and explain" prompts in free text: "**Neutral**. The man ...",
"The hypothesis is entailed by the image, as ...", "No, this meme is not offensive.", "yes", refusals, hedges.
`parse_label` turns such text into a label of a given label set plus the explanation with the label statement
removed; `parse_answer` does it for a task of conf/task by name.

How the label is chosen (each rule errs towards None rather than a guessed label):

1. Chat artefacts ("[/INST]", "ASSISTANT:", "</s>", "<eos>", ...) and markdown are removed first. If a turn marker
   appears mid-text (the prompt was echoed), only the text after the last one is read.
2. Mentions: each label, its aliases ("entails", "entailed", "contradicts", "contradictory", "non-offensive", ...)
   and, for a label "not X", the negated X ("isn't offensive", "not considered offensive", "nothing offensive").
   Longest match wins, so "not offensive" is never read as "offensive".
3. Mentions that are not assertions are dropped: negated ones ("does not entail", "neither entails nor contradicts",
   "neutral rather than entailment"; negation reaches to the end of its clause), ones under an uncertainty cue in
   their clause ("whether", "if", "cannot determine", "hard to say", "some people may find ..."), ones in a question
   sentence (an echo of "Is this image offensive?") and ones inside a quoted passage of 3+ words (the restated
   hypothesis). A negated X turns into "not X" when the label set has "not X"; otherwise it is just dropped.
4. An explicit answer field ("Answer: X", "Label: X", "The answer is X", "Final answer: X") decides. Otherwise the
   first sentence that asserts a label decides ("Neutral. ... does not entail ..." -> neutral).
5. Hedges: if the deciding field or sentence asserts two different labels ("It could be entailment or neutral")
   the answer is None; a later sentence does not override the first one.
6. Refusals: text that opens with an apology or AI disclaimer ("I'm sorry", "As an AI", "I can't help ...") gets a
   label only from an explicit answer field; else None.
7. Yes/no: for a binary set {X, "not X"} (memes: the question is "Is this image offensive?"), an answer that
   states no label but starts with "yes"/"no" maps yes -> X, no -> "not X" (PaliGemma answers just "yes"/"no").
   Not applied when the text contains a refusal or uncertainty cue. For other label sets yes/no is None.
8. No label stated -> None. In particular a meme answer that only explains ("The meme mocks ...") is None: we do not
   infer "offensive" from the content, which would score the parser's judgement instead of the model's.

Explanation: if the label is None, the whole cleaned text (nothing is lost). Otherwise an explicit "Explanation:"
field wins; else the text minus the label statement: sentences that only state the label ("The answer is:
entailment.", "Neutral.", "The hypothesis is entailed by the image.") are dropped, a leading statement is cut off
("The image is offensive because it ..." -> "It ..."), a trailing one too ("..., so it is neutral." -> "..."),
then markdown, "Explanation:", "Because" and punctuation debris are stripped and the lines joined into one line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

__all__ = ["LABEL_ALIASES", "parse_answer", "parse_label", "parse_open", "with_aliases"]


# Other surface forms that unambiguously state a label (lower case). "follows" is left out on purpose: "the dog
# follows the man" is content, not a verdict. Forms "non-X"/"non X" are added automatically for a label "not X".
LABEL_ALIASES: dict[str, tuple[str, ...]] = {
    "entailment": ("entailments", "entails", "entailed", "entail", "entailing"),
    "contradiction": (
        "contradictions",
        "contradicts",
        "contradicted",
        "contradict",
        "contradicting",
        "contradictory",
    ),
    "not offensive": ("inoffensive", "unoffensive", "nonoffensive"),
}

# --- text clean-up -------------------------------------------------------------------------------------------------

# The model's turn starts after these; when the prompt is echoed, everything before the last one is prompt.
_TURN_MARKER = re.compile(
    r"\[/INST\]|<start_of_turn>\s*model\b|\bASSISTANT:|^[ \t]*(?:#+[ \t]*)?assistant[ \t]*:", re.M | re.I
)
# Special tokens that leak into decoded text when skip_special_tokens is off.
_SPECIAL_TOKEN = re.compile(
    r"</?s>|<eos>|<bos>|<pad>|<unk>|<image>|</?end_of_turn>|<start_of_turn>(?:user|model)?|\[/?INST\]|<\|[^|>\s]{1,30}\|>",
    re.I,
)
_MD_EMPHASIS2 = re.compile(r"(\*\*|__)(.+?)\1", re.S)  # **bold**, __bold__
_MD_EMPHASIS1 = re.compile(r"(?<![\w*])([*_])(?=\S)(.+?)(?<=\S)\1(?![\w*])")  # *italic*, _italic_
_MD_LINE_START = re.compile(r"^[ \t]*(?:#{1,6}[ \t]+|>[ \t]?|[-*+•][ \t]+|\d{1,2}[.)][ \t]+)", re.M)  # #, >, bullets
_CURLY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "})
# Quoted passages; those of 3+ words are restated hypotheses / meme text, whose words are not the model's verdict.
# A single quote only opens after a non-letter, so apostrophes ("isn't", "man's") are not taken for quotes.
_QUOTED = re.compile(r"(?<![\w'])'[^'\n]+?'(?!\w)|\"[^\"\n]+?\"")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?", re.I)
# Sentence breaks: line breaks, . ! ? before a space, and just before an inline "Explanation:"-style header.
_SENTENCE_BREAK = re.compile(
    r"\n+|(?<=[.!?])[ \t]+(?=\S)|(?=\b(?:explanation|reasoning|reason|rationale|justification)\s*:)", re.I
)

# --- what makes a mention an assertion -----------------------------------------------------------------------------

# Negation and uncertainty reach from their cue to the end of the clause; these end a clause.
_CLAUSE_BREAK = re.compile(
    r"[,;:!?()\[\]]|\.(?=\s)|\s[-\u2013\u2014]\s"
    r"|\b(?:so|therefore|thus|hence|which|but|because|since|while|whereas|and|however|although|though|then|yet"
    r"|meaning)\b",
    re.I,
)
_NEGATION = re.compile(
    r"\b(?:not|no|never|neither|nor|without|cannot|nothing|none|non|hardly|rather\s+than|instead\s+of)\b|\b\w+n't\b",
    re.I,
)
# Cue before the mention in its clause: the label is asked about or attributed, not asserted.
_UNCERTAIN_BEFORE = re.compile(
    r"\b(?:whether|if|unclear|uncertain|unsure|not\s+sure|as\s+an\s+ai|language\s+model"
    r"|(?:cannot|can't|can\s+not|unable\s+to|impossible\s+to|not\s+possible\s+to|difficult\s+to|hard\s+to"
    r"|not\s+able\s+to)\s+(?:determine|tell|say|judge|decide|assess|know)"
    r"|(?:don't|do\s+not)\s+know|(?:some|many|certain)\s+(?:people|viewers|individuals|users)\s+(?:may|might|could))\b",
    re.I,
)
# Cue right after the mention in its clause: "Entailment is hard to determine", "... offensive cannot be determined".
_UNCERTAIN_AFTER = re.compile(
    r"[^,;.!?]*?\b(?:(?:is|are)\s+(?:unclear|uncertain|hard\s+to|difficult\s+to)|(?:cannot|can't)\s+be\s+determined)",
    re.I,
)
_TRAILING_NO = re.compile(r"\s*['\"]?\s*[:?=]\s*(?:no|false)\b", re.I)  # "Offensive: no"
# An answer field right before the mention: "Answer:", "The answer is", "Final label =", "My answer would be".
_FIELD = re.compile(
    r"\b(?:answer|label|classification|prediction|verdict|category|conclusion|output|response|class)\b"
    r"\s*(?:is|would\s+be|should\s+be|will\s+be)?\s*[:=\-\u2013]?\s*(?:an?\s+|the\s+)?['\"(]*\s*$",
    re.I,
)
# What joins two labels listed in one field: "entailment or neutral", "entailment/neutral".
_LIST_JOIN = re.compile(r"[\s'\"]*(?:,|/|\bor\b|\band\b|,\s*or\b)?[\s'\"]*", re.I)
# Opening apology / AI disclaimer: a refusal, even if a label word follows ("As an AI ... some find it offensive").
_REFUSAL = re.compile(
    r"(?:i'?m\s+sorry|i\s+am\s+sorry|\bsorry\b|i\s+apologi[sz]e|as\s+an?\s+(?:ai|artificial)|as\s+a\s+language\s+model"
    r"|i'?m\s+an?\s+ai\b|i\s+(?:cannot|can't|can\s+not|am\s+unable\s+to|'m\s+unable\s+to|won't)\s+"
    r"(?:help|assist|answer|comply|provide|fulfil|fulfill|view|see\s+images))",
    re.I,
)
_LEADING_YES_NO = re.compile(r"\W*(?:(?:final\s+)?answer\s*[:\-]\s*)?\W*(yes|no)(?![\w'])", re.I)

# --- explanation clean-up ------------------------------------------------------------------------------------------

# Words that carry no content in a label statement ("Based on the image, I would say the hypothesis is ...").
# A sentence made only of these plus the label is dropped from the explanation.
_FILLER_WORDS = """
    a an the this that these it its it's is are was be being been would should could can will may might i i'd i'm my
    we our say think believe classify classified classifies label labeled labelled answer final correct response
    output prediction category class classification verdict conclusion relation relationship between and so
    therefore thus hence overall based on given in of to by with from for as considered deemed regarded seen
    hypothesis hypothesis's premise statement claim sentence image image's picture photo meme meme's content text
    caption scene pair yes no not there about here clearly definitely likely most probably seems appears seem appear
    does do quite very highly somewhat rather potentially indeed also then well okay ok sure regard respect terms
    shown provided above question task
"""
_FILLER = frozenset(_FILLER_WORDS.split())
# Token scanner for what follows a label at the start of a sentence.
_TAIL_TOKEN = re.compile(
    r"\s*(?:(?P<end>[.!?'\")\]]*\s*$)|(?P<punct>[,:;(]|[-\u2013\u2014](?=\s))|(?P<conn>because|since|as)\b"
    r"|(?P<quote>['\")\]]+)|(?P<word>[a-z]+(?:'[a-z]+)?)|(?P<other>\S))",
    re.I,
)
# Connector that starts a trailing label statement: "..., so the hypothesis is entailed."
_SUFFIX_CONNECTOR = re.compile(r"[,;(]|\s[-\u2013\u2014]\s|\b(?:so|therefore|thus|hence|which|meaning|making)\b", re.I)
_LEAD_CONNECTOR = re.compile(
    r"^\s*(?:because(?!\s+of)|since|as(?!\s+(?:well|such|a\s+result))|given\s+that)\b\s*,?", re.I
)
# A remainder starting like this depends on what was cut ("..., which shows ..."): keep the sentence whole instead.
_DEPENDENT_START = re.compile(
    r"^\s*(?:which|who|where|that|and|but|or|not|nor|although|though|while|whereas|however|yet)\b", re.I
)
_HEADER = re.compile(r"^\W*(?:explanation|reasoning|reason|rationale|justification)\s*[:\-\u2013]\s*", re.I)
_EXPLANATION_FIELD = re.compile(r"\b(?:explanation|reasoning|reason|rationale|justification)\s*:\s*", re.I)
_NEXT_FIELD = re.compile(r"\b(?:final\s+)?(?:answer|label|prediction|classification)\s*:", re.I)
_LEADING_BECAUSE = re.compile(r"^because\b(?!\s+of)\s*,?\s*", re.I)
_LEAD_DEBRIS = re.compile(r"^[\s,.;:!?)\]}\-\u2013\u2014]+")
_TRAIL_DEBRIS = re.compile(r"[\s,;:\-\u2013\u2014(]+$")


@dataclass(frozen=True)
class _LabelSet:
    """A label set compiled once: one regex over every surface form, and what each form means."""

    labels: tuple[str, ...]
    pattern: re.Pattern[str]
    form_to_label: dict[str, str]  # normalised surface form -> label as given
    canonical: frozenset[str]  # normalised labels themselves (not aliases)
    complement: dict[str, str]  # label X -> label "not X", where the set has both
    yes_no: tuple[str, str] | None  # (label for yes, label for no) for a binary {X, "not X"} set


@dataclass(frozen=True)
class _Mention:
    label: str
    start: int  # start of the statement; for a negation-derived "not X" this is the negation cue
    end: int
    sentence: int
    field: bool  # stated in an answer field ("Answer: X")
    canonical: bool  # the label itself, not an alias


def _norm(form: str) -> str:
    return re.sub(r"[\s-]+", " ", form.strip().lower())


@lru_cache(maxsize=64)
def _compile(labels: tuple[str, ...], aliases: tuple[tuple[str, tuple[str, ...]], ...]) -> _LabelSet:
    """Compiles a label set (cached: parse_label runs once per model answer)."""
    alias_map = dict(aliases)
    form_to_label: dict[str, str] = {}
    for label in labels:
        low = _norm(label)
        forms = [low, *alias_map.get(low, ())]
        if low.startswith("not "):
            forms.append("non " + low[4:])  # matches "non-offensive" and "non offensive"
        for form in forms:
            form_to_label.setdefault(_norm(form), label)
    # Longest first, so that at one position "not offensive" beats "offensive"; spaces match spaces or hyphens.
    parts = [r"[\s-]+".join(map(re.escape, f.split())) for f in sorted(form_to_label, key=len, reverse=True)]
    pattern = re.compile(r"(?<![a-z0-9])(?:" + "|".join(parts) + r")(?![a-z0-9])", re.I)
    by_norm = {_norm(label): label for label in labels}
    complement = {by_norm[n[4:]]: label for n, label in by_norm.items() if n.startswith("not ") and n[4:] in by_norm}
    yes_no = next(iter(complement.items())) if len(labels) == 2 and complement else None
    return _LabelSet(labels, pattern, form_to_label, frozenset(by_norm), complement, yes_no)


def parse_answer(task: str, text: str) -> tuple[str | None, str]:
    """Parses a model's answer for a task of conf/task by name (its labels and aliases) -> (label or None, one-line
    explanation).

    Raises:
        ValueError: `task` is not a task of conf/task.
    """
    from vlx.configs import group_option
    from vlx.errors import ConfigError

    try:
        spec = group_option("task", task)
    except ConfigError as err:  # names the tasks there are
        raise ValueError(f"unknown task {task!r}: {err}") from err
    return parse_label(tuple(spec.labels), text, aliases=with_aliases(spec.get("aliases")))


def with_aliases(extra: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """vlx's own label aliases with a task's added (`task.aliases`), keyed by lower-case label."""
    return {**LABEL_ALIASES, **{label.lower(): tuple(forms) for label, forms in (extra or {}).items()}}


def parse_label(
    labels: Sequence[str], text: str, *, aliases: Mapping[str, Sequence[str]] | None = None
) -> tuple[str | None, str]:
    """Parses free text against any label set -> (label as spelled in `labels`, or None; one-line explanation).

    Args:
        labels: the task's labels (matched case-insensitively; a label "not X" next to "X" is X's negation).
        text: the model's decoded answer.
        aliases: other surface forms per lower-case label; defaults to `LABEL_ALIASES`.

    See the module docstring for the rules on negation, hedges, refusals and yes/no.
    """
    if not labels:
        raise ValueError("parse_label needs at least one label")
    alias_src = LABEL_ALIASES if aliases is None else aliases
    spec = _compile(tuple(labels), tuple(sorted((_norm(k), tuple(map(_norm, v))) for k, v in alias_src.items())))
    clean = _clean(text or "")
    if not clean.strip():
        return None, ""
    scan = _mask_quotes(clean)
    spans = _sentences(clean)
    mentions, question_spans = _mentions(spec, scan, spans)
    label = _decide(mentions, refusal=_REFUSAL.match(clean.lstrip(" \t\n\"'(")) is not None)
    from_yes_no = False
    if label is None and not mentions and spec.yes_no is not None:
        label = _yes_no(spec.yes_no, clean, spans)
        from_yes_no = label is not None
    if label is None:
        return None, _one_line([clean])
    chosen = [m for m in mentions if m.label == label]
    return label, _explanation(clean, scan, spans, chosen, question_spans, spec.yes_no is not None, from_yes_no)


def parse_open(text: str, separator: str) -> tuple[str | None, str]:
    """An open question's answer (VQA-X: "red because the sign is red") -> (answer or None, one-line explanation).

    The answer is what comes before `separator` (the answer format's text between answer and explanation, such as
    " because "; matched as a word where it is one), else the first sentence; the explanation is what follows.
    """
    clean = _clean(text or "")
    if not clean.strip():
        return None, ""
    cut = separator.strip()
    pattern = rf"\s*\b{re.escape(cut)}\b\s*" if cut.isalpha() else rf"\s*{re.escape(cut)}\s*" if cut else r"[.\n]\s*"
    found = re.search(pattern, clean, re.I) or re.search(r"[.\n]\s*", clean)
    answer, rest = (clean[: found.start()], clean[found.end() :]) if found else (clean, "")
    answer = answer.strip(" \t\"'.,:;!")
    return (answer or None), _one_line([rest]) if rest.strip() else ""


# --- clean-up ------------------------------------------------------------------------------------------------------


def _clean(text: str) -> str:
    """Removes chat artefacts and markdown; keeps line breaks (they separate statements)."""
    text = text.translate(_CURLY)
    markers = list(_TURN_MARKER.finditer(text))
    if markers:
        text = text[markers[-1].end() :]
    text = _SPECIAL_TOKEN.sub(" ", text)
    text = _MD_EMPHASIS2.sub(r"\2", text)
    text = _MD_EMPHASIS1.sub(r"\2", text)
    text = text.replace("`", "")
    text = _MD_LINE_START.sub("", text)
    text = text.replace("**", "")
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\s*\n\s*", "\n", text).strip()


def _mask_quotes(text: str) -> str:
    """Blanks quoted passages of 3+ words (same length, so positions still match `text`)."""

    def blank(m: re.Match[str]) -> str:
        return " " * len(m.group()) if len(_WORD.findall(m.group())) >= 3 else m.group()

    return _QUOTED.sub(blank, text)


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence or line, whitespace trimmed, empty ones left out."""
    spans, start = [], 0
    for m in _SENTENCE_BREAK.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s < e:
            out.append((s, e))
    return out


# --- label ---------------------------------------------------------------------------------------------------------


def _mentions(spec: _LabelSet, scan: str, spans: list[tuple[int, int]]) -> tuple[list[_Mention], list[tuple[int, int]]]:
    """Asserted label mentions in text order, and the spans of every mention inside question sentences."""
    found: list[_Mention] = []
    in_questions: list[tuple[int, int]] = []
    for idx, (s, e) in enumerate(spans):
        question = scan[s:e].rstrip(" '\")").endswith("?")
        for m in spec.pattern.finditer(scan, s, e):
            if question:  # an echo of the question ("Is this image offensive?") asserts nothing
                in_questions.append(m.span())
                continue
            mention = _assess(spec, scan, s, e, idx, m)
            if mention is None:
                continue
            prev = found[-1] if found else None
            if prev is not None and prev.field and _LIST_JOIN.fullmatch(scan, prev.end, mention.start):
                mention = replace(mention, field=True)  # "Answer: entailment or neutral" is a hedge field
            found.append(mention)
    return found, in_questions


def _assess(spec: _LabelSet, scan: str, s: int, e: int, idx: int, m: re.Match[str]) -> _Mention | None:
    """The mention as an assertion (possibly turned into its "not X" complement), or None if it asserts nothing."""
    label = spec.form_to_label[_norm(m.group())]
    before = scan[s : m.start()]
    breaks = list(_CLAUSE_BREAK.finditer(before))
    clause_start = breaks[-1].end() if breaks else 0
    clause = before[clause_start:]
    if _UNCERTAIN_BEFORE.search(clause) or _UNCERTAIN_AFTER.match(scan, m.end(), e):
        return None
    start = m.start()
    negation = _NEGATION.search(clause)
    negated = negation is not None or _TRAILING_NO.match(scan, m.end(), e) is not None
    if negated:
        if label not in spec.complement:
            return None  # "does not entail" is not a statement of any label; "not 'not offensive'" is too odd
        label = spec.complement[label]
        if negation is not None:
            start = s + clause_start + negation.start()
    line_start = scan.rfind("\n", 0, m.start()) + 1
    field = _FIELD.search(scan[line_start : m.start()]) is not None
    canonical = not negated and _norm(m.group()) in spec.canonical
    return _Mention(label, start, m.end(), idx, field, canonical)


def _decide(mentions: list[_Mention], *, refusal: bool) -> str | None:
    """An answer field wins; else the first sentence with an assertion. Two labels there -> None (a hedge)."""
    fields = [m for m in mentions if m.field]
    if fields:
        return _single({m.label for m in fields})
    if refusal or not mentions:
        return None
    first = mentions[0].sentence
    return _single({m.label for m in mentions if m.sentence == first})


def _single(labels: set[str]) -> str | None:
    return next(iter(labels)) if len(labels) == 1 else None


def _yes_no(yes_no: tuple[str, str], clean: str, spans: list[tuple[int, int]]) -> str | None:
    """'yes'/'no' opening the first non-question sentence, unless the text refuses or hedges anywhere."""
    if _REFUSAL.search(clean) or _UNCERTAIN_BEFORE.search(clean):
        return None
    for s, e in spans:
        if clean[s:e].rstrip(" '\")").endswith("?"):
            continue
        m = _LEADING_YES_NO.match(clean, s, e)
        if m is None:
            return None
        return yes_no[0] if m.group(1).lower() == "yes" else yes_no[1]
    return None


# --- explanation ---------------------------------------------------------------------------------------------------


def _explanation(
    clean: str,
    scan: str,
    spans: list[tuple[int, int]],
    chosen: list[_Mention],
    question_spans: list[tuple[int, int]],
    binary: bool,
    from_yes_no: bool,
) -> str:
    """The text minus the label statement, as one line."""
    field = _EXPLANATION_FIELD.search(clean)
    if field is not None:
        rest = clean[field.end() :]
        nxt = _NEXT_FIELD.search(rest)
        body = _one_line([rest[: nxt.start()] if nxt else rest])
        if body:
            return body
    pieces = []
    for idx, (s, e) in enumerate(spans):
        piece = _strip_statement(clean, scan, s, e, [m for m in chosen if m.sentence == idx], question_spans)
        if piece:
            pieces.append(piece)
    if pieces and binary:
        # "Yes, it mocks ..." -> "it mocks ..." (only "yes"/"no" + punctuation unless yes/no gave the label:
        # "No one would find this offensive" must keep its "No").
        yes_no = r"^\W*(?:yes|no)\b\W*" if from_yes_no else r"^\W*(?:yes|no)\s*[,.!:;\-]+\s*"
        pieces[0] = re.sub(yes_no, "", pieces[0], flags=re.I)
    return _one_line(pieces)


def _strip_statement(
    clean: str,
    scan: str,
    s: int,
    e: int,
    mentions: list[_Mention],
    question_spans: list[tuple[int, int]],
) -> str:
    """One sentence minus its statement of the chosen label ("" when it is nothing but that statement)."""
    blanked = list(scan[s:e])
    for ms, me in [(m.start, m.end) for m in mentions] + question_spans:
        for i in range(max(ms, s), min(me, e)):
            blanked[i - s] = " "
    if _all_filler("".join(blanked)):
        return ""
    if not mentions:
        return clean[s:e]
    first, last = mentions[0], mentions[-1]
    if _all_filler(scan[s : first.start]):  # a leading statement: "The image is offensive because it ..."
        cut = _tail_cut(scan, first.end, e)
        bare_start = first.canonical and not _WORD.search(scan[s : first.start])
        if cut is None and bare_start and re.match(r"\s+[a-z]", scan[first.end : e], re.I):
            cut = first.end  # "Neutral The man ..." (a bare label opening the sentence, no punctuation after it)
        if cut is not None:
            return clean[cut:e]
    if _all_filler(scan[last.end : e]):  # a trailing statement: "..., so the hypothesis is entailed."
        connectors = list(_SUFFIX_CONNECTOR.finditer(scan, s, last.start))
        if connectors and _all_filler(scan[connectors[-1].end() : last.start]):
            head = _TRAIL_DEBRIS.sub("", clean[s : connectors[-1].start()])
            if head and not _all_filler(head):
                end_mark = clean[s:e].rstrip(" '\")")[-1:]
                return head + (end_mark if end_mark in ".!" else ".")
    return clean[s:e]


def _tail_cut(scan: str, pos: int, end: int) -> int | None:
    """Where the explanation starts after a leading label statement, or None if the sentence goes on with content.

    After the label, filler words may follow ("... entailed by the image"); then the sentence must end or continue
    after a connector (",", ":", "-", "because", "since", "as").
    """
    while True:
        tok = _TAIL_TOKEN.match(scan, pos, end)
        if tok is None:
            return None
        kind = tok.lastgroup
        if kind == "end":
            return end
        if kind == "conn":
            return tok.end()
        if kind == "punct":
            rest = scan[tok.end() : end]
            if _DEPENDENT_START.match(rest):
                return None
            lead = _LEAD_CONNECTOR.match(rest)
            return tok.end() + (lead.end() if lead else 0)
        if kind == "word" and tok.group("word").lower() not in _FILLER:
            return None
        if kind == "other":
            return None
        pos = tok.end()


def _all_filler(text: str) -> bool:
    return all(w.lower() in _FILLER for w in _WORD.findall(text))


def _one_line(pieces: list[str]) -> str:
    """Cleans each piece (header, "Because", debris) and joins them into one line, ending bare lines with '.'."""
    out: list[str] = []
    for piece in pieces:
        for line in piece.split("\n"):
            line = _tidy(line)
            if not line:
                continue
            if out and out[-1][-1] not in ".!?;:,":
                out[-1] += "."
            out.append(line)
    return " ".join(out)


def _tidy(text: str) -> str:
    text = _HEADER.sub("", text.strip())
    text = _LEAD_DEBRIS.sub("", text)
    text = _LEADING_BECAUSE.sub("", text)
    text = _TRAIL_DEBRIS.sub("", _LEAD_DEBRIS.sub("", text))
    text = re.sub(r"\s+", " ", text).strip()
    for quote in "'\"":  # a quote left alone by the cut ("'neutral'. ..." -> "'. ...")
        if text.startswith(quote) and text.count(quote) % 2:
            text = text[1:].lstrip()
        if text.endswith(quote) and text.count(quote) % 2:
            text = text[:-1].rstrip()
    if text.endswith(")") and text.count(")") > text.count("("):
        text = text[:-1].rstrip()
    return text[:1].upper() + text[1:]  # a cut leaves "it's unclear ..." mid-sentence
