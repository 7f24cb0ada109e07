"""A tiny LLaVA-OneVision (SigLIP vision + Qwen2 text), the architecture of llava-hf/llava-onevision-qwen2-7b-ov-hf.

Its processor holds a video processor, which transformers builds with torchvision: it is written as settings, and
loaded without it where torchvision does not import (`vlx.models.processors`)."""

from __future__ import annotations

from pathlib import Path

from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
    PreTrainedTokenizerFast,
    Qwen2Config,
    SiglipVisionConfig,
)

from vlx.models.processors import with_video_settings
from vlx.models.tiny._text import INIT_RANGE, set_generation_ids, train_tokenizer

# The chat template of the llava-hf OneVision checkpoints, verbatim (transformers' convert_llava_onevision_weights_
# to_hf.py writes it): ChatML, each turn "<|im_start|>{role}\n", then "<image>\n" per image, "<video>\n" per video,
# the texts, and "<|im_end|>\n"; the generation prompt is "<|im_start|>assistant\n". The model doc's decoded outputs
# ("user\n\nWhat is shown in this image?\nassistant\nThere is a red stop sign ...") match it; prompts written by hand
# elsewhere ("<|im_start|>user <image>\n...") do not come from this template. Images and videos always come before
# the text of a turn, whatever their order in the content list.
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{# Render all video then #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}"
    "{% endif %}{{'<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build(out_dir: Path) -> None:
    """Writes a tiny LLaVA-OneVision (SigLIP vision + Qwen2 text) model and its processor to `out_dir`.

    Args:
        out_dir: Existing directory to write into. Torch must already be seeded.
    """
    # Real Qwen2 ids: <|endoftext|>=151643, <|im_start|>=151644, <|im_end|>=151645; llava-hf appended <image> and
    # <video> as special tokens (151646, 151647). Same order here.
    tok = train_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,  # Qwen2 has none: a prompt starts with the chat template's <|im_start|>
        eos_token="<|im_end|>",  # as in Qwen2-7B-Instruct: generation stops at the end of the assistant's turn
        pad_token="<|endoftext|>",
        image_token="<image>",  # give `tokenizer.image_token_id` and `video_token_id`, which the processor reads
        video_token="<video>",
        add_bos_token=False,
        add_eos_token=False,
        padding_side="left",
    )
    image_size, patch_size = 56, 14  # 4x4 = 16 tokens per tile: small shapes stay visible, sequences stay short
    num_image_tokens = (image_size // patch_size) ** 2
    # anyres tiles are multiples of the 56px base resolution, like [[384, 384], ..., [2304, 2304]] (up to 6x6 tiles)
    # for the real 384px one; at most 2x2 tiles keeps an image under 100 tokens: 16 for the downscaled whole image,
    # up to 8x8 for the tiles and one image_newline per row of them (88 for a square image).
    image_grid_pinpoints = [[56, 56], [56, 112], [112, 56], [112, 112]]
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_grid_pinpoints=image_grid_pinpoints,
    )
    # Frames are resized to one tile each and pooled 2x2 by the model: 4 tokens a frame, plus one newline a video.
    # (written as the settings of a LlavaOnevisionVideoProcessor, which transformers builds with torchvision on loading)
    video_processor = dict(
        video_processor_type="LlavaOnevisionVideoProcessor", size={"height": image_size, "width": image_size}
    )
    processor = with_video_settings(
        LlavaOnevisionProcessor,
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
        num_image_tokens=num_image_tokens,  # 729 (27x27) in the real one
        vision_feature_select_strategy="full",  # SigLIP has no CLS token to drop
        vision_aspect_ratio="anyres_max_9",
    )
    vocab_size = len(tokenizer)
    vision_config = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        vision_use_head=False,  # as in the real one: the features are the last layer's, no pooling head
    )
    text_config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,  # bitsandbytes' 4-bit blocks are 64 wide: narrower layers cannot be quantized on CPU
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,  # head_dim 64 / 4 = 16 (Qwen2's config has no head_dim of its own)
        num_key_value_heads=2,  # grouped-query attention like Qwen2-7B (28 heads, 4 kv heads)
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        use_sliding_window=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,  # Qwen2-7B's are untied (the 0.5B one ties them)
        initializer_range=INIT_RANGE,
    )
    config = LlavaOnevisionConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.image_token_id,
        video_token_index=tokenizer.video_token_id,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=image_grid_pinpoints,
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
    )
    model = LlavaOnevisionForConditionalGeneration(config)
    set_generation_ids(model, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
