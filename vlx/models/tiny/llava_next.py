"""A tiny LLaVA-NeXT (CLIP vision + Mistral text), the architecture of llava-hf/llava-v1.6-mistral-7b-hf."""

from __future__ import annotations

from pathlib import Path

from transformers import (
    CLIPVisionConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    MistralConfig,
    PreTrainedTokenizerFast,
)

from vlx.models.tiny._text import INIT_RANGE, set_generation_ids, train_tokenizer

# The chat template of llava-hf/llava-v1.6-mistral-7b-hf (chat_template.json), verbatim: "[INST] <image>\n{text}
# [/INST]" per user turn, " {answer}</s> " per assistant turn. Like the real one it needs no generation prompt:
# the prompt already ends with "[/INST]", so `add_generation_prompt` does not change the string.
LLAVA_NEXT_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\\n' + message['content'][0]['text'] + '\\n<</SYS>>\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{{' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] + '</s> '}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)


def build(out_dir: Path) -> None:
    """Writes a tiny LLaVA-NeXT (CLIP vision + Mistral text) model and its processor to `out_dir`.

    Args:
        out_dir: Existing directory to write into. Torch must already be seeded.
    """
    # Real Mistral ids: <unk>=0, <s>=1, </s>=2; llava-hf appended <image> and <pad>. [INST]/[/INST] are plain text
    # there; here they are single non-special tokens: short prompts, and they survive skip_special_tokens as there.
    tok = train_tokenizer(["<unk>", "<s>", "</s>", "<pad>", "<image>"], plain_tokens=("[INST]", "[/INST]"))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        image_token="<image>",  # gives `tokenizer.image_token_id`, which the processors read
        add_bos_token=True,  # like Mistral: "<s>" is prepended to every encoded prompt
        add_eos_token=False,
        padding_side="left",
    )
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 28},
        crop_size={"height": 28, "width": 28},
        # anyres tiles are multiples of the 28px base resolution, like [[336, 672], ...] for the real 336px one
        image_grid_pinpoints=[[28, 56], [56, 28], [56, 56]],
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        chat_template=LLAVA_NEXT_CHAT_TEMPLATE,
        num_additional_image_tokens=1,  # the CLIP CLS token, dropped again by the "default" strategy
    )
    vocab_size = len(tokenizer)
    vision_config = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
        projection_dim=64,
        initializer_range=INIT_RANGE,
    )
    text_config = MistralConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention like Mistral-7B (32 heads, 8 kv heads)
        head_dim=16,
        max_position_embeddings=32768,
        sliding_window=None,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=INIT_RANGE,
    )
    config = LlavaNextConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,  # penultimate CLIP layer, as in the real checkpoint
        image_grid_pinpoints=image_processor.image_grid_pinpoints,
        image_seq_length=(28 // 14) ** 2,
        tie_word_embeddings=False,
    )
    model = LlavaNextForConditionalGeneration(config)
    set_generation_ids(model, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
