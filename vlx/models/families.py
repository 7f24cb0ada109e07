"""Which adapter a checkpoint gets, chosen here and nowhere else: its family's own class where the family has a
quirk, the generic one otherwise.

`model=hf model.checkpoint=<hub id or folder>` is all a researcher types; the checkpoint's config.json says its
architecture (model_type), and that picks the class. Every model YAML targets `load_adapter` (the tiny models'
`vlx.models.tiny.load_tiny_adapter` builds the folder, then calls it); a family YAML only names a checkpoint and the
options of its own.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from vlx.configs import removed_key
from vlx.errors import ConfigError
from vlx.models.hf import HFAdapter, check_images_per_prompt, check_max_images
from vlx.models.llava_next import LlavaNextAdapter
from vlx.models.loading import read_config, resolve_checkpoint
from vlx.models.paligemma import PaliGemmaAdapter

log = logging.getLogger(__name__)

# model_type -> the family's own adapter; every other architecture gets HFAdapter
FAMILY_ADAPTERS: dict[str, type[HFAdapter]] = {
    "paligemma": PaliGemmaAdapter,  # no chat template: prefix prompts, suffix targets, token_type_ids
    "llava_next": LlavaNextAdapter,  # max_tiles
}


def adapter_class(model_type: str | None) -> type[HFAdapter]:
    """The adapter class for an architecture's model_type (`FAMILY_ADAPTERS`, else `HFAdapter`)."""
    return FAMILY_ADAPTERS.get(model_type or "", HFAdapter)


def own_options(cls: type[HFAdapter]) -> set[str]:
    """The keyword options a family's class takes beyond every adapter's (LLaVA-NeXT's max_tiles)."""

    def params(c: type) -> set[str]:
        return {p for p in inspect.signature(c).parameters if p not in ("self", "args", "kwargs")}

    return params(cls) - params(HFAdapter)


def load_adapter(
    checkpoint: str,
    trust_remote_code: bool = False,
    shots: int = 0,
    **options: Any,
) -> HFAdapter:
    """The adapter for `checkpoint`, of the class its architecture needs (`FAMILY_ADAPTERS`); the checkpoint's
    config.json is read here once and handed to the class, its processor and model.

    Args:
        checkpoint: hub id or local folder written by `save_pretrained`.
        trust_remote_code: run code shipped with the checkpoint (only for checkpoints you trust).
        shots: the demonstrations each prompt will hold (the root key shots): refused before the processor and
            weights load where the family's prompts cannot hold their images.
        **options: as `HFAdapter`'s; a family's own (LLaVA-NeXT's max_tiles) only for a checkpoint of that family,
            or null.

    Raises:
        ConfigError: the checkpoint is missing or unreadable, an option is not the family's, or `shots` demonstrations
            cannot be shown to it.
    """
    for key in options:  # a model YAML's or override's key that is gone: said, never dropped
        if (line := removed_key(f"model.{key}")) is not None:
            raise ConfigError(line)
    resolved = resolve_checkpoint(checkpoint)
    config = read_config(resolved, trust_remote_code)
    model_type = getattr(config, "model_type", None)
    cls = adapter_class(model_type)
    foreign = {
        key: value
        for family in FAMILY_ADAPTERS.values()
        if family is not cls
        for key, value in options.items()
        if key in own_options(family) - own_options(cls)
    }
    for key, value in foreign.items():
        if value is not None:
            owners = ", ".join(c.__name__ for c in FAMILY_ADAPTERS.values() if key in own_options(c))
            raise ConfigError(
                f"model.{key}={value!r} is an option of {owners}, and {checkpoint} is a {model_type} model "
                f"({cls.__name__}); leave it out (null)"
            )
        del options[key]  # null: the family YAML's default, for a checkpoint of another family
    check_max_images(options.get("max_images"))
    limit = cls.image_limit if cls.image_limit is not None else options.get("max_images")
    check_images_per_prompt(limit, cls.__name__, shots)
    log.info("%s is a %s model: %s", checkpoint, model_type, cls.__name__)
    return cls(resolved, config=config, trust_remote_code=trust_remote_code, **options)
