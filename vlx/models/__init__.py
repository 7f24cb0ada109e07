"""Model adapters (one per family), loading, and tiny random-weight models of each architecture."""

from vlx.models._base import HFAdapter, VLMAdapter
from vlx.models.llava_next import LlavaNextAdapter
from vlx.models.paligemma import PaliGemmaAdapter

__all__ = ["HFAdapter", "LlavaNextAdapter", "PaliGemmaAdapter", "VLMAdapter"]
