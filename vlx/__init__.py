"""vlx: Hydra-configured experiments for vision-language models on classification with explanation."""

__version__ = "0.1.0"
