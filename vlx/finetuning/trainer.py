"""transformers' Trainer, with throughput and GPU memory in every log entry, stopped where the training diverges."""

from __future__ import annotations

import time
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from vlx.errors import VlxError


class Diverged(VlxError):
    """The training loss, or the LoRA weights after an optimizer step, stopped being finite (NaN or inf).

    Args:
        step: the optimizer step (1-based) at whose end it was found.
        what: what was not finite, in words.
        message: the whole line (the stage's, with what to change); by default what and the step.
    """

    def __init__(self, step: int, what: str, message: str | None = None):
        super().__init__(message or f"{what} at step {step}")
        self.step, self.what = step, what


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
        self.loss_finite: torch.Tensor | None = None  # whether every micro-batch loss since the last step was finite
        self.add_callback(_MarkStart(self))
        self.add_callback(_StopWhenNotFinite(self))

    def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """transformers' training step, noting whether its loss is finite (on the device: no sync) for
        `check_finite`."""
        loss = super().training_step(*args, **kwargs)
        finite = torch.isfinite(loss.detach()).all()  # on the device: no sync per micro-batch
        self.loss_finite = finite if self.loss_finite is None else self.loss_finite & finite
        return loss

    def check_finite(self) -> None:
        """Raises Diverged where a micro-batch loss since the last optimizer step, or a trainable weight now, is not
        finite. One device sync per optimizer step; under several processes every one decides the same (a
        process that stopped alone would leave the others waiting)."""
        assert self.model is not None  # Trainer's model, given at construction
        params = [p for p in self.model.parameters() if p.requires_grad]
        local = [p.to_local() if hasattr(p, "to_local") else p for p in params]  # an FSDP shard: its own part
        weights = torch.stack([torch.isfinite(p).all() for p in local]).all() if local else None
        loss = self.loss_finite
        self.loss_finite = None
        flags = torch.stack(
            [
                (loss if loss is not None else torch.tensor(True)).to(self.args.device),
                (weights if weights is not None else torch.tensor(True)).to(self.args.device),
            ]
        ).to(torch.int32)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
        loss_ok, weights_ok = flags.tolist()
        if not loss_ok:
            raise Diverged(self.state.global_step, "the training loss is not finite (NaN or inf)")
        if not weights_ok:
            raise Diverged(self.state.global_step, "the LoRA weights are not finite (NaN or inf) after the update")

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """transformers' log, with the samples per second since the last log and the GPU's peak memory added."""
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


class _StopWhenNotFinite(TrainerCallback):
    """Checks the loss and the LoRA weights at the end of every optimizer step, before the Trainer logs or saves a
    checkpoint of it: a diverged step never becomes a checkpoint or the final adapter."""

    def __init__(self, trainer: StatsTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.check_finite()
