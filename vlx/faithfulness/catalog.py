"""The declared faithfulness tests by name (each test module's `TEST`), and the test an output of faithfulness.json
belongs to (`image_reliance_mean_colour` is image_reliance's)."""

from __future__ import annotations

from vlx.faithfulness import cc_shap, counterfactual, image_reliance
from vlx.faithfulness.measures import FaithfulnessTest

# every test readers know, in the order their tables show them: a new test adds its `TEST` here
DECLARED: dict[str, FaithfulnessTest] = {t.name: t for t in (counterfactual.TEST, image_reliance.TEST, cc_shap.TEST)}


def declared_test(output: str) -> FaithfulnessTest | None:
    """The declared test an output name belongs to: the test itself, or `<test>_<variant>`; None for a name no
    declared test makes (a newer vlx's test: its numbers are shown as they are, without a comparison)."""
    if output in DECLARED:
        return DECLARED[output]
    found = [t for name, t in DECLARED.items() if output.startswith(name + "_")]
    return max(found, key=lambda t: len(t.name)) if found else None
