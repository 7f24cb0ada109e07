"""Candidate words for the counterfactual edits proposed by a model, per item, instead of one fixed list.

Atanasova et al. (2023) found words that flip a label with a trained editor as well as at random; a model that
sees the item (its image and text) can propose words that bear on it, which a fixed list of common adjectives and
adverbs rarely does. Here the model the user names (`stage.editor`: the run's own model, or any checkpoint vlx
loads) is asked once per item for `count` adjectives or adverbs (`EDITOR_PROMPT`, greedy); its answer is parsed
into single words (`parse_words`), and the edits insert them at the seeded places as with the list. An item whose
answer gives no usable word falls back to the list, and its rows say so (`proposed: false`).

The answers are kept in `<run>/faithfulness/counterfactual_proposals.jsonl` (one row per item: the answer and its
words), appended batch by batch: a resumed test asks only for the items not there yet.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from vlx.engine.loop import Answer, LoopResult, LoopSettings, RowStore, run_batches
from vlx.errors import ConfigError
from vlx.models.hf import VLMAdapter
from vlx.tasks import Task
from vlx.tasks.items import Example

log = logging.getLogger(__name__)

# Bump on any change to the wording: proposals made with another prompt are not mixed into one test (the stage's
# settings hold the version).
EDITOR_PROMPT_VERSION = "editor-v1"
EDITOR_PROMPT = (
    'Here is a text about the image: "{{text}}"\n'
    "List {count} different single words, adjectives or adverbs, that inserted into the text would most change "
    "what it says about the image. Answer with the words only, separated by commas."
)
# a word as proposals write it: letters, with inner hyphens or apostrophes ("well-lit", "o'clock")
_WORD = re.compile(r"^[a-z]+(?:['-][a-z]+)*$")
# what a list item may start or end with: numbering, bullets, quotes, brackets, full stops
_EDGES = re.compile(r"^[\s\d.)(\-*•\"'`]+|[\s.,;:!?)(\"'`*]+$")


def editor_task(count: int) -> Task:
    """The editor's question as an open-answer task: its prompt asks for `count` words about each item's text."""
    return Task(name="editor", split="proposals", labels=(), prompt=EDITOR_PROMPT.format(count=count))


def parse_words(answer: str, count: int, exclude: Sequence[str] = ()) -> list[str]:
    """The first `count` distinct single words of an editor's answer, lower-cased: items separated by commas,
    semicolons, full stops, lines, `and` or `or`, numbering and quotes stripped; an item of several words, or a word
    of `exclude` (the task's labels), is left out."""
    banned = {w.lower() for w in exclude}
    words: list[str] = []
    for part in re.split(r"[,;\n]|\.\s|\b(?:and|or)\b", answer.lower()):
        word = _EDGES.sub("", part.strip())
        if _WORD.match(word) and word not in banned and word not in words:
            words.append(word)
        if len(words) == count:
            break
    return words


def limits(count: int) -> dict[str, Any]:
    """The editor's decoding: greedy, with room for `count` words and their commas (a few tokens each)."""
    return {"do_sample": False, "max_new_tokens": max(16, 6 * count)}


def load_editor(editor: str, run_model: VLMAdapter) -> VLMAdapter:
    """The editor model: the run's own where `editor` is `run`, else the checkpoint (hub id or folder) loaded as
    `model=hf` loads one (its family's adapter, dtype auto, no remote code)."""
    if editor == "run":
        return run_model
    from vlx.models import load_adapter

    log.info("editor: loading %s", editor)
    return load_adapter(checkpoint=editor)


def check_proposals(rows: Sequence[Mapping[str, Any]], editor: str, count: int, path: Path) -> None:
    """Refuses proposals made by another editor, prompt version or word count than this test's.

    Raises:
        ConfigError: a row of `path` was made otherwise (the first such row named).
    """
    for r in rows:
        made = (r.get("editor"), r.get("prompt_version"), r.get("count"))
        if made != (editor, EDITOR_PROMPT_VERSION, count):
            raise ConfigError(
                f"{path}: item {r.get('id')!r} has words proposed by editor {made[0]!r} (prompt {made[1]}, "
                f"{made[2]} words), and this test asks editor {editor!r} (prompt {EDITOR_PROMPT_VERSION}, {count} "
                f"words); delete {path} (and counterfactual.jsonl beside it) to ask again"
            )


def propose(
    model: VLMAdapter,
    editor: str,
    items: Sequence[Example],
    count: int,
    labels: Sequence[str],
    store: RowStore,
    settings: LoopSettings,
) -> LoopResult:
    """Asks the editor for each item not yet in `store` (greedy, with the item's image), appending a row per item:
    {"id", "editor", "prompt_version", "count", "answer", "words"}."""

    def row(answer: Answer) -> dict[str, Any]:
        return {
            "id": answer.example.id,
            "editor": editor,
            "prompt_version": EDITOR_PROMPT_VERSION,
            "count": count,
            "answer": answer.text,
            "words": parse_words(answer.text, count, labels),
        }

    # the test's batches, greedy with room for the words, zero-shot: the question is the editor's, not the task's
    ask = replace(settings, decode="generate", generation=limits(count), selector=None, demo_image_size=None)
    return run_batches(model, editor_task(count), list(items), store, row, ask, desc="editor", rows_name="proposals")


def proposed_words(rows: Sequence[Mapping[str, Any]], items: Sequence[Example]) -> dict[str, list[str]]:
    """Each tested item's proposed words, for the items the editor gave any (the others' edits use the list)."""
    wanted = {ex.id for ex in items}
    words = {str(r["id"]): list(r["words"]) for r in rows if r["id"] in wanted and r["words"]}
    if len(words) < len(wanted):
        log.warning(
            "the editor proposed no usable word for %d of %d items: their edits use the list",
            len(wanted) - len(words),
            len(wanted),
        )
    return words
