"""The merge stage: a LoRA adapter folded into its base, saved as a full model for serving.

vlx stage=merge model=paligemma model.adapter=outputs/.../adapter      # -> <run dir>/merged/
vlx model=paligemma model.checkpoint=<run dir>/merged task=esnli     # infers as the adapter did

The merged folder carries the adapter's vlx_adapter.json (its prompt template), so inference with it needs no
settings the adapter did not.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from vlx.errors import ConfigError
from vlx.models.hf import ADAPTER_META
from vlx.models.loading import check_adapter_path
from vlx.run.directory import RunDir
from vlx.run.lock import exclusive
from vlx.run.store import read_json, write_json
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
    with exclusive(run_dir(cfg)) as root:
        out = RunDir(root).merged_dir
        if out.exists() and any(out.iterdir()):
            raise ConfigError(f"{out} already holds a merged model; merge into a new run directory")
        adapter = instantiate(cfg.model, _partial_=True)(quantization=None)
        merged = adapter.model.merge_and_unload()
        merged.save_pretrained(out)
        adapter.processor.save_pretrained(out)
        # what the adapter's record says beyond the weights: the task.prompt it was trained with (read back from a
        # checkpoint folder as from an adapter folder, and compared with the prompt a run asks with)
        meta = Path(cfg.model.adapter) / ADAPTER_META
        record = read_json(meta, "written by stage=finetune") if meta.is_file() else {}
        write_json(out / ADAPTER_META, {**record, "merged_from": str(cfg.model.adapter)})
    log.info("merged %s into %s -> %s", cfg.model.adapter, cfg.model.checkpoint, out)
    return {"parameters": sum(p.numel() for p in merged.parameters())}
