"""LLaVA-NeXT (LLaVA-v1.6) adapter: prompts through the model's own chat template."""

from __future__ import annotations

from transformers import LlavaNextForConditionalGeneration

from vlx.models._base import HFAdapter
from vlx.records import Example


class LlavaNextAdapter(HFAdapter):
    """A LLaVA-NeXT checkpoint (e.g. llava-hf/llava-v1.6-mistral-7b-hf); arguments as `HFAdapter`."""

    model_class = LlavaNextForConditionalGeneration

    def render_prompt(self, example: Example, instruction: str) -> str:
        """One user turn holding the image and the instruction, then the assistant's cue."""
        content = [{"type": "image"}, {"type": "text", "text": self.user_text(example, instruction)}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
