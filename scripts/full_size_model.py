"""Builds a random-weight model of a real full-size architecture, saved like a hub checkpoint, for GPU runs.

No model hub is reachable where vlx is developed, so GPU figures and end-to-end checks at real size use the real
architectures with random weights. The processor (tokenizer, chat template) is the tiny model's with the real
image geometry; the vocabulary is the real size, so memory and compute match the real models.

    python scripts/full_size_model.py paligemma-3b-448 /tmp/paligemma-3b      # ~5.9 GB in bf16
    python scripts/full_size_model.py llava-v1.6-mistral-7b /tmp/llava-7b     # ~15 GB in bf16
    python scripts/full_size_model.py qwen2.5-vl-7b /tmp/qwen2.5-vl-7b        # ~17 GB in bf16
    python scripts/full_size_model.py gemma-3-4b /tmp/gemma-3-4b              # ~8.6 GB in bf16
    vlx stage=finetune model=paligemma model.checkpoint=/tmp/paligemma-3b ...
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def paligemma_3b_448(tiny: Path):
    from transformers import (
        AutoProcessor,
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        SiglipVisionConfig,
    )

    processor = AutoProcessor.from_pretrained(tiny)
    processor.image_processor.size = {"height": 448, "width": 448}
    processor.image_processor.image_seq_length = 1024
    processor.image_seq_length = 1024  # (448 / 14)^2 image tokens
    tok = processor.tokenizer
    vision = SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        image_size=448,
        patch_size=14,
        projection_dim=2048,
        vision_use_head=False,
    )
    text = GemmaConfig(
        vocab_size=257216,
        hidden_size=2048,
        intermediate_size=16384,
        num_hidden_layers=18,
        num_attention_heads=8,
        num_key_value_heads=1,
        head_dim=256,
        max_position_embeddings=8192,
        hidden_activation="gelu_pytorch_tanh",
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    config = PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.image_token_id,
        vocab_size=257216,
        projection_dim=2048,
        hidden_size=2048,
    )
    return PaliGemmaForConditionalGeneration, config, processor


def llava_v16_mistral_7b(tiny: Path):
    from transformers import (
        AutoProcessor,
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        MistralConfig,
    )

    processor = AutoProcessor.from_pretrained(tiny)
    pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    processor.image_processor.size = {"shortest_edge": 336}
    processor.image_processor.crop_size = {"height": 336, "width": 336}
    processor.image_processor.image_grid_pinpoints = pinpoints
    processor.patch_size = 14
    tok = processor.tokenizer
    vision = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
    )
    text = MistralConfig(
        vocab_size=32064,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        sliding_window=None,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.image_token_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    return LlavaNextForConditionalGeneration, config, processor


def qwen2_5_vl_7b(tiny: Path):
    """Qwen2.5-VL-7B-Instruct's architecture (M-RoPE, windowed vision attention); the processor's pixel bounds are
    the ones conf/model/qwen2_5_vl.yaml sets (256-1280 tokens per image)."""
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(tiny, min_pixels=200704, max_pixels=1003520)
    tok = processor.tokenizer
    vision = {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
    }
    text = {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_position_embeddings": 128000,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        "bos_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    config = Qwen2_5_VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.image_token_id,
        video_token_id=tok.video_token_id,
        tie_word_embeddings=False,
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
    )
    return Qwen2_5_VLForConditionalGeneration, config, processor


def gemma_3_4b(tiny: Path):
    """gemma-3-4b-it's architecture (google/gemma-3-4b-it's config.json: SigLIP-so400m at 896 px pooled to 256 image
    tokens, a 34-layer Gemma 3 of width 2560 with five sliding-window layers to each global one)."""
    from transformers import (
        AutoProcessor,
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    small = AutoProcessor.from_pretrained(tiny)
    tok = small.tokenizer
    image_processor = small.image_processor
    image_processor.size = {"height": 896, "width": 896}
    processor = Gemma3Processor(
        image_processor=image_processor, tokenizer=tok, chat_template=small.chat_template, image_seq_length=256
    )
    vision = SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        image_size=896,
        patch_size=14,
        vision_use_head=False,
    )
    layers = 34
    text = Gemma3TextConfig(
        vocab_size=262208,
        hidden_size=2560,
        intermediate_size=10240,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=1024,
        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
        },
        max_position_embeddings=131_072,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=256,
        boi_token_index=tok.boi_token_id,
        eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id,
        tie_word_embeddings=True,
    )
    return Gemma3ForConditionalGeneration, config, processor


ARCHITECTURES = {
    "paligemma-3b-448": ("paligemma", paligemma_3b_448),
    "gemma-3-4b": ("gemma3", gemma_3_4b),
    "llava-v1.6-mistral-7b": ("llava_next", llava_v16_mistral_7b),
    "qwen2.5-vl-7b": ("qwen2_5_vl", qwen2_5_vl_7b),
}


def main() -> None:
    from vlx.models.tiny import ensure_tiny_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch", choices=sorted(ARCHITECTURES))
    parser.add_argument("out", type=Path)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args()
    tiny_arch, recipe = ARCHITECTURES[args.arch]
    tiny = ensure_tiny_model(tiny_arch, Path(tempfile.gettempdir()) / f"vlx-tiny-{tiny_arch}")
    model_class, config, processor = recipe(tiny)
    start = time.perf_counter()
    torch.manual_seed(0)
    torch.set_default_dtype(getattr(torch, args.dtype))
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = model_class(config)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    params = sum(p.numel() for p in model.parameters())
    seconds = time.perf_counter() - start
    print(f"{args.arch}: {params / 1e9:.2f} B parameters ({args.dtype}) -> {args.out} in {seconds:.0f} s")


if __name__ == "__main__":
    main()
