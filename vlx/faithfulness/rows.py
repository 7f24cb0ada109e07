"""What every faithfulness test's row holds of the two answers it compares: the run's own, and the model's answer to
the changed item."""

from __future__ import annotations

from typing import Any

from vlx.run.records import Prediction


def answers(original: Prediction, new: Prediction) -> dict[str, Any]:
    """The original and new label and explanation, the new answer as generated, its label scores, and `flipped`
    (whether the label changed; None where either label is unparsed)."""
    return {
        "original_label": original.pred,
        "label": new.pred,
        "original_explanation": original.explanation,
        "explanation": new.explanation,
        "raw": new.raw,
        "scores": new.scores,
        "flipped": None if original.pred is None or new.pred is None else new.pred != original.pred,
    }
