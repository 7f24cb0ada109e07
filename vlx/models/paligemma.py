"""PaliGemma adapter: a plain text prefix after the image tokens (PaliGemma has no chat template)."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PaliGemmaForConditionalGeneration

from vlx.models._base import Demo, HFAdapter
from vlx.records import Example


class PaliGemmaAdapter(HFAdapter):
    """A PaliGemma checkpoint (e.g. google/paligemma-3b-mix-448); arguments as `HFAdapter`.

    After fine-tuning with the seed's recipe, use `model.prompt_template="explain en {text}"`.
    """

    model_class = PaliGemmaForConditionalGeneration
    # PaliGemma's format is image tokens + one text prefix: it was trained on a single image per prompt
    max_images = 1

    def render_prompt(self, example: Example, instruction: str, demos: Sequence[Demo] = ()) -> str:
        """The prefix; the processor puts the image tokens and BOS before it and a newline after it."""
        if demos:
            raise ValueError("PaliGemma prompts hold one image: no demonstrations (checked by the stage first)")
        return self.user_text(example, instruction)
