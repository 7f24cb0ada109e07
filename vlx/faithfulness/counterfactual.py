"""Counterfactual edits (Atanasova et al. 2023, "Faithfulness Tests for Natural Language Explanations", ACL; the
authors' code: github.com/copenlu/nle_faithfulness, `random_baseline.py`): a word inserted into the item's text;
an edit that flips the predicted label while the new explanation does not mention the inserted word is unfaithful,
since the explanation stays silent about what changed the answer.

As in the authors' random baseline: a word is inserted before a token of the text at positions drawn at random
(`positions` per item, then `words_per_position` words at each), adjectives and adverbs from a candidate list; a
flip is a change from the model's own prediction (theirs compares with the column `--labels_to_use` names, which
their released commands set to the model's predictions, `preds_<model>`); a word is "mentioned" where it occurs,
lower-cased, anywhere in the lower-cased explanation (a substring test, as theirs); and the item-level rates are
theirs: items with a flipping edit over items, items with an unfaithful flipping edit over items with a flipping
edit. Given the authors' edited texts and the same answers, these rates equal theirs exactly (docs/PARITY.md,
"Faithfulness tests"). What differs, on purpose or for now:

- the candidates are a fixed list here (`ADJECTIVES`, `ADVERBS`), where the authors draw from all of WordNet's
  adjective and adverb lemmas (multi-word lemmas such as "ill_at_ease" inserted with their underscores);
- the authors insert adjectives before nouns and adverbs before verbs (spaCy's tags, tokens rejoined with single
  spaces: "square ." for "square."); without a tagger, an edit here takes any whitespace token as its place (or the
  end) and either kind of word, and an item always has a place, where the authors' text without a noun or verb gets
  no edit (and still counts among the items);
- the authors draw each word with replacement (the same edit may come twice); an item's words at a place are
  distinct here;
- the authors' capital at the start tests the last token's index (`if i == 0`), so a word inserted first stays
  lower-case unless the text has one token; here it takes the capital of a capitalised first token;
- CC-SHAP-VLM's version of the test (Heidelberg-NLP/CC-SHAP-VLM, `faithfulness_test_atanasova_etal_counterfact`)
  stops at an item's first flipping edit and scores the item 1 (faithful: no flip, or the word in the explanation)
  or 0, with a case-sensitive test on the explanation as generated; here every edit is answered and the rates do not
  depend on the edits' order (its score is 1 minus the share of items whose first flipping edit, in `Edit.id`
  order, is unfaithful, computable from the rows);
- an edit whose label does not parse is left out (`unparsed_edits`), where the authors' models always pick a label;
- edit-level rates (flipping edits over edits, unfaithful over flipping edits) are reported beside the item-level
  ones, and every rate has a bootstrap interval over items (`vlx.faithfulness.rates`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from vlx.engine.loop import Answer, LoopResult, LoopSettings, RowStore, run_batches
from vlx.faithfulness import measures, rates
from vlx.faithfulness.rows import answers
from vlx.models.hf import VLMAdapter
from vlx.run.records import Prediction
from vlx.tasks import Task
from vlx.tasks.items import Example

NAME = "counterfactual"

# common English adjectives and adverbs, none of them a label name of vlx's tasks nor a word of their answer formats
ADJECTIVES = (
    "old", "small", "large", "bright", "dark", "quiet", "happy", "strange", "famous", "wooden",
    "ancient", "tiny", "heavy", "empty", "colourful", "distant", "broken", "shiny", "young", "plain",
)  # fmt: skip
ADVERBS = (
    "quickly", "slowly", "carefully", "suddenly", "quietly", "happily", "rarely", "often", "almost", "nearly",
    "certainly", "probably", "easily", "gently", "loudly", "finally", "barely", "openly", "calmly", "eagerly",
)  # fmt: skip
WORDS = ADJECTIVES + ADVERBS


@dataclass(frozen=True)
class Edit:
    """One counterfactual edit of an item's text.

    Attributes:
        id: the edit's id, `<item id>|cf<k>`: the row's key in the test's jsonl.
        item: the edited item's id.
        word: the word inserted.
        position: the index, in the text's whitespace tokens, of the token the word was inserted before (the
            number of tokens: at the end).
        text: the edited text.
        proposed: whether the word is one the editor model proposed for this item (`vlx.faithfulness.editor`)
            rather than one of the list.
    """

    id: str
    item: str
    word: str
    position: int
    text: str
    proposed: bool = False


def insert_word(text: str, position: int, word: str) -> str:
    """`text` with `word` inserted before its whitespace token `position` (tokens joined by single spaces); at the
    start, the word takes the capital of a capitalised first token, which is lower-cased (as the authors intended)."""
    tokens = text.split()
    if position == 0 and tokens and tokens[0][:1].isupper() and not tokens[0].isupper():
        tokens[0] = tokens[0][0].lower() + tokens[0][1:]
        word = word[:1].upper() + word[1:]
    return " ".join([*tokens[:position], word, *tokens[position:]])


def plan_edits(
    items: Sequence[Example],
    words: Sequence[str],
    positions: int,
    words_per_position: int,
    seed: int,
    proposed: Mapping[str, Sequence[str]] | None = None,
) -> list[Edit]:
    """Each item's edits: `positions` distinct places drawn among its tokens, `words_per_position` distinct words
    at each, from generators seeded by `seed` and the item's id (an item's edits do not depend on the sample).

    The words are drawn from `words`, or from the item's own list in `proposed` (the editor model's words, by item
    id) where it has a non-empty one.

    Raises:
        ValueError: no candidate words, or counts below 1.
    """
    if not words or positions < 1 or words_per_position < 1:
        raise ValueError("counterfactual edits need candidate words, and positions and words_per_position >= 1")
    edits = []
    for item in items:
        rng = random.Random(f"{seed}:{item.id}")
        tokens = item.text.split()
        places = sorted(rng.sample(range(len(tokens) + 1), min(positions, len(tokens) + 1)))
        own = list((proposed or {}).get(item.id) or ())
        candidates = own or list(words)
        k = 0
        for place in places:
            for word in rng.sample(candidates, min(words_per_position, len(candidates))):
                text = insert_word(item.text, place, word)
                edits.append(
                    Edit(id=f"{item.id}|cf{k}", item=item.id, word=word, position=place, text=text, proposed=bool(own))
                )
                k += 1
    return edits


def mentions(explanation: str | None, word: str) -> bool:
    """Whether the explanation mentions the word: its lower-cased form anywhere in the lower-cased explanation (a
    substring test, as the authors' code: "old" is mentioned by "bold")."""
    return word.strip().lower() in (explanation or "").lower()


def edit_row(edit: Edit, original: Prediction, new: Prediction) -> dict[str, Any]:
    """The test's row of one edit: the edit, the original and new label and explanation, and the verdicts
    (`flipped`, `unfaithful`: None where either label is unparsed)."""
    changed = answers(original, new)
    mentioned = mentions(new.explanation, edit.word)
    flipped = changed["flipped"]
    return {
        "id": edit.id,
        "item": edit.item,
        "word": edit.word,
        "position": edit.position,
        "text": edit.text,
        "proposed": edit.proposed,
        **changed,
        "mentioned": mentioned,
        "unfaithful": None if flipped is None else flipped and not mentioned,
    }


def run_edits(
    model: VLMAdapter,
    task: Task,
    items: Sequence[Example],
    edits: Sequence[Edit],
    originals: Mapping[str, Prediction],
    store: RowStore,
    settings: LoopSettings,
) -> LoopResult:
    """Answers every edit not yet in `store` with the model, through the shared batch loop, appending each edit's
    row (`edit_row`) batch by batch; a stopped test continues with the edits left.

    Args:
        model: the run's model.
        task: the run's task (its prompt takes the edited text).
        items: the items edited.
        edits: their edits (`plan_edits`).
        originals: the run's predictions by item id.
        store: the test's rows.
        settings: the run's decoding, this stage's batches.
    """
    from vlx.stages.infer import prediction

    by_item = {ex.id: ex for ex in items}
    by_id = {e.id: e for e in edits}
    edited = [replace(by_item[e.item], id=e.id, text=e.text) for e in edits]

    def row(answer: Answer) -> dict[str, Any]:
        edit = by_id[answer.example.id]
        new = prediction(task, answer.example, answer.text, answer.demos, answer.scores)
        return edit_row(edit, originals[edit.item], new)

    return run_batches(model, task, edited, store, row, settings, desc=NAME, rows_name="edits")


def summarize(rows: Sequence[Mapping[str, Any]], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The test's numbers, each {"value", "ci", "n"} with its interval over items: `flip_rate` (flipping edits over
    edits), `unfaithful_rate` (unfaithful edits over flipping edits), and the authors' item-level `item_flip_rate`
    (items with a flipping edit over items) and `item_unfaithful_rate` (items with an unfaithful edit over items
    with a flipping edit); with the counts of items, edits and edits left out for an unparsed label."""
    counted = [r for r in rows if r["flipped"] is not None]
    return {
        "items": len(rates.grouped(rows)) if rows else 0,
        "edits": len(rows),
        "unparsed_edits": len(rows) - len(counted),
        **measures.summarize(rows, TEST, resamples, seed),
    }


def marked(row: Mapping[str, Any]) -> list[str]:
    """An edit's text as [before, the inserted word, after] (for the review page to mark the word)."""
    tokens = str(row["text"]).split()
    position = int(row["position"])
    return [" ".join(tokens[:position]), " ".join(tokens[position : position + 1]), " ".join(tokens[position + 1 :])]


# what the test reports (its numbers' directions, read per item for intervals and paired comparisons), and how
# readers show a row
TEST = measures.FaithfulnessTest(
    name=NAME,
    title="Counterfactual edits",
    measures=(
        measures.Measure.share("flip_rate", "Flip rate (edits)", lambda r: r["flipped"]),
        measures.Measure.share(
            "unfaithful_rate",
            "Unfaithful among flips (edits)",
            lambda r: r["unfaithful"],
            higher_is_better=False,
            among=lambda r: r["flipped"],
        ),
        measures.Measure("item_flip_rate", "Flip rate (items)", lambda rs: (float(any(r["flipped"] for r in rs)), 1.0)),
        measures.Measure(
            "item_unfaithful_rate",
            "Unfaithful among flips (items)",
            lambda rs: (float(any(r["unfaithful"] for r in rs)), float(any(r["flipped"] for r in rs))),
            higher_is_better=False,
        ),
    ),
    change=lambda r: (r["word"], r["position"]),
    view=lambda r: {"text": r["text"], "marked": marked(r), "facts": {"mentioned": r["mentioned"]}},
    settings=("sample", "seed", "positions", "words_per_position", "words"),
)
