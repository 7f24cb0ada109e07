"""CC-SHAP and MM-SHAP: do the label and its explanation rest on the same parts of the input, and how much of the
label rests on the text rather than the image?

Per item, Shapley values (`vlx.faithfulness.shapley`) of the image patches and prompt tokens for (a) the predicted
label's answer after the prompt and (b) the run's explanation after the prompt and that label (a post-hoc
explanation: the label is given). As Parcalabescu & Frank compute them (Heidelberg-NLP/CC-SHAP-VLM,
`mm_shap_cc_shap.py`):

- MM-SHAP's text share (T-SHAP; Parcalabescu & Frank, ACL 2023): |values| of the text players over those of all
  players, summed over the output tokens (`compute_mm_score`); the image share is 1 - it. For the explanation, the
  label's tokens before it count as text, as the authors' prompt suffix does.
- contribution ratios: per output token, each player's value over the sum of |values| of the shared players (image
  patches and prompt tokens; the label's tokens before the explanation marginalized out), then the mean over output
  tokens (`aggregate_values_prediction`, `aggregate_values_explanation`; x100 as theirs, which no measure below
  depends on but MSE).
- CC-SHAP (Parcalabescu & Frank, ACL 2024): 1 - the cosine distance between the label's ratios and the
  explanation's, in [-1, 1]: 1 when both rest on the same inputs in the same proportions (self-consistent), 0 when
  unrelated, -1 when opposed (`cc_shap_measure`'s headline). Also the authors' other measures, as distances:
  correlation distance, MSE, the variance of the squared differences, KL(explanation || label) and the
  Jensen-Shannon distance of the softmaxed ratios (they report 1 - each).

An output whose every player has value 0 (a model whose output cannot depend on the input) has no ratios: the
authors' division gives NaN; here its ratios, shares and CC-SHAP are None, counted apart in the summary.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from vlx.faithfulness import measures
from vlx.faithfulness.shapley import ShapleyValues, explain_output
from vlx.models.hf import VLMAdapter
from vlx.run.records import Prediction
from vlx.run.store import JsonlStore
from vlx.tasks import Task
from vlx.tasks.items import Example

log = logging.getLogger(__name__)

NAME = "cc_shap"
# the authors' other measures, as distances (0: the same)
DISTANCES = ("correlation_distance", "mse", "variance", "kl_divergence", "js_distance")


def text_share(values: np.ndarray, image_players: int) -> float | None:
    """T-SHAP: the share of |values| on the text players, summed over output tokens; None where every value is 0."""
    image = float(np.abs(values[:image_players]).sum())
    text = float(np.abs(values[image_players:]).sum())
    return text / (text + image) if text + image > 0 else None


def contribution_ratios(values: np.ndarray, marginalized: int = 0) -> np.ndarray | None:
    """Each shared player's value over the shared players' |values| (x100), per output token, averaged over the
    output tokens; the last `marginalized` players are left out (the authors' `aggregate_values_*`). Output tokens
    whose shared values are all 0 have no ratios and are left out of the mean; None where none has any."""
    shared = values[: values.shape[0] - marginalized]
    totals = np.abs(shared).sum(axis=0)  # [output tokens]
    live = totals > 0
    if not live.any():
        return None
    return (shared[:, live] / totals[live] * 100).mean(axis=1)


def consistency(label: np.ndarray, explanation: np.ndarray) -> dict[str, float]:
    """CC-SHAP (1 - cosine distance) and the authors' other measures between two ratio vectors (`cc_shap_score`)."""
    from scipy import spatial, special, stats

    mse = float(np.mean((label - explanation) ** 2))
    return {
        "cc_shap": float(1 - spatial.distance.cosine(label, explanation)),
        "correlation_distance": float(spatial.distance.correlation(label, explanation)),
        "mse": mse,
        "variance": float(np.sum(((label - explanation) ** 2 - mse) ** 2) / label.shape[0]),
        "kl_divergence": float(stats.entropy(special.softmax(explanation), special.softmax(label))),
        "js_distance": float(spatial.distance.jensenshannon(special.softmax(label), special.softmax(explanation))),
    }


def item_seed(seed: int, item: str) -> int:
    """An item's own permutation seed: the same whatever else is sampled or already done."""
    return int(hashlib.sha1(f"{seed}:{item}".encode()).hexdigest()[:7], 16)  # < 2**28: numpy takes it, and it + 1


def _rounded(values: np.ndarray | None) -> list[float] | None:
    return None if values is None else [round(float(v), 4) for v in values]


def _finite(value: float) -> float | None:
    return value if np.isfinite(value) else None


def cc_shap_row(
    model: VLMAdapter,
    task: Task,
    example: Example,
    prediction: Prediction,
    *,
    evals: int,
    seed: int,
    patches: int | None,
    logits: str,
    batch_size: int,
) -> dict[str, Any]:
    """The test's row of one item: its shares, CC-SHAP and measures, the ratios per player, the players, and the
    cost (model evaluations and seconds). An item without a parsed label gets no values; one without an explanation
    (a decode=score run) the label's alone."""
    row: dict[str, Any] = {
        "id": example.id,
        "item": example.id,
        "label": prediction.pred,
        "explanation": prediction.explanation,
        "note": None,
    }
    empty = dict.fromkeys(("text_share_label", "text_share_explanation", "cc_shap", *DISTANCES))
    if prediction.pred is None:
        return {**row, **empty, "evals": 0, "seconds": 0.0, "note": "unparsed label: nothing to explain"}
    prefix = model.answer_prefix
    own_seed = item_seed(seed, example.id)
    label = explain_output(
        model,
        task,
        example,
        prefix + task.label_text(prediction.pred),
        evals=evals,
        seed=own_seed,
        patches=patches,
        logits=logits,
        batch_size=batch_size,
    )
    row.update(
        patches=label.patches,
        image_players=label.image_players,
        text_tokens=label.text_tokens,
        label_tokens=label.output_tokens,
        permutations=label.permutations,
        text_share_label=text_share(label.values, label.image_players),
        ratios_label=_rounded(contribution_ratios(label.values)),
    )
    explanation: ShapleyValues | None = None
    if (prediction.explanation or "").strip():
        stated = task.stated(prediction.pred)
        answer = task.answer(prediction.pred, prediction.explanation or "")
        explanation = explain_output(
            model,
            task,
            example,
            answer[len(stated) :],
            context=prefix + stated,
            evals=evals,
            seed=own_seed + 1,
            patches=label.patches,  # the label's patches: the two ratio vectors have the same players
            logits=logits,
            batch_size=batch_size,
        )
    else:
        row["note"] = "no explanation: the label's values alone"
    ratios_label = contribution_ratios(label.values)
    ratios_explanation = (
        contribution_ratios(explanation.values, explanation.context_players) if explanation is not None else None
    )
    measures: dict[str, float | None] = dict.fromkeys(("cc_shap", *DISTANCES))
    if ratios_label is not None and ratios_explanation is not None:
        measures = {k: _finite(v) for k, v in consistency(ratios_label, ratios_explanation).items()}
    elif ratios_label is None or explanation is not None:
        row["note"] = "every contribution is 0: no ratios, so no CC-SHAP"
    parts = [label] + ([explanation] if explanation is not None else [])
    return {
        **row,
        "explanation_tokens": explanation.output_tokens if explanation is not None else None,
        "text_share_explanation": (
            text_share(explanation.values, explanation.image_players) if explanation is not None else None
        ),
        "ratios_explanation": _rounded(ratios_explanation),
        **measures,
        "evals": sum(p.evals for p in parts),
        "seconds": round(sum(p.seconds for p in parts), 3),
    }


def run_items(
    model: VLMAdapter,
    task: Task,
    items: Sequence[Example],
    predictions: Mapping[str, Prediction],
    store: JsonlStore,
    *,
    evals: int,
    seed: int,
    patches: int | None,
    logits: str,
    batch_size: int,
) -> int:
    """Explains every item not yet in `store`, appending its row (`cc_shap_row`) as it finishes, under a progress
    bar over items; returns the rows added."""
    done = store.done_ids()
    todo = [ex for ex in items if ex.id not in done]
    for example in tqdm(todo, desc=NAME, unit="item", total=len(items), initial=len(items) - len(todo)):
        store.append(
            [
                cc_shap_row(
                    model,
                    task,
                    example,
                    predictions[example.id],
                    evals=evals,
                    seed=seed,
                    patches=patches,
                    logits=logits,
                    batch_size=batch_size,
                )
            ]
        )
    return len(todo)


def explained(row: Mapping[str, Any]) -> bool:
    """A row whose label parsed, so that its values were computed: the rows the cost counts."""
    return row["label"] is not None


def field(key: str) -> Callable[[Mapping[str, Any]], float | None]:
    """A row's value of `key` (None where the row has none)."""
    return lambda row: row.get(key)


# what the test reports, for its summary, stage=report, stage=compare and the review page (`vlx.faithfulness.measures`)
TEST = measures.FaithfulnessTest(
    name=NAME,
    title="CC-SHAP",
    measures=(
        measures.Measure.mean("cc_shap", "CC-SHAP", lambda r: r.get("cc_shap"), higher_is_better=True),
        measures.Measure.mean("text_share_label", "Text share of the label", lambda r: r.get("text_share_label")),
        measures.Measure.mean(
            "text_share_explanation", "Text share of the explanation", lambda r: r.get("text_share_explanation")
        ),
        *(
            measures.Measure.mean(k, k.replace("_", " ").capitalize(), field(k), higher_is_better=False)
            for k in DISTANCES
        ),
        measures.Measure.mean(
            "evals_per_item", "Model evaluations per item", lambda r: r["evals"], rows=explained, paired=False
        ),
        measures.Measure.mean(
            "seconds_per_item", "Seconds per item", lambda r: r["seconds"], rows=explained, paired=False
        ),
    ),
    change=lambda r: None,  # nothing of the input is changed: the items' own values are compared
    view=lambda r: {
        "facts": {k: r.get(k) for k in ("cc_shap", "text_share_label", "text_share_explanation", "patches", "note")}
    },
    settings=("sample", "seed", "shap_evals", "shap_patches", "shap_logits"),
)


def summarize(rows: Sequence[Mapping[str, Any]], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The test's numbers, each {"value", "ci", "n"} with its interval over items: the mean CC-SHAP, the mean text
    share of the label's and of the explanation's contributions, the authors' other measures, and the cost (model
    evaluations and seconds per item explained); with the counts."""
    parsed = [r for r in rows if explained(r)]
    return {
        "items": len(rows),
        "unparsed_items": len(rows) - len(parsed),
        "items_without_explanation": sum(1 for r in parsed if r.get("explanation_tokens") is None),
        "items_with_cc_shap": sum(1 for r in rows if r.get("cc_shap") is not None),
        **measures.summarize(rows, TEST, resamples, seed),
    }
