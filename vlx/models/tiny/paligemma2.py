"""A tiny PaliGemma 2 (SigLIP vision + Gemma 2 text), the architecture of google/paligemma2-3b-pt-448 and
google/paligemma2-3b-mix-448."""

from __future__ import annotations

from pathlib import Path

from transformers import (
    Gemma2Config,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PaliGemmaProcessor,
    PreTrainedTokenizerFast,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)

from vlx.models.tiny._text import INIT_RANGE, damp_residual_echo, set_generation_ids, train_tokenizer


def build(out_dir: Path) -> None:
    """Writes a tiny PaliGemma 2 (SigLIP vision + Gemma 2 text) model and its processor to `out_dir`.

    Args:
        out_dir: Existing directory to write into. Torch must already be seeded.
    """
    # The tokenizer and processor are PaliGemma 1's (paligemma.py): PaliGemma 2 kept Gemma's vocabulary and ids,
    # <pad>=0, <eos>=1, <bos>=2, <unk>=3, and its <image> special token.
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
    image_size, patch_size = 56, 14  # 4x4 = 16 image tokens (the real 448px tower has 32x32 = 1024)
    image_seq_length = (image_size // patch_size) ** 2
    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_seq_length=image_seq_length,  # PaliGemmaProcessor refuses an image processor without it
    )
    # Built before the model config: the processor adds the 1024 <locXXXX> and 128 <segXXX> tokens to the
    # tokenizer, and the embedding matrix has to cover them (the real vocabulary already contains them).
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    vocab_size = len(tokenizer)
    width = 64  # bitsandbytes' 4-bit blocks are 64 wide: narrower layers cannot be quantized on CPU
    vision_config = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=width,
        vision_use_head=False,
    )
    # The same widths as the tiny PaliGemma 1 (paligemma.py says why they learn the demo); what Gemma 2 adds over
    # Gemma is kept at the real values, which cost nothing at this size: tanh soft-capping of the attention scores
    # (50) and of the final logits (30), and local (4096-token sliding window) then global attention, alternating,
    # so the two layers take both code paths. Soft-capping rules out SDPA: transformers runs Gemma 2 eagerly.
    text_config = Gemma2Config(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as paligemma2-3b's 8 heads on 4
        # Gemma's default is 256, far too wide; 2 x 16 keeps k/v projections a multiple of bitsandbytes' 32-row
        # packing, so the tiny model quantizes to 4 bits on CPU
        head_dim=16,
        # Gemma 2 scales the scores by query_pre_attn_scalar**-0.5, not head_dim**-0.5. The 2B backbone sets it to its
        # head_dim (256), and so does this one: the default 256 would shrink these 16-wide scores fourfold
        query_pre_attn_scalar=16,
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        sliding_window=4096,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=INIT_RANGE,
    )
    config = PaliGemmaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.image_token_id,
        vocab_size=vocab_size,
        projection_dim=width,
        hidden_size=width,
    )
    model = PaliGemmaForConditionalGeneration(config)
    damp_residual_echo(model)
    set_generation_ids(model, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
