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
