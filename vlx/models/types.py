"""What `vlx.models.loading.load_model` returns, named for annotations (the type checker only: nothing runs here).

Modules that take a loaded model (generation, scoring, the fast paths) import `LoadedModel` from here rather than
from `loading`, which imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import GenerationMixin, PreTrainedModel

    class GenerativeModel(PreTrainedModel, GenerationMixin):
        """What every image-text-to-text model class is (for the type checker only: transformers names no such
        class)."""

    # what `load_model` returns: a transformers model, bare or inside peft's wrapper (which passes on to the model
    # inside what it does not have itself: its device, its config)
    LoadedModel = GenerativeModel | PeftModel
