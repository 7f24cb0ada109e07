"""Inference throughput on a GPU: the seed's way against vlx's settings, on the same inputs, in one process.

Builds the full-size LLaVA-v1.6-Mistral-7B architecture (or, with --model paligemma, PaliGemma-3b-448; with --model
qwen2_5_vl, Qwen2.5-VL-7B, an architecture off the fast-path allow-list) with random weights
(scripts/full_size_model.py). Runs the first e-SNLI-VE test pairs through vlx's own infer loop
(`predict_batches`: images read and processed ahead by worker processes or a thread): their hypotheses, vlx's
e-SNLI-VE prompt, and 500x375 placeholder images written as JPEG files (2,340 image tokens each for LLaVA-NeXT). It
forces the same number of new tokens in every generate variant, so that the variants do
the same work. Reading and processing the images is inside the timed loop for every variant.

    python scripts/bench_infer.py --model-dir /tmp/llava-7b --csv-dir ../shared/data/esnlive --samples 64

Variants (VARIANTS): the seed's way (4-bit, one item at a time, processor inline, CUDA cache cleared after each);
vlx's default (bf16, batch 32, compiled: the cache-free prefill with compiled decoder blocks, norms, MLPs and vision
blocks, static cache and compiled decode step, sdpa_grouped); the default with one of its parts changed (decode
attention through matmuls, no compiled modules, worker processes, not compiled at all); 4-bit nf4 batched (compiled,
without its compiled norms, not compiled); decode=score (label probabilities: one cache-free forward, or a
left-padded prefill and one continuation per label); the default with its decode attention on SDPA's
memory-efficient kernel; and the default and nf4 with transformers' own prefill (numbered last, so that earlier
commands keep their numbers). Each variant runs one untimed warm-up batch first (where the compiling happens); one
that fails is reported and skipped. Prints a markdown table with samples/s, s/sample, peak GPU memory, image tokens
per sample and the fraction of the compute floor.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import gc
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import torch
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel

from vlx.models import fast, hf
from vlx.models.fast import attention, prefill
from vlx.models.fast import prefill_scoring as fast_scoring

# the decode step's grouped attention as two matmuls, measured against vlx's SDPA version
attention.register("sdpa_grouped_matmul", functools.partial(attention.grouped_sdpa_attention, decode_kernel="matmul"))


def _efficient_decode_attention(module, query, *args, **kwargs):
    """vlx's grouped attention with the decode steps on SDPA's memory-efficient kernel instead of cuDNN's."""
    if query.shape[2] != 1:
        return attention.grouped_sdpa_attention(module, query, *args, **kwargs)
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        return attention.grouped_sdpa_attention(module, query, *args, **kwargs)


attention.register("sdpa_grouped_efficient", _efficient_decode_attention)

REPO = Path(__file__).resolve().parent.parent
# name, overrides, batch size, decode, the seed's own loop, what the variant switches off or on (see `switched`)
VARIANTS = [
    ("seed's way: 4-bit, one at a time, cache cleared", ["quant=4bit", "model.compile=false",
                                                         "model.attn_implementation=sdpa"], 1, "generate", True, None),
    ("vlx default: bf16, batch 32, compiled", [], 32, "generate", False, None),
    ("default, grouped decode attention through matmuls instead of SDPA",
     ["model.attn_implementation=sdpa_grouped_matmul"], 32, "generate", False, None),
    ("default without the compiled norms/MLPs/vision blocks", [], 32, "generate", False, "no_module_compile"),
    ("vlx default, batches prepared by 4 worker processes", ["loader_workers=4"], 32, "generate", False, None),
    ("bf16, batch 32, not compiled, sdpa_grouped", ["model.compile=false"], 32, "generate", False, None),
    ("bf16, batch 32, not compiled, sdpa", ["model.compile=false", "model.attn_implementation=sdpa"], 32,
     "generate", False, None),
    ("vlx nf4: 4-bit nf4, batch 32, compiled", ["quant=nf4"], 32, "generate", False, None),
    ("nf4 without the compiled norms", ["quant=nf4"], 32, "generate", False, "no_module_compile"),
    ("nf4 not compiled", ["quant=nf4", "model.compile=false"], 32, "generate", False, None),
    ("vlx decode=score: bf16, batch 32, label only", [], 32, "score", False, None),
    ("decode=score, left-padded prefill under a mask", [], 32, "score", False, "left_padded_score"),
    ("default, grouped decode attention on SDPA's memory-efficient kernel",
     ["model.attn_implementation=sdpa_grouped_efficient"], 32, "generate", False, None),
    ("default with transformers' own prefill (left-padded under a mask, blocks not compiled)", [], 32, "generate",
     False, "hf_prefill"),
    ("nf4 with transformers' own prefill", ["quant=nf4"], 32, "generate", False, "hf_prefill"),
    ("plain batched transformers (as for a model off the allow-list): bf16, batch 32", ["model.compile=false",
     "model.attn_implementation=sdpa"], 32, "generate", False, "off_the_allow_list"),
    ("decode=score, plain (one forward per label)", ["model.compile=false", "model.attn_implementation=sdpa"], 32,
     "score", False, "off_the_allow_list"),
    # candidates for the families off the allow-list: transformers' own static cache and compiled decode step
    ("plain batched transformers, batch 64", ["model.compile=false", "model.attn_implementation=sdpa"], 64,
     "generate", False, "off_the_allow_list"),
    ("plain + transformers' static cache and compiled decode step, batch 32", ["model.compile=false",
     "model.attn_implementation=sdpa"], 32, "generate", False, "hf_static"),
    ("plain + transformers' static cache and compiled decode step, batch 64", ["model.compile=false",
     "model.attn_implementation=sdpa"], 64, "generate", False, "hf_static"),
    ("the same, batch 64, with compiled norms and MLPs", ["model.compile=false", "model.attn_implementation=sdpa"],
     64, "generate", False, "hf_static_modules"),
    # an M-RoPE model (Qwen-VL) on vlx.models.fast.MROPE_SCORING: one prefill, a cached continuation per label
    # (and, since 2026-12-07, a Qwen-VL vision tower attends through vlx.models.fast.vision_windows under auto)
    ("decode=score, M-RoPE: one prefill and a cached continuation per label (Qwen-VL's default)",
     ["model.compile=false", "model.attn_implementation=auto"], 32, "score", False, None),
    ("the family's default generation (Qwen-VL: windowed vision attention), batch 32", ["model.compile=false",
     "model.attn_implementation=auto"], 32, "generate", False, None),
    ("the family's default + transformers' static cache and compiled decode step, batch 32", ["model.compile=false",
     "model.attn_implementation=auto"], 32, "generate", False, "hf_static"),
    # (since 2026-12-08 the static cache is one length for every prompt width: `generation.static_cache_length`)
    ("the family's default + static cache and compiled decode step, batch 64", ["model.compile=false",
     "model.attn_implementation=auto"], 64, "generate", False, "hf_static"),
]  # fmt: skip


@contextlib.contextmanager
def switched(what: str | None):
    """The variant's departure from vlx's code path: earlier defaults, measured against the current ones."""
    with contextlib.ExitStack() as stack:
        if what == "no_module_compile":
            stack.enter_context(mock.patch.object(hf, "compile_cache_free", lambda model: {}))
        elif what == "left_padded_score":
            stack.enter_context(mock.patch.object(fast_scoring, "prefill_aware", lambda model: False))
        elif what == "hf_prefill":  # generate's prompts run by transformers (vlx's cache-free prefill off)
            stack.enter_context(mock.patch.object(prefill, "prefill_aware", lambda model: False))
        elif what in ("off_the_allow_list", "hf_static", "hf_static_modules"):  # what every architecture off
            # vlx.models.fast.ALLOWED runs (the hf_static variants then switch on transformers' static cache)
            stack.enter_context(mock.patch.dict(fast.ALLOWED, clear=True))
            # and off vlx.models.fast.MROPE_SCORING: one full forward per label
            stack.enter_context(mock.patch.dict(fast.MROPE_SCORING, clear=True))
        yield


# --model: vlx's model config and scripts/full_size_model.py's architecture
MODELS = {
    "llava": "llava-v1.6-mistral-7b",
    "paligemma": "paligemma-3b-448",
    "qwen2_5_vl": "qwen2.5-vl-7b",
    "gemma3": "gemma-3-4b",
}


def compose(model: str, model_dir: Path, csv_dir: Path, image_dir: Path, limit: int, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from vlx.configs import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose(
            "config",
            overrides=[
                f"model={model}",
                f"model.checkpoint={model_dir}",
                "task=esnli",
                f"task.csv_dir={csv_dir}",
                f"task.image_dir={image_dir}",
                "task.split=test",
                f"task.limit={limit}",
                *overrides,
            ],
        )


def write_images(csv_dir: Path, image_dir: Path, limit: int) -> None:
    """A 500x375 JPEG (Flickr30k's common size) for each image the first `limit` test pairs name."""
    with (csv_dir / "esnlive_test.csv").open(newline="") as f:
        names = {row["Flickr30kID"] for row, _ in zip(csv.DictReader(f), range(limit), strict=False)}
    image_dir.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(sorted(names)):
        if not (image_dir / name).is_file():
            Image.new("RGB", (500, 375), (40 + i % 200, 90, 160)).save(image_dir / name, quality=90)


def run_variant(
    cfg, batch: int, how: str, seed_loop: bool, samples: int, tokens: int, what: str | None, busy: bool = False
) -> dict:
    with switched(what):
        return _run_variant(cfg, batch, how, seed_loop, samples, tokens, what, busy)


class KernelTime:
    """The GPU's busy time under a profiler: the union of its kernels' intervals (overlapping kernels count once)."""

    def __init__(self, trace=None):
        self.trace = trace

    def seconds(self) -> float:
        if self.trace is None:
            return float("nan")
        spans = sorted(
            (e.time_range.start, e.time_range.end)
            for e in self.trace.events()
            if e.device_type == torch.autograd.DeviceType.CUDA
        )
        busy, end = 0.0, float("-inf")
        for start, stop in spans:
            if stop > end:
                busy += stop - max(start, end)
                end = stop
        return busy / 1e6


@contextlib.contextmanager
def gpu_busy(on: bool):
    """With `on`, the timed loop runs under torch's profiler (CUDA kernels only, no CPU events: little overhead),
    and the yielded KernelTime gives the GPU's busy seconds: busy / wall is the fraction of the run the GPU worked,
    the rest being time it waited for the CPU (images, processor, Python between kernels)."""
    if not on:
        yield KernelTime()
        return
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as trace:
        kernels = KernelTime()
        yield kernels
    kernels.trace = trace


def _run_variant(
    cfg, batch: int, how: str, seed_loop: bool, samples: int, tokens: int, what: str | None, busy: bool = False
) -> dict:
    from hydra.utils import instantiate

    from vlx.engine.batches import build_inputs
    from vlx.engine.loop import predict_batches
    from vlx.stages._common import build_quantization

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    adapter = instantiate(cfg.model, _partial_=True)(quantization=build_quantization(cfg.quant))
    if what in ("hf_static", "hf_static_modules"):
        # transformers' static KV cache and its compiled decode step on the plain path (prompts left-padded to a
        # multiple of 64: a few shapes to compile); with or without vlx's compiled norms and MLPs
        adapter.compiled = True
        adapter.compile_modules = what == "hf_static_modules"
    task = instantiate(cfg.task)
    examples = task.load().examples
    warmup, timed = examples[:batch], examples[batch : batch + samples]
    generation = {"do_sample": False, "max_new_tokens": tokens, "min_new_tokens": tokens}
    image_tokens, prompt_tokens, new_tokens = [], [], set()

    def run(queue) -> None:
        if seed_loop:  # the seed's way: one item at a time, the processor inline, the CUDA cache cleared after each
            for example in queue:
                prompts, images = build_inputs(adapter, task, [example], [[]], None)
                result = adapter.generate(prompts, images, **generation)
                image_tokens.extend(result.image_tokens)
                prompt_tokens.extend(result.prompt_tokens)
                new_tokens.add(result.new_tokens)
                torch.cuda.empty_cache()
            return
        for done in predict_batches(adapter, task, queue, batch, how, generation, workers=cfg.loader_workers):
            if done.generation is not None:
                image_tokens.extend(done.generation.image_tokens)
                prompt_tokens.extend(done.generation.prompt_tokens)
                new_tokens.add(done.generation.new_tokens)

    start = time.perf_counter()
    run(warmup)  # untimed: the compiling happens here
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - start
    with gpu_busy(busy) as kernels:
        start = time.perf_counter()
        run(timed)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    assert new_tokens <= {tokens}, f"every generate variant must produce {tokens} new tokens, got {new_tokens}"
    result = {
        "samples_per_s": len(timed) / seconds,
        "s_per_sample": seconds / len(timed),
        "warmup_s": warmup_s,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "image_tokens": sum(image_tokens) / len(image_tokens) if image_tokens else None,
    }
    if busy:
        result["gpu_busy"] = kernels.seconds() / seconds
    if prompt_tokens:
        result["floor"] = floor(
            adapter.model,
            batch,
            sum(prompt_tokens) / len(prompt_tokens),
            result["image_tokens"],
            tokens if how == "generate" else 0,
        )
    adapter = None  # free the weights before the next variant loads
    gc.collect()
    torch.cuda.empty_cache()
    return result


# the floor's hardware figures (an H100 SXM; an H200 reads weights at 4.8 TB/s): dense bf16 matrix products as
# measured on these machines (~790 TFLOP/s on an 8192^3 product; ~700 on a model's shapes), and HBM3 bandwidth
FLOOR_TFLOPS = 700.0
FLOOR_TB_PER_S = {"H100": 3.35, "H200": 4.8}


def floor(model, batch: int, prompt_tokens: float, image_tokens: float | None, new_tokens: int) -> float:
    """The compute floor in samples/s at this batch: the prefill's matrix FLOPs (2 x parameters x positions, for
    the language model over the prompt and the vision tower over its patches, `vision_patches`) at FLOOR_TFLOPS,
    plus each decode step reading the language model's weights once per batch at the card's bandwidth. Attention's
    own FLOPs and the KV cache's reads are left out, so the floor is a little optimistic."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    vision = next((m for name in ("visual", "vision_tower", "vision_model") for m in [_find(base, name)] if m), None)
    vision_params = sum(p.numel() for p in vision.parameters()) if vision is not None else 0
    embed = base.get_input_embeddings().weight.numel()
    language = sum(p.numel() for p in base.parameters()) - vision_params - embed
    patches = vision_patches(base.config, image_tokens or 0)
    prefill_s = 2 * (language * prompt_tokens + vision_params * patches) / (FLOOR_TFLOPS * 1e12)
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
    bandwidth = next((v for k, v in FLOOR_TB_PER_S.items() if k in card), 3.35)
    decode_s = new_tokens * 2 * language / (bandwidth * 1e12) / batch  # bf16 weights, shared by the batch
    return 1.0 / (prefill_s + decode_s)


def vision_patches(config, image_tokens: float) -> float:
    """The patches the vision tower runs over for this many image tokens: Qwen-VL merges 2x2 patches into one token,
    Gemma 3 pools an image's (896/14)^2 patches into 256 tokens, the others have a token per patch."""
    vision = getattr(config, "vision_config", None)
    merge = getattr(vision, "spatial_merge_size", None)
    if merge:
        return image_tokens * merge**2
    per_image = getattr(config, "mm_tokens_per_image", None)
    if per_image and getattr(vision, "image_size", None) and getattr(vision, "patch_size", None):
        return image_tokens / per_image * (vision.image_size // vision.patch_size) ** 2
    return image_tokens


def _find(model, name: str):
    return next((m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] == name), None)


def profile(cfg, batch: int, tokens: int) -> None:
    """Where one batch's time goes with the model's default settings: preparing it on the CPU (processor), the
    vision tower alone, the prefill, `decode=score` (the path the model gets, and the plain one), the decode steps
    (the default path, and transformers' static cache with its compiled step), each the best of three; then the GPU
    kernels of a prefill, of the vision tower and of a generate call, and the fraction of a generate call's wall
    time that the GPU spends in kernels."""
    import inspect

    from hydra.utils import instantiate

    from vlx.engine.batches import prepare_batch

    adapter = instantiate(cfg.model, _partial_=True)(quantization=None)
    task = instantiate(cfg.task)
    queue = task.load().examples
    generation = {"do_sample": False, "max_new_tokens": tokens, "min_new_tokens": tokens}

    def timed(fn) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    def best(fn) -> float:
        return min(timed(fn) for _ in range(3))

    prepared = prepare_batch(adapter, task, None, queue, 0, batch, None)
    adapter.generate(prepared.prompts, prepared.images, inputs=prepared.inputs, **generation)  # compile, warm up
    figures = {
        "preparing the batch (CPU, one process)": best(
            lambda: prepare_batch(adapter, task, None, queue, 0, batch, None)
        )
    }
    inputs = prepared.inputs.to(adapter.model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(adapter.model.dtype)
    base = adapter.model.get_base_model() if hasattr(adapter.model, "get_base_model") else adapter.model
    features = getattr(base, "get_image_features", None) or getattr(base.model, "get_image_features", None)
    wanted = inspect.signature(features).parameters if features is not None else {}
    image_inputs = {k: v for k, v in inputs.items() if k in wanted}

    def vision() -> None:
        with torch.inference_mode():
            features(**image_inputs)

    def prefill() -> None:
        with torch.inference_mode():
            adapter.model(**inputs, use_cache=True, logits_to_keep=1)

    if features is not None:
        figures["vision tower alone"] = best(vision)
    figures["prefill (vision tower included)"] = best(prefill)
    answers = [task.label_text(label) for label in task.labels]

    def score() -> None:
        adapter.score(prepared.prompts, prepared.images, answers, inputs=prepared.inputs)

    figures["decode=score"] = best(score)
    with switched("off_the_allow_list"):
        figures["decode=score, plain (one forward per label)"] = best(score)

    def generate(n: int) -> float:
        settings = {**generation, "max_new_tokens": n, "min_new_tokens": n}
        return best(lambda: adapter.generate(prepared.prompts, prepared.images, inputs=prepared.inputs, **settings))

    one, full = generate(1), generate(tokens)
    figures["generate 1 token"], figures[f"generate {tokens} tokens"] = one, full
    figures["one decode step"] = (full - one) / (tokens - 1)
    if not adapter.compiled:  # transformers' static cache and compiled decode step, on the same batch
        adapter.compiled = True
        generate(tokens)  # compiles
        figures[f"generate {tokens} tokens, static cache, compiled step"] = generate(tokens)
        figures["one decode step, static cache, compiled step"] = (generate(tokens) - generate(1)) / (tokens - 1)
        adapter.compiled = False
    print(f"\nprofile, batch {batch} ({type(base).__name__}):")
    for name, seconds in figures.items():
        print(f"  {name}: {seconds * 1000:.1f} ms")
    # the GPU kernels behind them: what a faster prefill, vision tower or decode has to shrink
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    runs = [("prefill", prefill), (f"generate {tokens} tokens", lambda: generate(tokens))]
    if features is not None:
        runs.insert(1, ("vision tower", vision))
    for name, fn in runs:
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
            wall = timed(fn)
        busy = sum(e.self_device_time_total for e in trace.key_averages()) / 1e6
        print(
            f"\nkernels of one {name}: {wall * 1000:.0f} ms wall (under the profiler), GPU busy in kernels "
            f"{busy / wall:.0%}; top 12 by GPU time:"
        )
        print(trace.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="llava")
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/llava-7b"))
    parser.add_argument(
        "--csv-dir", type=Path, default=REPO.parent / "shared" / "data" / "esnlive", help="folder with esnlive_test.csv"
    )
    parser.add_argument("--image-dir", type=Path, default=Path("/tmp/bench-images"))
    parser.add_argument("--samples", type=int, default=64, help="timed items per batched variant")
    parser.add_argument("--seed-samples", type=int, default=8, help="timed items for the seed's way (slow)")
    parser.add_argument("--tokens", type=int, default=40, help="new tokens forced per item")
    parser.add_argument(
        "--floor",
        type=float,
        help="compute floor in samples/s for every row (default: each row's own, from its batch, "
        "prompt and image tokens: `floor`)",
    )
    parser.add_argument("--only", type=int, nargs="*", help="variant numbers to run, in this order")
    parser.add_argument("--profile", action="store_true", help="also time one batch's preparing, prefill and decode")
    parser.add_argument(
        "--busy",
        action="store_true",
        help="report each variant's GPU-busy fraction over its timed loop (under torch's profiler)",
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_infer needs a CUDA GPU")
    if not (args.model_dir / "config.json").is_file():
        subprocess.run(
            [sys.executable, str(REPO / "scripts" / "full_size_model.py"), MODELS[args.model], str(args.model_dir)],
            check=True,
        )
    limit = 32 + max(args.samples, args.seed_samples)
    write_images(args.csv_dir, args.image_dir, limit)
    rows = []
    for i in args.only or range(len(VARIANTS)):
        name, overrides, batch, decode, seed_loop, what = VARIANTS[i]
        n = args.seed_samples if batch == 1 else args.samples
        cfg = compose(args.model, args.model_dir, args.csv_dir, args.image_dir, limit, overrides)
        try:
            r = run_variant(cfg, batch, decode, seed_loop, n, args.tokens, what, args.busy)
        except Exception as err:  # an experimental variant failing must not lose the others' figures
            print(f"[{i}] {name}: FAILED {type(err).__name__}: {str(err)[:800]}", flush=True)
            gc.collect()
            torch.cuda.empty_cache()
            continue
        rows.append((i, name, r))
        print(f"[{i}] {name}: {r}", flush=True)
    if args.profile:
        profile(compose(args.model, args.model_dir, args.csv_dir, args.image_dir, limit, []), 32, args.tokens)
    import transformers

    seed = next((r for i, _, r in rows if i == 0), None)
    print(
        f"\n{torch.cuda.get_device_name()} | torch {torch.__version__} | transformers {transformers.__version__} | "
        f"bitsandbytes {_version('bitsandbytes')}"
    )
    print(f"command: {' '.join(sys.argv)}; {args.tokens} new tokens forced\n")
    print(
        "| variant | samples/s | s/sample | vs seed | peak GiB | image tokens/sample | of floor | warm-up s "
        "| GPU busy |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for _, name, r in rows:
        ratio = f"{r['samples_per_s'] / seed['samples_per_s']:.1f}x" if seed else ""
        tokens = f"{r['image_tokens']:.0f}" if r["image_tokens"] else ""
        limit = args.floor or r.get("floor")
        floor = f"{r['samples_per_s'] / limit:.0%} of {limit:.0f}" if limit else ""
        busy = f"{r['gpu_busy']:.0%}" if "gpu_busy" in r else ""
        print(
            f"| {name} | {r['samples_per_s']:.2f} | {r['s_per_sample']:.3f} | {ratio} | {r['peak_gib']:.1f} | "
            f"{tokens} | {floor} | {r['warmup_s']:.0f} | {busy} |"
        )


if __name__ == "__main__":
    main()
