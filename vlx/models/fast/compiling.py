"""Regional compilation: `torch.compile` on each transformer block instead of the whole model.

The blocks of one tower share their code, so the compiled graph is reused block after block (torch inlines module
parameters as inputs): compile time is that of one block per tower, and the model code between blocks (masks,
image merging, the loss) stays eager, where whole-model compilation breaks its graph. Inductor fuses the
element-wise work around the matmuls (norms, rotary, GeGLU, LoRA dropout and scaling) and, in training, recomputes
cheap element-wise results in the backward pass instead of keeping them, which lowers activation memory.

Blocks compile in place (`nn.Module.compile`), so parameter names and the adapter's saved keys stay as they were;
accelerate's `compile_regions` would wrap each block in an OptimizedModule, whose `_orig_mod.` prefix reaches peft's
adapter files.
"""

from __future__ import annotations

import logging

import torch

from vlx.compat import route_cache_free_calls

log = logging.getLogger(__name__)

# transformers names the repeated block of every tower this way (GemmaDecoderLayer, SiglipEncoderLayer,
# MistralDecoderLayer, CLIPEncoderLayer, ...)
BLOCK_SUFFIXES = ("DecoderLayer", "EncoderLayer")


def is_block(module: torch.nn.Module) -> bool:
    """Whether `module` is a decoder or vision block (its class name ends in one of BLOCK_SUFFIXES)."""
    return type(module).__name__.endswith(BLOCK_SUFFIXES)


def block_classes(model: torch.nn.Module) -> list[str]:
    """The class names of `model`'s transformer blocks, in the order they first appear."""
    return list(dict.fromkeys(type(m).__name__ for m in model.modules() if is_block(m)))


def compile_blocks(model: torch.nn.Module, mode: str | None = None) -> dict[str, int]:
    """Compiles every transformer block of `model` in place (peft-wrapped models included).

    Args:
        model: a transformers model, bare or inside peft's PeftModel.
        mode: torch.compile's mode (None = default; "max-autotune-no-cudagraphs" searches kernels longer).

    Returns:
        How many blocks of each class were compiled.
    """
    counts: dict[str, int] = {}
    for module in model.modules():
        if is_block(module):
            module.compile(mode=mode)
            name = type(module).__name__
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        log.warning(
            "compile: no %s blocks found in %s; nothing compiled", "/".join(BLOCK_SUFFIXES), type(model).__name__
        )
    log.info("compiled blocks: %s", counts)
    return counts


# modules that never touch the KV cache: compiling them cannot trip on per-layer cache specialisation (vision blocks
# are EncoderLayer in CLIP, SigLIP and Idefics3, VisionLayer in InternVL)
CACHE_FREE_SUFFIXES = ("RMSNorm", "MLP", "EncoderLayer", "VisionLayer")


def compile_cache_free(model: torch.nn.Module) -> dict[str, int]:
    """Compiles `model` for inference where compiling cannot trip on the KV cache: the language model's norms and
    MLPs, the vision tower's blocks, and the decoder blocks for calls made without a cache object.

    Why not whole decoder blocks for every call: a block writes its layer's KV cache, so torch specialises each block
    on its layer index (and on the cache's state) and recompiles per layer. vlx's prefill of a causal model
    (`prefill`, `prefill_scoring`) runs the blocks with no cache object, the keys and values going to the cache from
    the attention function, outside the graph; those calls use one compiled graph for every block, which fuses the
    rotary embedding, residuals and norms around the matmuls. Calls with a cache (the decode step,
    which `generate` compiles as a whole, and PaliGemma's prefill) run the block as it was, with its norms and MLP
    compiled: the float32 upcasts in RMSNorm and SiLU times the up projection over [tokens, 14,336] become one or two
    kernels each.

    Shapes are marked dynamic, so one graph serves every batch and prompt length. Modules with bitsandbytes weights
    are left alone: their matmuls are bitsandbytes kernels, and a 4-bit block's graph, shared across blocks, failed
    inductor's stride checks on the packed weights (bitsandbytes 0.50, torch 2.13). A module inside one already
    compiled is not compiled again.

    Returns:
        How many modules of each class were compiled (decoder blocks as "<class> (without a cache)").
    """
    counts: dict[str, int] = {}
    chosen: list[torch.nn.Module] = []
    for module in model.modules():
        name = type(module).__name__
        if name.endswith("DecoderLayer") and not _quantized(module):  # (not `chosen`: calls with a cache use its
            # compiled norms and MLP)
            _compile_for_cache_free_calls(module)
            name = f"{name} (without a cache)"
        else:
            if not name.endswith(CACHE_FREE_SUFFIXES) or _quantized(module):
                continue
            if any(_contains(outer, module) for outer in chosen):
                continue
            chosen.append(module)
            module.compile(dynamic=True)
        counts[name] = counts.get(name, 0) + 1
    log.info("compiled for inference: %s", counts)
    return counts


def _compile_for_cache_free_calls(layer: torch.nn.Module) -> None:
    """Routes `layer`'s calls without a cache object through a compiled forward, and the others to its own."""
    route_cache_free_calls(layer, torch.compile(layer.forward, dynamic=True))


def _quantized(module: torch.nn.Module) -> bool:
    # bitsandbytes' Params4bit / Int8Params (checked by name: bitsandbytes is optional)
    return any(type(p).__name__ in ("Params4bit", "Int8Params") for p in module.parameters())


def _contains(outer: torch.nn.Module, inner: torch.nn.Module) -> bool:
    return any(m is inner for m in outer.modules())
