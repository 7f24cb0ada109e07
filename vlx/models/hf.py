"""The generic adapter: any checkpoint that `AutoModelForImageTextToText` and `AutoProcessor` load.

Prompts (zero-shot, and few-shot turns with their images) go through the processor's own chat template; training
batches put the loss on the assistant's answer only; generation and label scoring are plain batched transformers
code, with vlx's fast paths for the architectures proven equal (`vlx.models.fast.ALLOWED`). A family keeps a class
of its own only for a real quirk, as a few overrides of this one (`PaliGemmaAdapter`: no chat template, a
prefix/suffix format with `token_type_ids`; `LlavaNextAdapter`: a tile limit).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, BatchFeature

from vlx import compat
from vlx.errors import ConfigError
from vlx.models import fast
from vlx.models.batches import encode, process
from vlx.models.fast.compiling import compile_cache_free
from vlx.models.generation import Generation, generate_texts
from vlx.models.label_scoring import score_answers
from vlx.models.loading import load_model, load_processor
from vlx.tasks.items import Example

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from vlx.models.types import LoadedModel

log = logging.getLogger(__name__)

# written beside a trained adapter: what base, prompt and target it was trained with
ADAPTER_META = "vlx_adapter.json"

# a demonstration as the prompt shows it: (its instruction, its answer); its image goes in the image list
Demo = tuple[str, str]


@runtime_checkable
class VLMAdapter(Protocol):
    """What the stages use of a loaded model: what it is, its prompt format, batched generation and scoring, training
    batches. Every adapter `load_adapter` returns has all of it (tests/test_model_loading.py checks each family)."""

    # the hub id or local folder the weights came from (a tiny model's: the folder it was built in)
    checkpoint: str
    # its config.json as transformers read it (model_type, the vision and text configs)
    config: PretrainedConfig
    # the transformers model (a peft model with a LoRA adapter), in eval mode: its dtype and devices, its weights
    model: LoadedModel
    # the checkpoint's processor, left-padding: its tokenizer, image processor and chat template
    processor: Any
    # whether generation decodes with a static cache and compiled step (prompts padded to PAD_MULTIPLE)
    compiled: bool
    # images one prompt can hold (None = no limit): 1 means no few-shot with images
    max_images: int | None
    # the task prompt the adapter or merged model was fine-tuned with (its vlx_adapter.json), None for a base model
    trained_prompt: str | None

    @property
    def answer_prefix(self) -> str:
        """What separates the end of a rendered prompt from the model's answer."""
        ...

    def prepare_inference(self) -> None:
        """Gets the model ready to generate: compiled where asked, before the first batch."""

    def render_prompt(self, example: Example, instruction: str, demos: Sequence[Demo] = ()) -> str:
        """The prompt text for `example` with the task's instruction, after the demonstrations."""

    def generate(
        self,
        prompts: list[str],
        images: list[Image.Image],
        ids: Sequence[str] | None = None,
        continuations: Sequence[str] | None = None,
        inputs: Any | None = None,
        **generation: Any,
    ) -> Generation:
        """Decoded answers for a batch of prompts and their images (`inputs`: the batch already encoded)."""

    def encode(self, prompts: list[str], images: list[Image.Image]) -> Any:
        """The processor's batch for prompts and their images."""

    def training_batch(self, images: list[Image.Image], texts: list[str], targets: list[str]) -> Any:
        """A training batch: prompts and targets encoded, labels set on the target tokens only."""

    def score(
        self, prompts: list[str], images: list[Image.Image], answers: Sequence[str], inputs: Any | None = None
    ) -> list[dict[str, float]]:
        """Each prompt's probability of each answer, normalised over `answers`."""


class HFAdapter:
    """Any image-text-to-text checkpoint (`model=hf model.checkpoint=<hub id or folder>`), made by
    `vlx.models.load_adapter`, which reads its config and picks the class.

    Args:
        checkpoint: hub id or local folder (as `resolve_checkpoint` checked it).
        config: the checkpoint's config (`read_config`), read once by `load_adapter` and handed down.
        dtype: auto, float32, float16 or bfloat16.
        device_map: auto, cpu, cuda or cuda:N.
        attn_implementation: auto (vlx's `sdpa_grouped` for the architectures on `vlx.models.fast.ALLOWED`, `sdpa`
            for the others), sdpa_grouped, sdpa, eager or flash_attention_2.
        adapter: folder of a peft LoRA adapter, or None.
        trust_remote_code: run code shipped with the checkpoint (only for checkpoints you trust).
        compile: auto (on a CUDA GPU, for the architectures on the allow-list), true or false. Compiled, the model
            is compiled for inference before the first batch (`compile_cache_free`) and `generate` decodes with a
            static KV cache and a compiled decode step (4-bit weights included), its prompts padded to a multiple
            of 64 tokens so that few shapes need compiling. Outputs stay the same. `true` for an architecture on
            `fast.STATIC_DECODE` (Qwen-VL) gives the static cache and compiled decode step alone.
        quantization: a transformers.BitsAndBytesConfig, or None.
        max_images: the most images one prompt may hold (None: no limit); few-shot prompts hold k + 1.
        chat_template: a Jinja chat template to use instead of the processor's own (None: the processor's).
        processor_kwargs: keyword arguments for `AutoProcessor.from_pretrained` (e.g. Qwen-VL's max_pixels).
    """

    model_class: ClassVar[type[Any]] = AutoModelForImageTextToText
    # the prompt format comes from the processor's chat template (PaliGemma's has none)
    uses_chat_template: ClassVar[bool] = True
    # `token_type_ids` of answer tokens appended after a prompt (PaliGemma: 1, its causal suffix)
    answer_token_type: ClassVar[int] = 0
    # the images a family's prompt format holds, whatever the config says (None: `max_images` decides)
    image_limit: ClassVar[int | None] = None

    def __init__(
        self,
        checkpoint: str,
        config: PretrainedConfig | None = None,
        dtype: str = "auto",
        device_map: str | None = "auto",
        attn_implementation: str | None = "auto",
        adapter: str | None = None,
        trust_remote_code: bool = False,
        compile: str | bool = "auto",
        quantization: Any | None = None,
        max_images: int | None = None,
        chat_template: str | None = None,
        processor_kwargs: dict[str, Any] | None = None,
    ):
        if config is None:  # a model YAML of before, whose _target_ named a family's class
            raise ConfigError(
                f"{type(self).__name__}({checkpoint!r}) is made by vlx.models.load_adapter, which reads the "
                f"checkpoint's config.json and picks the class: write `_target_: vlx.models.load_adapter` in the "
                f"model YAML (or leave _target_ out over `defaults: [hf]`)"
            )
        check_max_images(max_images)
        self.max_images = self.image_limit if self.image_limit is not None else max_images
        self.checkpoint = checkpoint
        self.config = config
        # compiling is checked before anything loads: for the architectures on the allow-list only
        architecture = fast.architecture(config)
        compiled = resolve_compile(compile, architecture)
        # vlx's compiled modules for the allow-list; a STATIC_DECODE architecture gets the static-cache decode alone
        self.compile_modules = compiled and fast.allowed(architecture)
        self.trained_prompt = trained_prompt(adapter, checkpoint)
        self.processor = load_processor(checkpoint, config, trust_remote_code, **(processor_kwargs or {}))
        if chat_template is not None:
            self.processor.chat_template = chat_template
        if self.uses_chat_template and not getattr(self.processor, "chat_template", None):
            raise ConfigError(
                f"model.checkpoint={checkpoint!r}: its processor has no chat template, so vlx cannot write prompts "
                f"for it; give one with model.chat_template=<jinja template>, or use the family's own YAML "
                f"(model=paligemma for PaliGemma's prefix prompts)"
            )
        self.model = load_model(
            self.model_class,
            checkpoint,
            config,
            dtype=dtype,
            device_map=device_map,
            quantization=quantization,
            attn_implementation=attn_implementation,
            adapter=adapter,
            trust_remote_code=trust_remote_code,
        )
        # the decode step: full precision or 4-bit (bitsandbytes' 8-bit layers are not known to trace)
        four_bit = quantization is not None and getattr(quantization, "load_in_4bit", False)
        self.compiled = compiled and (quantization is None or four_bit)
        if self.compiled and four_bit:
            compat.allow_quantized_compile(self.model)

    def prepare_inference(self) -> None:
        """Compiles the model for inference before the first inference batch (once; not at load, so that
        fine-tuning, which compiles whole blocks itself, gets the model as loaded)."""
        if self.compile_modules:
            compile_cache_free(self.model)
            self.compile_modules = False
            log.info("model.compile: the first batches compile (about a minute on a GPU; model.compile=false skips it)")

    def render_prompt(self, example: Example, instruction: str, demos: Sequence[Demo] = ()) -> str:
        """The conversation through the model's chat template: per demonstration a user turn (its image and
        instruction) and an assistant turn (its answer), then the query's user turn and the assistant's cue.
        Images are matched to the image places in order: demonstrations' first, the query's last."""
        conversation = []
        for demo_instruction, answer in demos:
            conversation += [user_turn(demo_instruction), assistant_turn(answer)]
        conversation.append(user_turn(instruction))
        return self.processor.apply_chat_template(conversation, add_generation_prompt=True)

    @cached_property
    def answer_prefix(self) -> str:
        """What the chat template writes between the assistant's cue and the answer's text (" " for LLaVA-NeXT's
        "[/INST] {answer}", "" for most): label answers are scored and continued after it.

        Raises:
            ConfigError: the prompt with the assistant's cue is not where the conversation with the answer starts,
                so answers cannot be scored or trained after prompts.
        """
        marker = "ANSWER8f3a"  # (templates trim the answer: no whitespace in it)
        prompt = self.processor.apply_chat_template([user_turn("q")], add_generation_prompt=True)
        full = self.processor.apply_chat_template([user_turn("q"), assistant_turn(marker)])
        if not full.startswith(prompt) or marker not in full[len(prompt) :]:
            raise ConfigError(
                f"model.checkpoint={self.checkpoint!r}: its chat template writes the assistant's answer elsewhere than "
                f"after the prompt with the assistant's cue (prompt {prompt[-40:]!r}, with the answer "
                f"{full[-60:]!r}); give a template that does with model.chat_template"
            )
        return full[len(prompt) : full.index(marker, len(prompt))]

    def encode(self, prompts: list[str], images: list[Image.Image]) -> Any:
        """The processor's batch for these prompts and images (CPU work: a loader can do it ahead of the GPU)."""
        return encode(self.processor, prompts, images)

    def score(
        self, prompts: list[str], images: list[Image.Image], answers: Sequence[str], inputs: Any | None = None
    ) -> list[dict[str, float]]:
        """Per prompt, the probability of each answer text (one shared prefill; see `vlx.models.label_scoring`).
        `inputs`: the batch from `encode`, when already made."""
        self.prepare_inference()
        prefix = self.answer_prefix
        scored = score_answers(
            self.model,
            self.processor,
            prompts,
            images,
            [prefix + a for a in answers],
            inputs=inputs,
            pad_to_multiple_of=PAD_MULTIPLE if self.compiled else None,
            answer_token_type=self.answer_token_type,
        )
        return [{a: row[prefix + a] for a in answers} for row in scored]

    def training_batch(self, images: list[Image.Image], texts: list[str], targets: list[str]) -> BatchFeature:
        """User turn (image + text) and assistant turn (target) through the chat template; only the assistant turn
        (its answer and what the template closes it with) carries loss. Its length is the full conversation's minus
        the prompt's, both counted after the processor has expanded the image tokens; with left padding it is the
        last tokens of each row."""
        self.answer_prefix  # noqa: B018 - refuses a template that does not put the answer after the prompt
        template = self.processor.apply_chat_template
        full = [template([user_turn(t), assistant_turn(y)]) for t, y in zip(texts, targets, strict=True)]
        prompts = [template([user_turn(t)], add_generation_prompt=True) for t in texts]
        batch = process(self.processor, full, images)
        prompt_lengths = process(self.processor, prompts, images)["attention_mask"].sum(dim=1)
        lengths = batch["attention_mask"].sum(dim=1)
        labels = batch["input_ids"].clone()  # [B, T]
        width = labels.shape[1]
        for i, (n, p) in enumerate(zip(lengths.tolist(), prompt_lengths.tolist(), strict=True)):
            labels[i, : width - (n - p)] = -100  # padding and prompt: no loss
        batch["labels"] = labels
        return batch

    def generate(
        self,
        prompts: list[str],
        images: list[Image.Image],
        ids: Sequence[str] | None = None,
        continuations: Sequence[str] | None = None,
        inputs: Any | None = None,
        **generation: Any,
    ) -> Generation:
        """Answers for a batch of rendered prompts and their images (decoded new tokens only). `inputs`: the batch
        from `encode`, when already made."""
        self.prepare_inference()
        pad_to = None
        if self.compiled:
            generation = {**static_cache_generation(self.model), **generation}
            pad_to = PAD_MULTIPLE
        return generate_texts(
            self.model,
            self.processor,
            prompts,
            images,
            ids=ids,
            continuations=continuations,
            pad_to_multiple_of=pad_to,
            inputs=inputs,
            answer_token_type=self.answer_token_type,
            **generation,
        )


def user_turn(text: str) -> dict[str, Any]:
    """A chat-template user turn: one image, then `text`."""
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}


def assistant_turn(text: str) -> dict[str, Any]:
    """A chat-template assistant turn holding `text`."""
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


# compiled models see prompts padded to a multiple of this many tokens: a handful of shapes instead of one per length
PAD_MULTIPLE = 64


def resolve_compile(setting: str | bool, architecture: str | None) -> bool:
    """`auto` -> compile on a CUDA GPU (where it pays; on a CPU compiling takes longer than it saves), for the
    architectures on the fast-path allow-list only; `true` also for those on `fast.STATIC_DECODE` (transformers'
    static cache and compiled decode step alone), refused for any other architecture."""
    if setting == "auto":
        return torch.cuda.is_available() and fast.allowed(architecture)
    if not isinstance(setting, bool):
        raise ConfigError(f"model.compile={setting!r}: use auto, true or false")
    if setting and not fast.allowed(architecture) and architecture not in fast.STATIC_DECODE:
        why = f" ({fast.REFUSED[architecture]})" if architecture in fast.REFUSED else ""
        raise ConfigError(
            f"model.compile=true: vlx compiles only the architectures its tests prove unchanged by it "
            f"({', '.join(fast.ALLOWED)}), not {architecture}{why}; use model.compile=false (or auto)"
        )
    return setting


def static_cache_generation(model: LoadedModel) -> dict[str, Any]:
    """`generate` arguments for a static KV cache, with which transformers compiles the decode step (on a CPU too,
    when asked for explicitly: tests)."""
    return {"cache_implementation": "static", "compile_config": compat.compile_config_for(model.device)}


def trained_prompt(adapter: str | None, checkpoint: str) -> str | None:
    """The task prompt a fine-tune was trained with (`prompt_template` in its vlx_adapter.json), from the adapter's
    folder, or from a merged model's (stage=merge copies the record into it); None without a record. The stage that
    asks the model compares it with task.prompt (`check_trained_prompt`): the prompt itself is task.prompt alone."""
    folder = Path(adapter) if adapter is not None else Path(checkpoint)
    meta = folder / ADAPTER_META
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text()).get("prompt_template")
    except ValueError as err:
        raise ConfigError(f"{meta}: not valid JSON ({err}); stage=finetune or stage=merge writes it again") from err


def check_trained_prompt(trained: str | None, prompt: str) -> None:
    """Says (a warning) when the model was fine-tuned on another task.prompt than the one it is asked with now: its
    answers then come from a prompt it never saw in training. The run goes on: asking otherwise can be the point."""
    if trained is not None and trained != prompt:
        log.warning(
            "this model was fine-tuned with task.prompt=%r (its vlx_adapter.json) and is asked with %r; "
            "to ask as it was trained, add task.prompt=%r",
            trained,
            prompt,
            trained,
        )


def check_max_images(limit: Any) -> None:
    """Refuses a model.max_images that is not a whole number >= 1 or null (ConfigError)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"model.max_images={limit!r}: use a number of images >= 1, or null for no limit")


def check_images_per_prompt(limit: int | None, name: str, k: int) -> None:
    """Refuses k demonstrations where the model's prompts hold fewer than k + 1 images (`name`: the model)."""
    if k > 0 and limit is not None and k + 1 > limit:
        raise ConfigError(
            f"shots={k}: {name} takes {limit} image(s) per prompt, so demonstrations with their images cannot be "
            f"shown to it; use shots=0 (or a model with a chat template for several images, e.g. model=llava)"
        )
