"""GPU time of `decode=score` on Qwen2.5-VL-7B's architecture: the plain path (one full forward per label) against
one prefill and a cached continuation per label (`vlx.models.fast.mrope`), the model's time alone.

Random bf16 weights of the full-size architecture (scripts/full_size_model.py's numbers), built on the GPU; a batch
made up as the processor makes e-SNLI-VE's: a 500x375 image at conf/model/qwen2_5_vl.yaml's pixel bounds (grid
1x28x38, 266 image tokens) between ~20 system/user tokens and a hypothesis of 40-70 tokens, left-padded; answers of
3, 1 and 3 tokens (Qwen's "entailment", "neutral", "contradiction"). No processor and no data loading: what the
model costs, which is what the two paths differ in.

    python scripts/bench_mrope_scoring.py --batch 32 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from transformers import BatchFeature, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from vlx.models.fast import mrope
from vlx.models.scoring import score_per_answer

PAD, IMAGE, VIDEO, START, END = 151643, 151655, 151656, 151652, 151653
GRID = (1, 28, 38)  # a 500x375 image at min_pixels 200704: 1,064 patches of 14 px, 266 tokens after the 2x2 merge
ANSWERS = [[1025, 604, 479], [59902], [8222, 329, 2479]]


def model() -> torch.nn.Module:
    vision = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "out_hidden_size": 3584,
              "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
              "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2}
    text = {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
            "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 128000,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
            "bos_token_id": PAD, "eos_token_id": 151645, "pad_token_id": PAD}
    config = Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=IMAGE, video_token_id=VIDEO,
                              vision_start_token_id=START, vision_end_token_id=END, tie_word_embeddings=False)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        built = Qwen2_5_VLForConditionalGeneration(config)
    torch.set_default_dtype(torch.float32)
    return built.eval()  # fmt: skip


def batch(size: int) -> BatchFeature:
    generator = torch.Generator().manual_seed(0)
    count = GRID[0] * GRID[1] * GRID[2]
    rows = []
    for i in range(size):
        head = torch.randint(1000, 100000, (20,), generator=generator).tolist()
        tail = torch.randint(1000, 100000, (40 + (i * 7) % 31,), generator=generator).tolist()
        rows.append([*head, START, *[IMAGE] * (count // 4), END, *tail])
    width = max(len(r) for r in rows)
    ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return BatchFeature({"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": (ids == IMAGE).long(),
                         "pixel_values": torch.randn(size * count, 3 * 2 * 14 * 14, generator=generator),
                         "image_grid_thw": torch.tensor([GRID] * size)})  # fmt: skip


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[32])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    net = model()
    for size in args.batch:
        inputs = batch(size)

        def plain(inputs=inputs):
            with torch.inference_mode():
                return score_per_answer(net, copy.copy(inputs).to("cuda"), ANSWERS, PAD, 0)

        def cached(inputs=inputs):
            with torch.inference_mode():
                return mrope.score_on_a_cache(net, copy.copy(inputs), ANSWERS, PAD)

        def vision(inputs=inputs):  # the vision tower alone (windowed attention: one SDPA call per window)
            with torch.inference_mode():
                pixels = inputs["pixel_values"].to("cuda", torch.bfloat16)
                return net.model.visual(pixels, grid_thw=inputs["image_grid_thw"].to("cuda"))

        vision_s, _ = timed(vision, args.repeats)
        print(f"batch {size}: the vision tower alone {vision_s:.3f} s", flush=True)
        torch.cuda.reset_peak_memory_stats()
        plain_s, want = timed(plain, args.repeats)
        plain_gib = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
        cached_s, got = timed(cached, args.repeats)
        cached_gib = torch.cuda.max_memory_allocated() / 2**30
        print(f"batch {size} ({inputs['input_ids'].shape[1]} positions): plain {plain_s:.3f} s ({size / plain_s:.1f} "
              f"items/s, {plain_gib:.1f} GiB), cached {cached_s:.3f} s ({size / cached_s:.1f} items/s, "
              f"{cached_gib:.1f} GiB): {plain_s / cached_s:.2f}x; bf16 log-likelihoods differ by at most "
              f"{(got - want).abs().max().item():.3f} (label order equal in "
              f"{(got.argmax(1) == want.argmax(1)).float().mean().item():.0%})", flush=True)  # fmt: skip
    print(torch.cuda.get_device_name(), torch.__version__, __import__("transformers").__version__)


if __name__ == "__main__":
    main()
