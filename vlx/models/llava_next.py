"""LLaVA-NeXT (LLaVA-v1.6) adapter: prompts through the model's own chat template."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image
from transformers import BatchFeature, LlavaNextForConditionalGeneration

from vlx.models._base import Demo, HFAdapter
from vlx.records import Example


class LlavaNextAdapter(HFAdapter):
    """A LLaVA-NeXT checkpoint (e.g. llava-hf/llava-v1.6-mistral-7b-hf); arguments as `HFAdapter`."""

    model_class = LlavaNextForConditionalGeneration
    answer_prefix = " "  # the chat template writes "[/INST] {answer}</s>"

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
