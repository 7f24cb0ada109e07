"""A tiny InternVL (InternViT + pixel-shuffle MLP projector + Qwen2 text), the architecture of the
transformers-native OpenGVLab/InternVL3-2B-hf and OpenGVLab/InternVL3-8B-hf."""

from __future__ import annotations

from pathlib import Path

from transformers import (
    GotOcr2ImageProcessorPil,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    InternVLVisionConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from vlx.models.processors import with_video_settings
from vlx.models.tiny._text import INIT_RANGE, set_generation_ids, train_tokenizer

# The chat template of the -hf checkpoints (written by transformers' convert_internvl_weights_to_hf.py), verbatim:
# no default system prompt, "<|im_start|>{role}\n...<|im_end|>\n" per turn, "<IMG_CONTEXT>\n" per image where it
# stands among the texts (InternVLProcessor expands it to "<img>" + image tokens + "</img>"), "<|im_start|>assistant\n"
# as the generation prompt.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n'}}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{'<|im_end|>\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\\n' }}{% endif %}"
)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # InternViT's, as in the real processor


def build(out_dir: Path) -> None:
    """Writes a tiny InternVL (InternViT + pixel-shuffle MLP projector + Qwen2 text) model and its processor to
    `out_dir`.

    Args:
        out_dir: Existing directory to write into. Torch must already be seeded.
    """
    # The -hf tokenizer is Qwen2.5-VL's with InternVL's image tokens appended; these are the ones its prompts use,
    # in the real order (<|endoftext|> 151643, <|im_start|>, <|im_end|>, ..., <img> 151665, </img>, <IMG_CONTEXT>).
    # <video> is the template's video placeholder, which the processor replaces by frames before tokenizing; a
    # special token here, so that it never splits into bytes if one stays in a prompt.
    tok = train_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",  # the instruct model's eos: generation stops at the end of the assistant turn
        pad_token="<|endoftext|>",
        # InternVLProcessor reads these four (and their ids) from the tokenizer; it has no defaults for them
        start_image_token="<img>",
        end_image_token="</img>",
        context_image_token="<IMG_CONTEXT>",
        video_token="<video>",
        add_bos_token=False,  # Qwen has no bos
        add_eos_token=False,
        padding_side="left",
    )
    # 56 px tiles of 4x4 patches, pixel-shuffled to 2x2 = 4 image tokens: the real 448 px tile of 32x32 patches and
    # 256 tokens, scaled down 8 times per side
    image_size, patch_size, downsample_ratio = 56, 14, 0.5
    image_seq_length = int((image_size // patch_size) ** 2 * downsample_ratio**2)
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        # One tile per image, no thumbnail: the real processor tiles an image into up to 12 tiles plus a thumbnail.
        # InternVLProcessor turns crop_to_patches on at every call whatever is set here, so max_patches=1 is what
        # keeps it to one tile.
        crop_to_patches=False,
        min_patches=1,
        max_patches=1,
    )
    # Written as the settings of an InternVLVideoProcessor, which transformers builds (with torchvision) on loading
    video_processor = dict(
        video_processor_type="InternVLVideoProcessor",
        size={"height": image_size, "width": image_size},
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    processor = with_video_settings(
        InternVLProcessor,
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_length=image_seq_length,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )
    vocab_size = len(tokenizer)
    width = 64  # bitsandbytes' 4-bit blocks are 64 wide: narrower layers cannot be quantized on CPU
    vision_config = InternVLVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        attention_bias=True,  # InternViT-300M's qkv_bias, without its qk normalisation
        use_qk_norm=False,
        layer_scale_init_value=0.1,
        initializer_range=INIT_RANGE,
    )
    text_config = Qwen2Config(  # type: ignore[call-arg]  # (transformers' signature leaves out head_dim, which the config takes and keeps)
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention like the 2B (12 heads, 2 kv heads) and the 8B (28 on 4)
        head_dim=16,
        max_position_embeddings=32768,
        use_sliding_window=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=tokenizer.pad_token_id,  # the real config's bos is <|endoftext|>, too; nothing prepends it
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=INIT_RANGE,
    )
    config = InternVLConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=image_seq_length,
        downsample_ratio=downsample_ratio,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",  # drops the CLS token before the pixel shuffle
        tie_word_embeddings=False,  # the language model keeps its own output head, as in InternVL3-8B-hf
    )
    model = InternVLForConditionalGeneration(config)
    set_generation_ids(model, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
