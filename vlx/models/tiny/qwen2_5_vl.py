"""A tiny Qwen2.5-VL (windowed ViT + Qwen2 text with M-RoPE), the architecture of Qwen/Qwen2.5-VL-7B-Instruct."""

from __future__ import annotations

from pathlib import Path

from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2_5_VLTextConfig,
    Qwen2_5_VLVisionConfig,
    Qwen2VLImageProcessorPil,
)

from vlx.models.processors import with_video_settings
from vlx.models.tiny._text import INIT_RANGE, set_generation_ids, token_id, train_tokenizer

# The chat template of Qwen/Qwen2.5-VL-7B-Instruct (chat_template.json), verbatim: a default system prompt when the
# conversation has none, "<|im_start|>{role}\n...<|im_end|>\n" per turn, each image as
# "<|vision_start|><|image_pad|><|vision_end|>" where it stands among the texts, "<|im_start|>assistant\n" as the
# generation prompt.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_tokenizer() -> PreTrainedTokenizerFast:
    """The tokenizer of the tiny Qwen-VL models (Qwen2.5-VL and Qwen3-VL share Qwen's special tokens)."""
    # The real Qwen2 special tokens in their real order (151643 <|endoftext|> ... 151656 <|video_pad|>), less the
    # object-ref/box/quad ones no prompt here uses. Qwen has no bos; <|endoftext|> pads, <|im_end|> ends a turn.
    tok = train_tokenizer(
        [
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|image_pad|>",
            "<|video_pad|>",
        ]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",  # the instruct model's eos: generation stops at the end of the assistant turn
        pad_token="<|endoftext|>",
        # the Qwen-VL processors read `tokenizer.image_token`/`video_token` (and their ids) when the tokenizer has them
        image_token="<|image_pad|>",
        video_token="<|video_pad|>",
        vision_start_token="<|vision_start|>",
        vision_end_token="<|vision_end|>",
        add_bos_token=False,
        add_eos_token=False,
        padding_side="left",
    )
    return tokenizer


def build(out_dir: Path) -> None:
    """Writes a tiny Qwen2.5-VL (windowed ViT + Qwen2 text with M-RoPE) model and its processor to `out_dir`.

    Args:
        out_dir: Existing directory to write into. Torch must already be seeded.
    """
    tokenizer = qwen_tokenizer()
    patch_size, merge_size, temporal_patch_size = 14, 2, 2  # the real ones: a token is 28x28 px of one frame pair
    factor = patch_size * merge_size
    # The real limits are 56x56 to 3584x3584 px (4 to 16384 tokens); capped at 112x112 px, an image is 4 to 16
    # tokens here (a 56x56 one 4), so that few-shot prompts with several images stay short.
    min_pixels, max_pixels = (2 * factor) ** 2, (4 * factor) ** 2
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=temporal_patch_size,
    )
    # Written as the settings of a Qwen2VLVideoProcessor, which transformers builds (with torchvision) on loading;
    # vlx reads images only and loads the processor without it where torchvision does not import
    video_processor = dict(
        video_processor_type="Qwen2VLVideoProcessor",
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=temporal_patch_size,
        # Caps each frame's pixels the way the reference implementation (qwen-vl-utils) does; left unset,
        # transformers warns on every video that its default is about to change to this
        cap_pixels_per_frame=True,
    )
    processor = with_video_settings(
        Qwen2_5_VLProcessor,
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )
    vocab_size = len(tokenizer)
    width = 64  # bitsandbytes' 4-bit blocks are 64 wide: narrower layers cannot be quantized on CPU
    vision_config = Qwen2_5_VLVisionConfig(
        # 64 wide like the text: the tower is quantized too, and bitsandbytes' CPU kernels refuse a 4-bit layer whose
        # input is narrower than a 64-wide block (32 failed in generate). Most of the tower's weights are the patch
        # embedding (3 x 2 x 14 x 14 inputs) and the merger's MLP over 2x2 patches, fixed by that width.
        hidden_size=64,
        intermediate_size=64,  # a gated SiLU MLP, as in the real tower; as narrow as the 64-wide blocks allow
        depth=2,
        num_heads=4,  # head_dim 16: the 2-D rotary embedding splits it between rows and columns
        patch_size=patch_size,
        spatial_merge_size=merge_size,
        temporal_patch_size=temporal_patch_size,
        # Windows of 56x56 px (2x2 merged tokens), not the real 112: most images here are 56 to 112 px, so a window
        # of the real size would hold the whole image and the windowed-attention path would never split anything.
        window_size=56,
        # Full attention in the last block, windowed attention before it: the real tower's pattern (7, 15, 23, 31).
        fullatt_block_indexes=[1],
        tokens_per_second=2,  # as in the real config: the temporal M-RoPE step of a video frame pair
        out_hidden_size=width,
        initializer_range=INIT_RANGE,
    )
    text_config = Qwen2_5_VLTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention like the 7B (28 heads, 4 kv heads); head_dim 64 / 4 = 16
        max_position_embeddings=128000,
        # M-RoPE: the head's 8 rotary frequencies split between temporal, height and width positions in the real
        # ratio (16, 24, 24 of 64)
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=tokenizer.pad_token_id,  # the real config's bos is <|endoftext|>, too; nothing prepends it
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=INIT_RANGE,
    )
    config = Qwen2_5_VLConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.image_token_id,
        video_token_id=tokenizer.video_token_id,
        vision_start_token_id=token_id(tokenizer, "<|vision_start|>"),
        vision_end_token_id=token_id(tokenizer, "<|vision_end|>"),
        tie_word_embeddings=False,  # as in the 7B (the 3B ties them)
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    set_generation_ids(model, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
