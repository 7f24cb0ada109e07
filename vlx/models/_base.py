"""The adapter interface, and the loading/generation that the transformers-backed adapters share."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from PIL import Image

from vlx.errors import ConfigError
from vlx.models._generation import Generation, encode, generate_texts
from vlx.models._scoring import score_answers
from vlx.models.compiling import compile_cache_free
from vlx.models.loading import load_model, load_processor, resolve_checkpoint
from vlx.records import Example

log = logging.getLogger(__name__)

# written beside a trained adapter: what base, prompt and target it was trained with
ADAPTER_META = "vlx_adapter.json"

# a demonstration as the prompt shows it: (its instruction, its answer); its image goes in the image list
Demo = tuple[str, str]


class VLMAdapter(Protocol):
    """What a stage needs from a model family: its prompt format and batched generation."""

    # images one prompt can hold (None = no limit): 1 means no few-shot with images
    max_images: ClassVar[int | None]

    def render_prompt(self, example: Example, instruction: str, demos: Sequence[Demo] = ()) -> str: ...

    def generate(
        self,
        prompts: list[str],
        images: list[Image.Image],
        ids: Sequence[str] | None = None,
        continuations: Sequence[str] | None = None,
        inputs: Any | None = None,
        **generation: Any,
    ) -> Generation: ...

    def encode(self, prompts: list[str], images: list[Image.Image]) -> Any: ...

    def training_batch(self, images: list[Image.Image], texts: list[str], targets: list[str]) -> Any: ...

    def score(
        self, prompts: list[str], images: list[Image.Image], answers: Sequence[str], inputs: Any | None = None
    ) -> list[dict[str, float]]: ...


class HFAdapter:
    """Loads `model_class` + its processor and generates in batches; subclasses only say how a prompt looks.

    Args:
        checkpoint: hub id or local folder.
        dtype: auto, float32, float16 or bfloat16.
        device_map: auto, cpu, cuda or cuda:N.
        attn_implementation: sdpa_grouped (vlx.models.attention), sdpa, eager or flash_attention_2.
        adapter: folder of a peft LoRA adapter, or None.
        trust_remote_code: run code shipped with the checkpoint (only for checkpoints you trust).
        tiny: the architecture of vlx's tiny random-weight models (tests, demos), built on first use when
            `checkpoint` is the factory's own folder `tiny_dir`.
        tiny_dir: that folder (in vlx's cache); a `checkpoint` elsewhere is loaded as it is, never written.
        prompt_template: `{prompt}` is the task's instruction, `{text}` the item's text.
        compile: auto (on a CUDA GPU), true or false. Compiled, the model is compiled for inference before the first
            batch (`compile_cache_free`: decoder blocks for calls without a KV cache, which vlx's prefill of causal
            prompts makes; norms, MLPs and vision blocks; not bitsandbytes-quantized modules), and `generate` decodes
            with a static KV cache and a compiled decode step (4-bit weights included), its prompts padded to a
            multiple of 64 tokens so that few shapes need compiling. Outputs stay the same.
        quantization: a transformers.BitsAndBytesConfig, or None.
    """

    model_class: ClassVar[type]
    max_images: ClassVar[int | None] = None
    # what separates the end of a rendered prompt from the model's answer
    answer_prefix: ClassVar[str] = ""

    def __init__(
        self,
        checkpoint: str,
        dtype: str = "auto",
        device_map: str | None = "auto",
        attn_implementation: str | None = "sdpa_grouped",
        adapter: str | None = None,
        trust_remote_code: bool = False,
        tiny: str | None = None,
        tiny_dir: str | None = None,
        prompt_template: str = "{prompt}",
        compile: str | bool = "auto",
        quantization: Any | None = None,
    ):
        self.checkpoint = resolve_checkpoint(checkpoint, tiny, tiny_dir)
        self.prompt_template = trained_prompt_template(adapter, self.checkpoint, prompt_template)
        self.processor = load_processor(self.checkpoint, trust_remote_code)
        self.model = load_model(
            self.model_class,
            self.checkpoint,
            dtype=dtype,
            device_map=device_map,
            quantization=quantization,
            attn_implementation=attn_implementation,
            adapter=adapter,
            trust_remote_code=trust_remote_code,
        )
        self.compile_modules = resolve_compile(compile)  # `compile_cache_free`, before the first batch
        # the decode step: full precision or 4-bit (bitsandbytes' 8-bit layers are not known to trace)
        four_bit = quantization is not None and getattr(quantization, "load_in_4bit", False)
        self.compiled = self.compile_modules and (quantization is None or four_bit)
        if self.compiled and four_bit:
            allow_quantized_compile(self.model)

    def prepare_inference(self) -> None:
        """Compiles the model for inference before the first inference batch (once; not at load, so that
        fine-tuning, which compiles whole blocks itself, gets the model as loaded)."""
        if self.compile_modules:
            compile_cache_free(self.model)
            self.compile_modules = False
            log.info("model.compile: the first batches compile (about a minute on a GPU; model.compile=false skips it)")

    def user_text(self, example: Example, instruction: str) -> str:
        return self.prompt_template.format(prompt=instruction, text=example.text)

    def render_prompt(self, example: Example, instruction: str, demos: Sequence[Demo] = ()) -> str:
        raise NotImplementedError

    def encode(self, prompts: list[str], images: list[Image.Image]) -> Any:
        """The processor's batch for these prompts and images (CPU work: a loader can do it ahead of the GPU)."""
        return encode(self.processor, prompts, images)

    def score(
        self, prompts: list[str], images: list[Image.Image], answers: Sequence[str], inputs: Any | None = None
    ) -> list[dict[str, float]]:
        """Per prompt, the probability of each answer text (one shared prefill; see `_scoring`). `inputs`: the
        batch from `encode`, when already made."""
        self.prepare_inference()
        scored = score_answers(self.model, self.processor, prompts, images, [self.answer_prefix + a for a in answers],
                               inputs=inputs, pad_to_multiple_of=PAD_MULTIPLE if self.compiled else None)  # fmt: skip
        return [{a: row[self.answer_prefix + a] for a in answers} for row in scored]

    def training_batch(self, images: list[Image.Image], texts: list[str], targets: list[str]) -> Any:
        """A training batch (a BatchFeature with `labels`) in which only the target tokens carry loss."""
        raise NotImplementedError

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
        return generate_texts(self.model, self.processor, prompts, images, ids=ids, continuations=continuations,
                              pad_to_multiple_of=pad_to, inputs=inputs, **generation)  # fmt: skip


# compiled models see prompts padded to a multiple of this many tokens: a handful of shapes instead of one per length
PAD_MULTIPLE = 64


def resolve_compile(setting: str | bool) -> bool:
    """`auto` -> compile on a CUDA GPU (where it pays), not on a CPU (where compiling takes longer than it saves)."""
    if setting == "auto":
        return torch.cuda.is_available()
    if not isinstance(setting, bool):
        raise ConfigError(f"model.compile={setting!r}: use auto, true or false")
    return setting


def allow_quantized_compile(model: torch.nn.Module) -> None:
    """Lets `generate` compile the decode step of a model with bitsandbytes 4-bit weights.

    transformers declines to by default (its bitsandbytes quantizer reports `is_compileable = False`), but
    bitsandbytes 0.50's 4-bit layers trace without graph breaks, the outputs are the same
    (tests/test_fast_decode.py) and on an H100 nf4 decoding ran 38% faster (docs/PERFORMANCE.md). The model's own
    quantizer object gets a subclass that says so; nothing else changes.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None or quantizer.is_compileable:
        return
    base = type(quantizer)
    quantizer.__class__ = type(f"Compileable{base.__name__}", (base,), {"is_compileable": property(lambda _: True)})


def static_cache_generation(model: torch.nn.Module) -> dict[str, Any]:
    """`generate` arguments for a static KV cache, with which transformers compiles the decode step (on a CPU too,
    when asked for explicitly: tests)."""
    from transformers import CompileConfig

    settings: dict[str, Any] = {"cache_implementation": "static"}
    if model.device.type == "cpu":
        config = CompileConfig()
        config._compile_all_devices = True  # transformers' own switch for compiling off the GPU
        settings["compile_config"] = config
    return settings


def trained_prompt_template(adapter: str | None, checkpoint: str, configured: str) -> str:
    """The prompt a fine-tune was trained with, unless the config sets one of its own: from the adapter's
    vlx_adapter.json, or from a merged model's (stage=merge copies it into the checkpoint folder)."""
    if configured != "{prompt}":
        return configured
    folder = Path(adapter) if adapter is not None else Path(checkpoint)
    meta = folder / ADAPTER_META
    if not meta.is_file():
        return configured
    try:
        template = json.loads(meta.read_text()).get("prompt_template", configured)
    except ValueError as err:
        raise ConfigError(f"{meta}: not valid JSON ({err}); stage=finetune or stage=merge writes it again") from err
    log.info("prompt template %r from %s (the one the model was fine-tuned with)", template, meta)
    return template


def check_images_per_prompt(adapter_class: type, k: int) -> None:
    """Refuses k demonstrations where the model's prompt format holds fewer than k + 1 images."""
    limit = getattr(adapter_class, "max_images", None)
    if k > 0 and limit is not None and k + 1 > limit:
        raise ConfigError(
            f"shots={k}: {adapter_class.__name__} takes {limit} image(s) per prompt, so demonstrations with their "
            f"images cannot be shown to it; use shots=0 (or a model with a chat template for several images, e.g. "
            f"model=llava)"
        )
