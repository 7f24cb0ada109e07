"""Process-wide setup: seeds."""

from __future__ import annotations


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch (all devices)."""
    from transformers import set_seed

    set_seed(seed)
