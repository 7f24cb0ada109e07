"""A tiny Gemma 3 (SigLIP vision + Gemma 3 text), the architecture of google/gemma-3-4b-it."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    Gemma3TextConfig,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
)

from vlx.models.tiny._text import INIT_RANGE, damp_residual_echo, set_generation_ids, train_tokenizer

# The chat template of google/gemma-3-4b-it (tokenizer_config.json), verbatim: "<bos>", then
# "<start_of_turn>user\n{items}<end_of_turn>\n" per user turn and "<start_of_turn>model\n{text}<end_of_turn>\n" per
# assistant turn, a system message prefixed to the first user turn, and "<start_of_turn>model\n" as the generation
# prompt. An image item renders as "<start_of_image>", where it stands; Gemma3Processor expands that to the image's
# "\n\n<start_of_image><image_soft_token>...<end_of_image>\n\n".
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)


def build(out_dir: Path) -> None:
    """Writes a tiny Gemma 3 (SigLIP vision + Gemma 3 text) model and its processor to `out_dir`.

    Args:
        out_dir: Existing directory to write into. Torch must already be seeded.
    """
    # Real Gemma ids for the first four: <pad>=0, <eos>=1, <bos>=2, <unk>=3. The turn and image markers are special
    # tokens of the real vocabulary too (ids 105, 106, 255999, 256000, 262144 there).
    tok = train_tokenizer(
        [
            "<pad>",
            "<eos>",
            "<bos>",
            "<unk>",
            "<start_of_turn>",
            "<end_of_turn>",
            "<start_of_image>",
            "<end_of_image>",
            "<image_soft_token>",
        ]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        # Gemma3Processor reads these three (and their `..._id`s) off the tokenizer; saved in tokenizer_config.json,
        # they come back on the reloaded tokenizer as on the real one
        boi_token="<start_of_image>",
        eoi_token="<end_of_image>",
        image_token="<image_soft_token>",
        # As in Gemma. The chat template writes "<bos>" too, so a rendered prompt passed to the processor starts with
        # two of them, exactly as it does with the real tokenizer.
        add_bos_token=True,
        add_eos_token=False,
        padding_side="left",
    )
    # 8x8 SigLIP patches, average-pooled 2x2 to 4x4 = 16 image tokens: the real 896px tower has 64x64 patches pooled
    # 4x4 to 16x16 = 256. A pooling kernel above 1 keeps the pooling in the code path; 16 tokens, as the tiny
    # PaliGemma's, keep small shapes visible.
    image_size, patch_size, mm_tokens_per_image = 112, 14, 16
    image_processor = Gemma3ImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        # Pan-and-scan adds crops (and their image tokens) for wide or tall images; gemma-3-4b-it leaves it off by
        # default, and fixed prompt lengths per image keep batches predictable
        do_pan_and_scan=False,
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=mm_tokens_per_image,
    )
    vocab_size = len(tokenizer)
    width = 64  # bitsandbytes' 4-bit blocks are 64 wide: narrower layers cannot be quantized on CPU
    vision_config = SiglipVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        vision_use_head=False,  # as in Gemma 3: the projector pools the patch embeddings itself
    )
    # The widths of the tiny PaliGemma (paligemma.py says why they learn the demo). What Gemma 3 adds is kept at
    # gemma-3-4b-it's values, which cost nothing at this size: a 1024-token sliding window on local layers, RoPE
    # bases of 10k (local) and 1M (global) with 8x linear scaling on the global ones, no soft-capping.
    text_config = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as gemma-3-4b's 8 heads on 4
        # Gemma's default is 256, far too wide; 2 x 16 keeps k/v projections a multiple of bitsandbytes' 32-row
        # packing, so the tiny model quantizes to 4 bits on CPU
        head_dim=16,
        # the scores are scaled by query_pre_attn_scalar**-0.5; the 4B sets it to its head_dim (256), as here
        query_pre_attn_scalar=16,
        sliding_window=1024,
        # The real 5:1 pattern of local and global layers would make both of two layers local; one of each keeps
        # both code paths (and both RoPE bases) in the tiny model
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
        },
        max_position_embeddings=131_072,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=INIT_RANGE,
    )
    config = Gemma3Config(
        text_config=text_config,
        vision_config=vision_config,
        mm_tokens_per_image=mm_tokens_per_image,
        boi_token_index=tokenizer.boi_token_id,
        eoi_token_index=tokenizer.eoi_token_id,
        image_token_index=tokenizer.image_token_id,  # the soft tokens that the image embeddings replace
        initializer_range=INIT_RANGE,
        tie_word_embeddings=True,
    )
    model = Gemma3ForConditionalGeneration(config)
    # transformers initialises the projector's matrix to zeros (the real one is trained): every image would embed
    # as zeros and random outputs could not depend on the picture. Text embeddings are scaled by sqrt(width), so
    # INIT_RANGE gives the RMS-normed image embeddings the same std as the text ones (0.2 x 8).
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, INIT_RANGE)
    damp_residual_echo(model)
    set_generation_ids(model, tokenizer)
    # gemma-3-4b-it's generation_config.json stops at <end_of_turn> as well as at <eos>: a model turn ends there
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")]
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
