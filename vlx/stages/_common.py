"""Small helpers every stage uses: the run directory, the resolved config, seeding, the quantization object."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vlx.config_data import plain_dict
from vlx.config_schema import check_section
from vlx.errors import ConfigError


def run_dir(cfg: DictConfig) -> Path:
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as plain data (for W&B and summaries); Hydra's own node left out."""
    # Hydra's node is left out: some of its keys (hydra.job.num) exist only inside sweeps
    keys = [str(key) for key in cfg if key != "hydra"]
    return plain_dict(OmegaConf.masked_copy(cfg, keys), "the config")


def build_group(group: str, node: DictConfig) -> Any:
    """A config group's `_target_` object (peft.LoraConfig, transformers.BitsAndBytesConfig), with a setting that
    its class refuses named as a config mistake."""
    try:
        return instantiate(node)
    except Exception as err:  # noqa: BLE001 - Hydra wraps what the constructor raised (TypeError, ValueError)
        cause = err.__cause__ or err
        target = node.get("_target_")
        raise ConfigError(f"{group}: {target} refuses these settings ({cause}); see conf/{group}/") from err


def build_quantization(quant: DictConfig | None) -> Any | None:
    """The `quant` group as a transformers.BitsAndBytesConfig, or None for `quant=none`."""
    if not quant:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("quant=... needs the bitsandbytes package: pip install bitsandbytes (or use quant=none)")
    return build_group("quant", quant)


def check_generation(generation: dict[str, Any]) -> None:
    """`generation.*` are generate() settings: an unknown key or an impossible value is refused before the model
    loads (transformers would refuse it only at the first batch)."""
    from transformers import GenerationConfig

    known = set(GenerationConfig().to_dict())
    for key in generation:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=2)
            hint = f" (did you mean {' or '.join('generation.' + c for c in close)}?)" if close else ""
            raise ConfigError(f"generation.{key} is not a setting of transformers' generate(){hint}")
    check_section("generation", generation)  # max_new_tokens, num_beams: vlx.config_schema's rules
    temperature = generation.get("temperature")
    if generation.get("do_sample") and isinstance(temperature, (int, float)) and temperature <= 0:
        raise ConfigError(f"generation.temperature={temperature!r}: sampling needs a temperature above 0")
    try:
        GenerationConfig(**generation).validate()
    except ValueError as err:
        raise ConfigError("generation: " + " ".join(str(err).split())) from err


def config_choices() -> dict[str, str]:
    """The option picked in each config group (model=llava, quant=nf4, ...), when Hydra composed the config."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {k: str(v) for k, v in choices.items() if v is not None and not k.startswith("hydra")}
