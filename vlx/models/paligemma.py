"""PaliGemma (1 and 2): a plain text prefix after the image tokens, no chat template; the suffix is the answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from PIL import Image
from transformers import BatchFeature

from vlx.models.batches import process
from vlx.models.hf import Demo, HFAdapter
from vlx.tasks.items import Example


class PaliGemmaAdapter(HFAdapter):
    """A PaliGemma checkpoint (google/paligemma-3b-mix-448, google/paligemma2-3b-mix-448, ...); arguments as
    `HFAdapter`.

    The seed's fine-tuning recipe trains and asks with `task.prompt="explain en {text}"`.
    """

    uses_chat_template: ClassVar[bool] = False
    answer_token_type: ClassVar[int] = 1  # the suffix attends causally (the prefix both ways)
    answer_prefix = ""  # the processor ends the prefix with a newline; the answer follows it
    # PaliGemma's format is image tokens + one text prefix: it was trained on a single image per prompt
    image_limit: ClassVar[int | None] = 1

    def render_prompt(self, example: Example, instruction: str, demos: Sequence[Demo] = ()) -> str:
        """`<image>` + the prefix; the processor expands the image token, then adds BOS before the prefix and a
        newline after it (written explicitly: without the image token the processor guesses and warns each call)."""
        if demos:
            raise ValueError("PaliGemma prompts hold one image: no demonstrations (checked by the stage first)")
        return self.processor.image_token + instruction

    def training_batch(self, images: list[Image.Image], texts: list[str], targets: list[str]) -> BatchFeature:
        """Prefix + suffix through the processor, which sets `labels` to the suffix tokens (and EOS) only."""
        texts = [self.processor.image_token + t for t in texts]
        return process(self.processor, texts, images, suffix=targets)
