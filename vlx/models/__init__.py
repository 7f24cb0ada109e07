"""Model adapters: the generic one for any image-text-to-text checkpoint, the families' quirks, loading, vlx's fast
paths (`fast`) and tiny random-weight models of each architecture (`tiny`)."""

from vlx.models.families import FAMILY_ADAPTERS, adapter_class, load_adapter
from vlx.models.hf import HFAdapter, VLMAdapter
from vlx.models.llava_next import LlavaNextAdapter
from vlx.models.paligemma import PaliGemmaAdapter

__all__ = [
    "FAMILY_ADAPTERS",
    "HFAdapter",
    "LlavaNextAdapter",
    "PaliGemmaAdapter",
    "VLMAdapter",
    "adapter_class",
    "load_adapter",
]
