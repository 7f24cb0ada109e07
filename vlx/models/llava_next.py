"""LLaVA-NeXT (LLaVA-v1.6) adapter: prompts through the model's own chat template."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import LlavaNextForConditionalGeneration

from vlx.models._base import Demo, HFAdapter
from vlx.records import Example


class LlavaNextAdapter(HFAdapter):
    """A LLaVA-NeXT checkpoint (e.g. llava-hf/llava-v1.6-mistral-7b-hf); arguments as `HFAdapter`."""

    model_class = LlavaNextForConditionalGeneration

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
        content = [{"type": "image"}, {"type": "text", "text": self.user_text(example, instruction)}]
        conversation.append({"role": "user", "content": content})
        return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
