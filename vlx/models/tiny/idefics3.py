"""A tiny Idefics3 (SigLIP-style vision + pixel-shuffle connector + Llama 3 text), the architecture of
HuggingFaceM4/Idefics3-8B-Llama3 and of SmolVLM v1 (HuggingFaceTB/SmolVLM-Instruct)."""

from __future__ import annotations

from pathlib import Path

from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    Idefics3VisionConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

from vlx.models.tiny._text import INIT_RANGE, set_generation_ids, train_tokenizer

# The chat template of HuggingFaceM4/Idefics3-8B-Llama3, verbatim: "<|begin_of_text|>" once, then per turn the
# capitalised role, ":" (": " when the turn starts with text rather than an image), its images and texts in order,
# and "<end_of_utterance>\n"; the generation prompt is "Assistant:" with no space, so the model writes the space.
# transformers' own test (tests/models/idefics3/test_processing_idefics3.py, test_apply_chat_template) renders
# "<|begin_of_text|>User: What do these images show?<image><image><end_of_utterance>\nAssistant: The first ...".
IDEFICS3_CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def build(out_dir: Path) -> None:
    """Writes a tiny Idefics3 (SigLIP-style vision + Llama 3 text) model and its processor to `out_dir`.

    Args:
        out_dir: Existing directory to write into. Torch must already be seeded.
    """
    # Llama 3's <|begin_of_text|>, <|end_of_text|> and <|reserved_special_token_0|> (Idefics3's pad, id 128002),
    # then Idefics3's three added tokens in their real order (<image> is 128257). The processor also looks up
    # <global-img> and the 6x6 <row_i_col_j> tile tags: SmolVLM's vocabulary has them as single tokens, Idefics3-8B's
    # spells them out in text pieces. Single tokens keep prompts short, and with them image splitting can be
    # switched back on.
    tiles = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    tok = train_tokenizer(
        [
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|reserved_special_token_0|>",
            "<fake_token_around_image>",
            "<image>",
            "<end_of_utterance>",
            "<global-img>",
            *tiles,
        ]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        # as in SmolVLM-Instruct: every turn ends with it, so generation stops at the end of the assistant's answer
        eos_token="<end_of_utterance>",
        pad_token="<|reserved_special_token_0|>",
        image_token="<image>",  # gives `tokenizer.image_token_id`
        # Like Llama 3, <|begin_of_text|> is prepended to every encoded text; the chat template writes it too, so a
        # rendered conversation passed to the processor starts with two of them, exactly as with the real checkpoint.
        add_bos_token=True,
        add_eos_token=False,
        padding_side="left",
    )
    image_size, patch_size, scale_factor = 56, 14, 2  # 4x4 patches, pixel-shuffled 2x2 into 4 image tokens
    image_seq_len = (image_size // patch_size) ** 2 // scale_factor**2
    image_processor = Idefics3ImageProcessorPil(
        # The real ratio (1456 = 4 x 364): an image is first resized to a longest edge of 4 tiles. Without
        # splitting it is then squashed to one tile of the vision encoder's size, so each image is one block of
        # <fake_token_around_image><global-img> + 4 x <image> + <fake_token_around_image>.
        size={"longest_edge": 4 * image_size},
        max_image_size={"longest_edge": image_size},
        # Splitting (the real default) would add up to 16 tiles of 4 tokens each and a row/column tag per tile.
        do_image_splitting=False,
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    vocab_size = len(tokenizer)
    vision_config = Idefics3VisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        initializer_range=INIT_RANGE,
    )
    text_config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,  # bitsandbytes' 4-bit blocks are 64 wide: narrower layers cannot be quantized on CPU
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention like Llama-3-8B (32 heads, 8 kv heads)
        head_dim=16,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=INIT_RANGE,
    )
    config = Idefics3Config(  # type: ignore[call-arg]  # (transformers' signature leaves out pad_token_id, which the config takes and keeps)
        vision_config=vision_config,
        text_config=text_config,
        scale_factor=scale_factor,
        image_token_id=tokenizer.image_token_id,
        pad_token_id=tokenizer.pad_token_id,  # the config's own default is Llama 3's 128002
        tie_word_embeddings=False,
    )
    model = Idefics3ForConditionalGeneration(config)
    set_generation_ids(model, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
