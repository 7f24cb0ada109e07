"""PaliGemma adapter: a plain text prefix after the image tokens (PaliGemma has no chat template)."""

from __future__ import annotations

from transformers import PaliGemmaForConditionalGeneration

from vlx.models._base import HFAdapter
from vlx.records import Example


class PaliGemmaAdapter(HFAdapter):
    """A PaliGemma checkpoint (e.g. google/paligemma-3b-mix-448); arguments as `HFAdapter`.

    After fine-tuning with the seed's recipe, use `model.prompt_template="explain en {text}"`.
    """

    model_class = PaliGemmaForConditionalGeneration

    def render_prompt(self, example: Example, instruction: str) -> str:
        """The prefix; the processor puts the image tokens and BOS before it and a newline after it."""
        return self.user_text(example, instruction)
