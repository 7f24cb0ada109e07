"""Small helpers every stage uses: the run directory, the resolved config, seeding, the quantization object."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vlx.errors import ConfigError


def run_dir(cfg: DictConfig) -> Path:
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain data (for W&B and summaries); Hydra's own node left out."""
    # Hydra's node is left out: some of its keys (hydra.job.num) exist only inside sweeps
    keys = [key for key in cfg if key != "hydra"]
    data = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)
    assert isinstance(data, dict)
    return data


def build_quantization(quant: DictConfig | None) -> Any | None:
    """The `quant` group as a transformers.BitsAndBytesConfig, or None for `quant=none`."""
    if not quant:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("quant=... needs the bitsandbytes package: pip install bitsandbytes (or use quant=none)")
    return instantiate(quant)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def config_choices() -> dict[str, str]:
    """The option picked in each config group (model=llava, quant=nf4, ...), when Hydra composed the config."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {k: str(v) for k, v in choices.items() if v is not None and not k.startswith("hydra")}


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON file a stage depends on, with a clear error when it is missing or broken."""
    if not path.is_file():
        raise ConfigError(f"{path} not found: {what}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err.msg}); delete it and rerun the stage that writes it") from err
