"""A tiny PaliGemma (SigLIP vision + Gemma text), the architecture of google/paligemma-3b-mix-448."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import (
    GemmaConfig,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    PreTrainedTokenizerFast,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)

from vlx.models.tiny._text import INIT_RANGE, set_generation_ids, train_tokenizer

WIDTH = 64  # bitsandbytes' 4-bit blocks are 64 wide: narrower layers cannot be quantized on CPU


def processor_and_vision() -> tuple[PaliGemmaProcessor, SiglipVisionConfig]:
    """The tokenizer and processor (PaliGemma 2 kept them), and the SigLIP tower's config, of the tiny PaliGemmas."""
    # Real Gemma ids: <pad>=0, <eos>=1, <bos>=2, <unk>=3; <image> is a special token of the PaliGemma tokenizer.
    tok = train_tokenizer(["<pad>", "<eos>", "<bos>", "<unk>", "<image>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        image_token="<image>",
        add_bos_token=True,  # as in Gemma; PaliGemmaProcessor turns it off and inserts <bos> after the image tokens
        add_eos_token=False,
        padding_side="left",
    )
    image_size, patch_size = 56, 14  # 4x4 = 16 image tokens: small shapes stay visible, sequences stay short
    image_seq_length = (image_size // patch_size) ** 2
    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_seq_length=image_seq_length,  # PaliGemmaProcessor refuses an image processor without it
    )
    # Built before the model config: the processor adds the 1024 <locXXXX> and 128 <segXXX> tokens to the
    # tokenizer, and the embedding matrix has to cover them (the real vocabulary already contains them).
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    vision_config = SiglipVisionConfig(  # type: ignore[call-arg]  # (transformers' signature leaves out projection_dim, which the config takes and keeps)
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=WIDTH,
        vision_use_head=False,
    )
    return processor, vision_config


def paligemma_config(
    processor: PaliGemmaProcessor, vision_config: SiglipVisionConfig, text_config: Any
) -> PaliGemmaConfig:
    """The PaliGemma config around a tiny text model (Gemma or Gemma 2) and the tower of `processor_and_vision`."""
    return PaliGemmaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=processor.tokenizer.image_token_id,
        vocab_size=len(processor.tokenizer),
        projection_dim=WIDTH,
        hidden_size=WIDTH,
    )


def build(out_dir: Path) -> None:
    """Writes a tiny PaliGemma (SigLIP vision + Gemma text) model and its processor to `out_dir`.

    Args:
        out_dir: Existing directory to write into. Torch must already be seeded.
    """
    processor, vision_config = processor_and_vision()
    tokenizer = processor.tokenizer
    vocab_size, width = len(tokenizer), WIDTH
    # Wide enough for the demo to learn on any machine. The label is the answer's first token: before any explanation
    # is written, that position must compare what the picture shows with what the hypothesis says. A random base has
    # no such comparison; LoRA builds it after a plateau, which a 4x MLP and four heads on two key/value heads keep
    # short for every seed tried (docs/PERFORMANCE.md, "Why the old recipe collapsed on another machine").
    text_config = GemmaConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention: transformers' code path for paligemma-3b's 8 heads on 1
        # Gemma's default is 256, far too wide; 2 x 16 keeps k/v projections a multiple of bitsandbytes' 32-row
        # packing, so the tiny model quantizes to 4 bits on CPU
        head_dim=16,
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=INIT_RANGE,
    )
    model = PaliGemmaForConditionalGeneration(paligemma_config(processor, vision_config, text_config))
    set_generation_ids(model, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
