"""LLaVA-NeXT (LLaVA-v1.6) adapter: prompts through the model's own chat template."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from PIL import Image
from transformers import BatchFeature, LlavaNextForConditionalGeneration

from vlx.errors import ConfigError
from vlx.models._base import Demo, HFAdapter
from vlx.records import Example

log = logging.getLogger(__name__)


class LlavaNextAdapter(HFAdapter):
    """A LLaVA-NeXT checkpoint (e.g. llava-hf/llava-v1.6-mistral-7b-hf); arguments as `HFAdapter`, plus:

    Args:
        max_tiles: the most high-resolution tiles an image is cut into (None = the checkpoint's grid: up to 4 for
            v1.6, i.e. ~2,300 image tokens for a 500x375 image). Fewer tiles, fewer image tokens: faster and
            coarser. Each tile is 576 tokens at 336 px; the downscaled whole image is always added.
    """

    model_class = LlavaNextForConditionalGeneration
    answer_prefix = " "  # the chat template writes "[/INST] {answer}</s>"

    def __init__(self, *args: Any, max_tiles: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if max_tiles is not None:
            self.limit_tiles(max_tiles)

    def limit_tiles(self, max_tiles: int) -> None:
        """Keeps the grid resolutions of at most `max_tiles` tiles, in the processor (token counts) and the model
        config (feature layout) alike, which must agree."""
        if not isinstance(max_tiles, int) or max_tiles < 1:
            raise ConfigError(f"model.max_tiles={max_tiles!r}: use a number of tiles >= 1, or null for all")
        tile = self.model.config.vision_config.image_size
        grids = self.processor.image_processor.image_grid_pinpoints
        kept = [[h, w] for h, w in grids if (h // tile) * (w // tile) <= max_tiles]
        kept = kept or [[tile, tile]]  # one tile: the image at the vision tower's own size
        self.processor.image_processor.image_grid_pinpoints = kept
        self.model.config.image_grid_pinpoints = kept
        log.info("LLaVA-NeXT tiles: at most %d (grids %s of %s)", max_tiles, kept, grids)

    def render_prompt(self, example: Example, instruction: str, demos: Sequence[Demo] = ()) -> str:
        """The conversation through the model's chat template: per demonstration a user turn (its image and
        instruction) and an assistant turn (its answer), then the query's user turn and the assistant's cue.
        Images are matched to the `<image>` places in order: demonstrations' first, the query's last."""
        conversation = []
        for demo_instruction, answer in demos:
            conversation.append(
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": demo_instruction}]}
            )
            conversation.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        conversation.append(user_turn(self.user_text(example, instruction)))
        return self.processor.apply_chat_template(conversation, add_generation_prompt=True)

    def training_batch(self, images: list[Image.Image], texts: list[str], targets: list[str]) -> BatchFeature:
        """User turn (image + text) and assistant turn (target) through the chat template; only the assistant turn
        carries loss. Its length is the full conversation's minus the prompt's, both counted after the processor
        has expanded the image tokens; with left padding it is the last tokens of each row."""
        template = self.processor.apply_chat_template
        full = [template([user_turn(t), {"role": "assistant", "content": [{"type": "text", "text": y}]}])
                for t, y in zip(texts, targets, strict=True)]  # fmt: skip
        prompts = [template([user_turn(t)], add_generation_prompt=True) for t in texts]
        batch = self.processor(images=images, text=full, padding=True, return_tensors="pt")
        prompt_lengths = self.processor(images=images, text=prompts, padding=True, return_tensors="pt")[
            "attention_mask"
        ].sum(dim=1)
        lengths = batch["attention_mask"].sum(dim=1)
        labels = batch["input_ids"].clone()  # [B, T]
        width = labels.shape[1]
        for i, (n, p) in enumerate(zip(lengths.tolist(), prompt_lengths.tolist(), strict=True)):
            labels[i, : width - (n - p)] = -100  # padding and prompt: no loss
        batch["labels"] = labels
        return batch


def user_turn(text: str) -> dict:
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}
