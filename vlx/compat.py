"""Every place vlx leans on transformers beyond its public API, in one module.

Each function says what it relies on; tests/test_compat.py checks each assumption against the installed transformers
and fails, naming the function, on a release that changes it.

The fast paths (`vlx.models.fast`) lean on more of transformers, each where it is used and backed by the equality
tests their modules name (tests/test_fast_paths.py, test_mrope_scoring.py, test_vision_windows.py,
test_fast_decode.py): the attention and mask registries and the SDPA attention function, the decoder blocks' class
names, the Qwen-VL models' rope-index functions and a vision config's `_attn_implementation`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft model (its public `get_base_model`), or `model` itself."""
    unwrap = getattr(model, "get_base_model", None)
    return unwrap() if callable(unwrap) else model


def cache_argument(model: torch.nn.Module) -> str:
    """The forward argument that carries the KV cache: `cache` since transformers 5.2x, `past_key_values` before
    (5.17 has the old name). Read from the forward's signature, as there is no public switch."""
    base = base_model(model)
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def output_cache(output: Any) -> Any:
    """The KV cache a forward returned (`cache` or `past_key_values`, by the version)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def rope_index(model: torch.nn.Module) -> Callable[[Any], torch.Tensor] | None:
    """The model's own M-RoPE position function, as `positions(batch) -> [3, B, T]`, or None for a model without one.

    Relies on: the multimodal model inside the `...ForConditionalGeneration` (its `model` attribute) has
    `get_rope_index(input_ids, mm_token_type_ids, image_grid_thw=, video_grid_thw=, attention_mask=, ...)` returning
    (position_ids [3, B, T], deltas): the function its forward calls to place a prompt's tokens over time, height and
    width when given no `position_ids` (Qwen2-VL, Qwen2.5-VL with `second_per_grid_ts` for videos, Qwen3-VL,
    transformers 5.2x). transformers has no public way to ask a model for the positions it would use."""
    base = base_model(model)
    function = getattr(getattr(base, "model", None), "get_rope_index", None)
    if function is None:
        return None
    named = inspect.signature(function).parameters
    optional = [k for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts") if k in named]

    def positions(batch: Any) -> torch.Tensor:
        extra = {k: batch[k] for k in optional if batch.get(k) is not None}
        ids = batch["input_ids"]
        return function(
            ids, mm_token_type_ids=batch["mm_token_type_ids"], attention_mask=batch["attention_mask"], **extra
        )[0]

    return positions


# the decoder block's cache argument, by the version (see `cache_argument`)
CACHE_KEYWORDS = ("cache", "past_key_values")


def route_cache_free_calls(layer: torch.nn.Module, compiled: Callable[..., Any]) -> None:
    """Sends `layer`'s calls made without a KV cache object to `compiled`, the others to its own forward.

    Relies on: a decoder block receives its cache as a keyword argument named as in `CACHE_KEYWORDS` (None when the
    model runs without one). Replacing the instance's `forward` is the only hook torch offers for choosing the callee
    per call."""
    eager = layer.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if all(kwargs.get(name) is None for name in CACHE_KEYWORDS):
            return compiled(*args, **kwargs)
        return eager(*args, **kwargs)

    layer.forward = forward


def attention_implementation(config: Any) -> str | None:
    """The attention a loaded model's (sub-)config runs (`sdpa`, `eager`, a registered name). Relies on: the config's
    `_attn_implementation`, which `from_pretrained` sets; transformers has no public getter."""
    return getattr(config, "_attn_implementation", None)


def allow_quantized_compile(model: torch.nn.Module) -> None:
    """Lets `generate` compile the decode step of a model with bitsandbytes 4-bit weights.

    transformers declines to by default (its bitsandbytes quantizer reports `is_compileable = False`), but
    bitsandbytes 0.50's 4-bit layers trace without graph breaks, the outputs are the same
    (tests/test_fast_decode.py) and nf4 decoding is faster compiled (docs/PERFORMANCE.md, runs D-F). Relies on: the
    loaded model's `hf_quantizer` attribute and its `is_compileable` property; the model's own quantizer object gets a
    subclass that says True, nothing else changes."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None or quantizer.is_compileable:
        return
    base = type(quantizer)
    quantizer.__class__ = type(f"Compileable{base.__name__}", (base,), {"is_compileable": property(lambda _: True)})


def compile_config_for(device: torch.device) -> Any:
    """A `generate` CompileConfig that compiles the decode step on `device`. Relies on: CompileConfig's
    `_compile_all_devices` switch, without which transformers compiles on CUDA only (tests compile on a CPU)."""
    from transformers import CompileConfig

    config = CompileConfig()
    if device.type == "cpu":
        config._compile_all_devices = True  # type: ignore[assignment]  # (declared None in transformers; a bool)
    return config


@functools.cache
def static_cache_ceiling() -> bool:
    """Whether `generate` takes `max_cache_len`, a static cache's length for every call up to it (transformers 5.20
    or so): one cache, and one compiled decode step, serve prompts of several widths. Older versions size the cache
    to each call's prompt + new tokens (and compile again for each)."""
    from transformers import GenerationConfig

    return hasattr(GenerationConfig(), "max_cache_len")


def train_on_one_gpu(args: Any) -> None:
    """Makes TrainingArguments count one GPU where its process sees several without a launcher. Relies on: the
    `_n_gpu` field behind the public `n_gpu`, which the Trainer itself sets to 1 for a model split over GPUs."""
    args._n_gpu = 1
