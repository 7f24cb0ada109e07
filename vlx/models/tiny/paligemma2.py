"""A tiny PaliGemma 2 (SigLIP vision + Gemma 2 text), the architecture of google/paligemma2-3b-pt-448 and
google/paligemma2-3b-mix-448."""

from __future__ import annotations

from pathlib import Path

from transformers import Gemma2Config, PaliGemmaForConditionalGeneration

from vlx.models.tiny._text import INIT_RANGE, damp_residual_echo, set_generation_ids
from vlx.models.tiny.paligemma import WIDTH, paligemma_config, processor_and_vision


def build(out_dir: Path) -> None:
    """Writes a tiny PaliGemma 2 (SigLIP vision + Gemma 2 text) model and its processor to `out_dir`.

    Args:
        out_dir: Existing directory to write into. Torch must already be seeded.
    """
    # The tokenizer, processor and vision tower are PaliGemma 1's: PaliGemma 2 kept Gemma's vocabulary and ids and
    # the <image> token, and its 448px tower is the same SigLIP
    processor, vision_config = processor_and_vision()
    tokenizer = processor.tokenizer
    vocab_size, width = len(tokenizer), WIDTH
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
    model = PaliGemmaForConditionalGeneration(paligemma_config(processor, vision_config, text_config))
    damp_residual_echo(model)
    set_generation_ids(model, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
