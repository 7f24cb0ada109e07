"""Which adapter a checkpoint gets: its family's own class where the family has a quirk, the generic one otherwise.

`model=hf model.checkpoint=<hub id or folder>` is all a researcher types; the checkpoint's config.json says its
architecture (model_type), and that picks the class.
"""

from __future__ import annotations

import logging
from typing import Any

from vlx.models.hf import HFAdapter
from vlx.models.llava_next import LlavaNextAdapter
from vlx.models.loading import read_model_type, resolve_checkpoint
from vlx.models.paligemma import PaliGemmaAdapter

log = logging.getLogger(__name__)

# model_type -> the family's own adapter; every other architecture gets HFAdapter
FAMILY_ADAPTERS: dict[str, type[HFAdapter]] = {
    "paligemma": PaliGemmaAdapter,  # no chat template: prefix prompts, suffix targets, token_type_ids
    "llava_next": LlavaNextAdapter,  # max_tiles
}


def adapter_class(model_type: str | None) -> type[HFAdapter]:
    return FAMILY_ADAPTERS.get(model_type or "", HFAdapter)


def load_adapter(
    checkpoint: str,
    tiny: str | None = None,
    tiny_dir: str | None = None,
    trust_remote_code: bool = False,
    **options: Any,
) -> HFAdapter:
    """The adapter for `checkpoint`, of the class its architecture needs (`FAMILY_ADAPTERS`); `options` as
    `HFAdapter`'s (a family's own options, such as LLaVA-NeXT's max_tiles, go through its family YAML)."""
    resolved = resolve_checkpoint(checkpoint, tiny, tiny_dir)
    model_type = read_model_type(resolved, trust_remote_code)
    cls = adapter_class(model_type)
    log.info("%s is a %s model: %s", checkpoint, model_type, cls.__name__)
    return cls(resolved, tiny=tiny, tiny_dir=tiny_dir, trust_remote_code=trust_remote_code, **options)
