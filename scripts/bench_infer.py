"""Inference throughput on a GPU: the seed's way against vlx's settings, on the same inputs, in one process.

Builds the full-size LLaVA-v1.6-Mistral-7B architecture with random weights (scripts/full_size_model.py) and runs
e-SNLI-VE-style prompts on 500x375 images (2,340 image tokens) through vlx's own adapter, forcing the same number of
new tokens in every generate variant, so that the variants do the same work.

    python scripts/bench_infer.py --model-dir /tmp/llava-7b --samples 64

Variants: the seed's way (4-bit, one item at a time, CUDA cache cleared after each), vlx's default (bf16, batch 32,
SDPA), 4-bit nf4 batched, and decode=score (label probabilities, one shared prefill). Prints a markdown table with
samples/s, s/sample, peak GPU memory, image tokens per sample and the fraction of the compute floor.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
PROMPT = ("Answer with 'entailment', 'contradiction' or 'neutral' if the hypothesis '{}' follows the image, "
          "contradicts it, or is neutral to it. Also give a 1-line explanation for your answer.")  # fmt: skip
HYPOTHESES = ["A man is riding a bicycle down a busy city street.", "Two dogs are playing in the snow.",
              "A woman sells vegetables at a market stall.", "Children are swimming in a lake."]  # fmt: skip
# name, model overrides, batch size, decode, clear the CUDA cache after each batch
VARIANTS = [
    ("seed's way: 4-bit, one at a time, cache cleared", ["quant=4bit"], 1, "generate", True),
    ("vlx default: bf16, batch 32, SDPA", [], 32, "generate", False),
    ("vlx nf4: 4-bit nf4, batch 32", ["quant=nf4"], 32, "generate", False),
    ("vlx decode=score: bf16, batch 32, label only", [], 32, "score", False),
]


def build_adapter(model_dir: Path, overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from vlx.__main__ import CONFIG_DIR
    from vlx.stages._common import build_quantization

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["model=llava", f"model.checkpoint={model_dir}", *overrides])
    return instantiate(cfg.model, _partial_=True)(quantization=build_quantization(cfg.quant))


def inputs(adapter, n: int) -> tuple[list[str], list[Image.Image]]:
    from vlx.records import Example

    prompts, images = [], []
    for i in range(n):
        text = HYPOTHESES[i % len(HYPOTHESES)]
        prompts.append(adapter.render_prompt(Example(str(i), Path("x"), text, None), PROMPT.format(text)))
        images.append(Image.new("RGB", (500, 375), (40 + i % 200, 90, 160)))  # [W, H] = Flickr30k's common size
    return prompts, images


def run_variant(model_dir: Path, overrides, batch: int, decode: str, clear: bool, samples: int, tokens: int) -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    adapter = build_adapter(model_dir, overrides)
    prompts, images = inputs(adapter, samples + batch)
    answers = ["Entailment", "Contradiction", "Neutral"]
    generation = {"do_sample": False, "max_new_tokens": tokens, "min_new_tokens": tokens}
    image_tokens, new_tokens = [], set()

    def step(adapter, i: int) -> None:
        p, im = prompts[i : i + batch], images[i : i + batch]
        if decode == "score":
            adapter.score(p, im, answers)
        else:
            result = adapter.generate(p, im, **generation)
            image_tokens.extend(result.image_tokens)
            new_tokens.add(result.new_tokens)
        if clear:
            torch.cuda.empty_cache()

    step(adapter, samples)  # warm-up batch (not timed)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, samples, batch):
        step(adapter, i)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert new_tokens <= {tokens}, f"every generate variant must produce {tokens} new tokens, got {new_tokens}"
    result = {"samples_per_s": samples / seconds, "s_per_sample": seconds / samples,
              "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
              "image_tokens": sum(image_tokens) / len(image_tokens) if image_tokens else None}  # fmt: skip
    del adapter
    gc.collect()
    torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/llava-7b"))
    parser.add_argument("--samples", type=int, default=64, help="timed items per batched variant")
    parser.add_argument("--seed-samples", type=int, default=8, help="timed items for the seed's way (slow)")
    parser.add_argument("--tokens", type=int, default=40, help="new tokens forced per item")
    parser.add_argument("--floor", type=float, default=17.0, help="compute floor in samples/s (issue 6: ~17)")
    parser.add_argument("--only", type=int, nargs="*")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_infer needs a CUDA GPU")
    if not (args.model_dir / "config.json").is_file():
        subprocess.run([sys.executable, str(REPO / "scripts" / "full_size_model.py"), "llava-v1.6-mistral-7b",
                        str(args.model_dir)], check=True)  # fmt: skip
    rows = []
    for i, (name, overrides, batch, decode, clear) in enumerate(VARIANTS):
        if args.only and i not in args.only:
            continue
        n = args.seed_samples if batch == 1 else args.samples
        r = run_variant(args.model_dir, overrides, batch, decode, clear, n, args.tokens)
        rows.append((i, name, r))
        print(f"[{i}] {name}: {r}", flush=True)
    import transformers

    seed = next((r for i, _, r in rows if i == 0), None)
    print(f"\n{torch.cuda.get_device_name()} | torch {torch.__version__} | transformers {transformers.__version__} | "
          f"bitsandbytes {__import__('bitsandbytes').__version__}")  # fmt: skip
    print(f"command: {' '.join(sys.argv)}; {args.tokens} new tokens forced\n")
    print("| variant | samples/s | s/sample | vs seed | peak GiB | image tokens/sample | of floor |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for _, name, r in rows:
        ratio = f"{r['samples_per_s'] / seed['samples_per_s']:.1f}x" if seed else ""
        tokens = f"{r['image_tokens']:.0f}" if r["image_tokens"] else ""
        print(f"| {name} | {r['samples_per_s']:.2f} | {r['s_per_sample']:.3f} | {ratio} | {r['peak_gib']:.1f} | "
              f"{tokens} | {r['samples_per_s'] / args.floor:.0%} |")  # fmt: skip


if __name__ == "__main__":
    main()
