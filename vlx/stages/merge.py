"""The merge stage: a LoRA adapter folded into its base, saved as a full model for serving.

vlx stage=merge model=paligemma model.adapter=outputs/.../adapter      # -> <run dir>/merged/
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from vlx.errors import ConfigError
from vlx.models.loading import check_adapter_path
from vlx.stages._common import run_dir

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Loads base + adapter in full precision, merges, and saves model and processor to <run dir>/merged."""
    if cfg.model.adapter is None:
        raise ConfigError("stage=merge needs model.adapter=<adapter dir> (the adapter/ folder of a finetune run)")
    if cfg.quant:
        raise ConfigError(
            "stage=merge refuses a 4-bit/8-bit base: folding LoRA weights into quantized weights rounds them away. "
            "Use quant=none (the merged model can be quantized again when it is loaded)"
        )
    check_adapter_path(cfg.model.adapter)
    out = run_dir(cfg) / "merged"
    adapter = instantiate(cfg.model, _partial_=True)(quantization=None)
    merged = adapter.model.merge_and_unload()
    merged.save_pretrained(out)
    adapter.processor.save_pretrained(out)
    log.info("merged %s into %s -> %s", cfg.model.adapter, cfg.model.checkpoint, out)
    return {"parameters": sum(p.numel() for p in merged.parameters())}
