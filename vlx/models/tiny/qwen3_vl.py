"""A tiny Qwen3-VL (ViT with DeepStack + Qwen3 text with interleaved M-RoPE), the architecture of
Qwen/Qwen3-VL-2B-Instruct."""

from __future__ import annotations

from pathlib import Path

from transformers import (
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLTextConfig,
    Qwen3VLVisionConfig,
)

from vlx.models.processors import with_video_settings
from vlx.models.tiny._text import INIT_RANGE, set_generation_ids, token_id
from vlx.models.tiny.qwen2_5_vl import qwen_tokenizer

# The chat template of Qwen/Qwen3-VL-2B-Instruct (chat_template.json) without its tool-calling branches: unlike
# Qwen2.5-VL no default system prompt, "<|im_start|>{role}\n...<|im_end|>\n" per turn, each image as
# "<|vision_start|><|image_pad|><|vision_end|>" where it stands among the texts, "<|im_start|>assistant\n" as the
# generation prompt.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].content is string %}{{- messages[0].content }}"
    "{%- else %}{%- for content in messages[0].content %}{%- if 'text' in content %}{{- content.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- set image_count = namespace(value=0) %}{%- set video_count = namespace(value=0) %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' %}{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}"
    "{%- else %}{%- for content in message.content %}"
    "{%- if content.type == 'image' or 'image' in content or 'image_url' in content %}"
    "{%- set image_count.value = image_count.value + 1 %}"
    "{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif content.type == 'video' or 'video' in content %}{%- set video_count.value = video_count.value + 1 %}"
    "{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in content %}{{- content.text }}{%- endif %}{%- endfor %}{%- endif %}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}"
    "{%- else %}{%- for content_item in message.content %}{%- if 'text' in content_item %}{{- content_item.text }}"
    "{%- endif %}{%- endfor %}{%- endif %}{{- '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build(out_dir: Path) -> None:
    """Writes a tiny Qwen3-VL (ViT with DeepStack + Qwen3 text with interleaved M-RoPE) model and its processor to
    `out_dir`.

    Args:
        out_dir: Existing directory to write into. Torch must already be seeded.
    """
    tokenizer = qwen_tokenizer()  # Qwen2.5-VL's: the same special tokens
    patch_size, merge_size, temporal_patch_size = 16, 2, 2  # the real ones: a token is 32x32 px of one frame pair
    factor = patch_size * merge_size
    # The real limits are 256x256 to 4096x4096 px (64 to 16384 tokens); here 64x64 to 128x128 px, 4 to 16 tokens
    # (a 56x56 image 4), so that few-shot prompts with several images stay short.
    size = {"shortest_edge": (2 * factor) ** 2, "longest_edge": (4 * factor) ** 2}
    image_processor = Qwen2VLImageProcessorPil(  # Qwen3-VL has no image processor of its own
        size=size,
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=temporal_patch_size,
        image_mean=[0.5, 0.5, 0.5],  # SigLIP-2's normalisation, as in the real preprocessor config
        image_std=[0.5, 0.5, 0.5],
    )
    # Written as the settings of a Qwen3VLVideoProcessor, which transformers builds (with torchvision) on loading
    video_processor = dict(
        video_processor_type="Qwen3VLVideoProcessor",
        size=size,
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=temporal_patch_size,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        # Caps each frame's pixels the way the reference implementation (qwen-vl-utils) does; left unset,
        # transformers warns on every video that its default is about to change to this
        cap_pixels_per_frame=True,
    )
    processor = with_video_settings(
        Qwen3VLProcessor,
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )
    vocab_size = len(tokenizer)
    width = 64  # bitsandbytes' 4-bit blocks are 64 wide: narrower layers cannot be quantized on CPU
    vision_config = Qwen3VLVisionConfig(
        # 64 wide like the text: the tower is quantized too, and bitsandbytes' CPU kernels refuse a 4-bit layer whose
        # input is narrower than a 64-wide block (32 failed in generate). Most of the tower's weights are the patch
        # embedding (3 x 2 x 16 x 16 inputs) and the two mergers' MLPs over 2x2 patches, fixed by that width.
        hidden_size=64,
        intermediate_size=64,  # as narrow as the 64-wide blocks allow
        depth=2,
        num_heads=4,  # head_dim 16: the 2-D rotary embedding splits it between rows and columns
        patch_size=patch_size,
        spatial_merge_size=merge_size,
        temporal_patch_size=temporal_patch_size,
        # The learned position grid, resampled to each image's patch grid: 8x8 covers the largest image here
        # (128 px) one to one, as the real 48x48 grid does 768 px
        num_position_embeddings=64,
        # DeepStack: the first block's merged features are added to the first text layer's hidden states at the
        # image positions, as the real layers 5, 11 and 17 of 24 feed the first three text layers
        deepstack_visual_indexes=[0],
        out_hidden_size=width,
        initializer_range=INIT_RANGE,
    )
    text_config = Qwen3VLTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention like the 2B (16 heads, 8 kv heads)
        head_dim=16,  # the real 128 is wider than the whole model
        max_position_embeddings=262144,
        # Interleaved M-RoPE: the head's 8 rotary frequencies go t, h, w, t, h, w, t, t, as the real 64 go 20 such
        # triplets and then 4 more temporal ones (mrope_section 24, 20, 20)
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
        },
        attention_bias=False,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=INIT_RANGE,
    )
    config = Qwen3VLConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.image_token_id,
        video_token_id=tokenizer.video_token_id,
        vision_start_token_id=token_id(tokenizer, "<|vision_start|>"),
        vision_end_token_id=token_id(tokenizer, "<|vision_end|>"),
        tie_word_embeddings=True,  # as in the 2B and 4B (the 8B unties them)
    )
    model = Qwen3VLForConditionalGeneration(config)
    set_generation_ids(model, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
