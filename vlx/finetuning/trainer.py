"""transformers' Trainer, with throughput and GPU memory in every log entry."""

from __future__ import annotations

import time
from typing import Any

import torch
from transformers import Trainer, TrainerCallback


class StatsTrainer(Trainer):
    """The Trainer, each of whose log entries also carries the throughput since the last entry (`samples_per_s`,
    over all processes) and the peak GPU memory (`gpu_peak_gib`): in the W&B run's charts and in
    train_summary.json's log history.

    Added in `log`, the Trainer's public hook that every entry passes through before it is stored and handed to the
    reporting callbacks (a callback's `on_log` would run after W&B's).

    Args:
        samples_per_step: the samples of one optimizer step (micro-batch x accumulation x processes).
        *args, **kwargs: as `Trainer`.
    """

    def __init__(self, *args: Any, samples_per_step: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.samples_per_step = samples_per_step
        self.last_log: tuple[int, float] | None = None  # (step, time) of the last entry
        self.add_callback(_MarkStart(self))

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        now = time.perf_counter()
        step = self.state.global_step
        if self.last_log is not None and step > self.last_log[0]:
            logs["samples_per_s"] = (step - self.last_log[0]) * self.samples_per_step / (now - self.last_log[1])
        if torch.cuda.is_available():
            logs["gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        self.last_log = (step, now)
        super().log(logs, *args, **kwargs)


class _MarkStart(TrainerCallback):
    """Starts the throughput clock when the training starts (at the resumed step on a resume)."""

    def __init__(self, trainer: StatsTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.last_log = (state.global_step, time.perf_counter())
