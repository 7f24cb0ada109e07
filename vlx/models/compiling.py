"""Regional compilation: `torch.compile` on each transformer block instead of the whole model.

The blocks of one tower share their code, so the compiled graph is reused block after block (torch inlines module
parameters as inputs): compile time is that of one block per tower, and the model code between blocks (masks,
image merging, the loss) stays eager, where whole-model compilation breaks its graph. Inductor fuses the
element-wise work around the matmuls (norms, rotary, GeGLU, LoRA dropout and scaling) and, in training, recomputes
cheap element-wise results in the backward pass instead of keeping them, which lowers activation memory.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

# transformers names the repeated block of every tower this way (GemmaDecoderLayer, SiglipEncoderLayer,
# MistralDecoderLayer, CLIPEncoderLayer, ...)
BLOCK_SUFFIXES = ("DecoderLayer", "EncoderLayer")


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
        name = type(module).__name__
        if name.endswith(BLOCK_SUFFIXES):
            module.compile(mode=mode)
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        log.warning("compile: no %s blocks found in %s; nothing compiled", "/".join(BLOCK_SUFFIXES),
                    type(model).__name__)  # fmt: skip
    log.info("compiled blocks: %s", counts)
    return counts


# modules that never touch the KV cache: compiling them cannot trip on per-layer cache specialisation
CACHE_FREE_SUFFIXES = ("RMSNorm", "MLP", "EncoderLayer")


def compile_cache_free(model: torch.nn.Module) -> dict[str, int]:
    """Compiles, for inference, the modules of `model` that hold no KV cache: the language model's norms and MLPs
    and the vision tower's blocks.

    Why not whole decoder blocks: a block writes its layer's KV cache, so torch specialises each block on its layer
    index and recompiles per layer (see `compile_blocks`). The norms and MLPs hold most of the prefill's unfused
    element-wise work (float32 upcasts in RMSNorm, SiLU times the up projection over [tokens, 14,336]); compiled,
    each becomes one or two kernels. Shapes are marked dynamic, so one graph serves every batch and prompt length.
    Modules with bitsandbytes weights are left alone (their matmuls are bitsandbytes kernels), and a module inside
    one already compiled is not compiled again.

    Returns:
        How many modules of each class were compiled.
    """
    counts: dict[str, int] = {}
    chosen: list[torch.nn.Module] = []
    for module in model.modules():
        name = type(module).__name__
        if not name.endswith(CACHE_FREE_SUFFIXES) or _quantized(module):
            continue
        if any(_contains(outer, module) for outer in chosen):
            continue
        chosen.append(module)
        module.compile(dynamic=True)
        counts[name] = counts.get(name, 0) + 1
    log.info("compiled cache-free modules: %s", counts)
    return counts


def _quantized(module: torch.nn.Module) -> bool:
    # bitsandbytes' Params4bit / Int8Params (checked by name: bitsandbytes is optional)
    return any(type(p).__name__ in ("Params4bit", "Int8Params") for p in module.parameters())


def _contains(outer: torch.nn.Module, inner: torch.nn.Module) -> bool:
    return any(m is inner for m in outer.modules())
