"""Stages: each a module with a plain `run(cfg) -> dict` that the entrypoint dispatches to."""
