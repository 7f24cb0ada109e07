"""LLaVA-NeXT (LLaVA-v1.6): the generic adapter, plus a limit on the tiles an image is cut into."""

from __future__ import annotations

import logging
from typing import Any

from vlx.errors import ConfigError
from vlx.models.hf import HFAdapter

log = logging.getLogger(__name__)


class LlavaNextAdapter(HFAdapter):
    """A LLaVA-NeXT checkpoint (e.g. llava-hf/llava-v1.6-mistral-7b-hf); arguments as `HFAdapter`, plus:

    Args:
        max_tiles: the most high-resolution tiles an image is cut into (None = the checkpoint's grid: up to 4 for
            v1.6, i.e. ~2,300 image tokens for a 500x375 image). Fewer tiles, fewer image tokens: faster and
            coarser. Each tile is 576 tokens at 336 px; the downscaled whole image is always added.
    """

    def __init__(self, *args: Any, max_tiles: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if max_tiles is not None:
            self.limit_tiles(max_tiles)

    def limit_tiles(self, max_tiles: int) -> None:
        """Keeps the grid resolutions of at most `max_tiles` tiles, in the processor (token counts) and the model
        config (feature layout) alike, which must agree."""
        if not isinstance(max_tiles, int) or max_tiles < 1:
            raise ConfigError(f"model.max_tiles={max_tiles!r}: use a number of tiles >= 1, or null for all")
        tile = self.model.config.vision_config.image_size
        grids = self.processor.image_processor.image_grid_pinpoints
        kept = [[h, w] for h, w in grids if (h // tile) * (w // tile) <= max_tiles]
        kept = kept or [[tile, tile]]  # one tile: the image at the vision tower's own size
        self.processor.image_processor.image_grid_pinpoints = kept
        self.model.config.image_grid_pinpoints = kept
        log.info("LLaVA-NeXT tiles: at most %d (grids %s of %s)", max_tiles, kept, grids)
