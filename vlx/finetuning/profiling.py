"""Where a fine-tuning step's time goes: torch.profiler over a few optimizer steps (`finetune.profile_steps`).

Throughput alone cannot say whether a slow step is the GPU computing or the GPU waiting: for the CPU to prepare the
next micro-batches, to launch kernels, or at a synchronising `.item()`. The profile compares the wall time of the
profiled steps with the time kernels ran on the device, lists the operators that took it, and says what the CPU was
doing while the device sat idle: the top-level CPU operator or annotation (`enumerate(DataLoader)...`,
`Optimizer.step...`, `aten::item`, `cudaStreamSynchronize`, ...) that covered each idle stretch, or none (Python
between operators).
"""

from __future__ import annotations

import bisect
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from vlx.errors import ConfigError

log = logging.getLogger(__name__)


def check_profile_steps(steps: Sequence[int] | None, max_steps: int) -> tuple[int, int] | None:
    """`finetune.profile_steps` as (first, last) optimizer steps, 1-based and inclusive; None when off."""
    if steps is None:
        return None
    steps = list(steps)
    if len(steps) != 2 or not all(isinstance(s, int) for s in steps) or not 1 <= steps[0] <= steps[1]:
        raise ConfigError(
            f"finetune.profile_steps={steps}: give [first, last] optimizer steps, 1-based, e.g. [11, 12] (after the "
            f"warm-up and compiling), or null"
        )
    if max_steps > 0 and steps[1] > max_steps:
        raise ConfigError(f"finetune.profile_steps={steps}: the run stops at finetune.max_steps={max_steps}")
    return steps[0], steps[1]


class StepProfiler(TrainerCallback):
    """Profiles optimizer steps `first`..`last` and writes, into `out_dir` (file names end in `suffix`):

    - `profile.json`: the steps, their wall seconds per step, the seconds per step in which some kernel ran on the
      device, and that as a fraction of the wall time; the device's idle seconds per step, and what the CPU was in
      meanwhile (seconds per step by top-level operator; the device figures are None on CPU);
    - `profile.txt`: the top operators by device time (CPU time on CPU);
    - `profile_trace.json`: the timeline, for chrome://tracing or ui.perfetto.dev.
    """

    def __init__(self, first: int, last: int, out_dir: Path, suffix: str = ""):
        self.first, self.last = first, last
        self.out_dir, self.suffix = out_dir, suffix
        self.profiler: Any = None
        self.started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        """Starts the profiler before the first profiled step."""
        if self.profiler is None and state.global_step + 1 == self.first:  # global_step counts finished steps
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
                torch.cuda.synchronize()  # the window starts with nothing of earlier steps still running
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.__enter__()
            self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        """Stops the profiler after the last profiled step and writes what it measured (`write`)."""
        if self.profiler is None or state.global_step < self.last:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the window ends when the profiled steps' kernels have
        wall = time.perf_counter() - self.started
        self.profiler.__exit__(None, None, None)
        self.write(self.profiler, wall)
        self.profiler = None

    def write(self, profiler: Any, wall: float) -> None:
        """Writes the profiled steps' summary (wall and device-busy time per step) as profile.json, it and the
        operator table as profile.txt, and the Chrome trace, into the output folder."""
        on_gpu = torch.cuda.is_available()
        busy, idle = None, None
        steps = self.last - self.first + 1
        if on_gpu:
            events = profiler.events()
            spans = [
                (e.time_range.start, e.time_range.end)
                for e in events
                if e.device_type == torch.autograd.DeviceType.CUDA
            ]
            busy = covered_seconds(spans)
            top = [
                (e.name, e.time_range.start, e.time_range.end)
                for e in events
                if e.device_type == torch.autograd.DeviceType.CPU and e.cpu_parent is None
            ]
            idle = {name: round(seconds / steps, 4) for name, seconds in idle_while(idle_gaps(spans), top).items()}
        summary = {
            "steps": [self.first, self.last],
            "wall_s_per_step": wall / steps,
            "device_busy_s_per_step": busy / steps if busy is not None else None,
            "device_busy_fraction": busy / wall if busy is not None else None,
            "device_idle_s_per_step": (wall - busy) / steps if busy is not None else None,
            "device_idle_while": idle,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"profile{self.suffix}.json").write_text(json.dumps(summary, indent=2) + "\n")
        sort_by = "self_device_time_total" if on_gpu else "self_cpu_time_total"
        table = profiler.key_averages().table(sort_by=sort_by, row_limit=30, max_name_column_width=70)
        (self.out_dir / f"profile{self.suffix}.txt").write_text(f"{json.dumps(summary)}\n\n{table}\n")
        profiler.export_chrome_trace(str(self.out_dir / f"profile_trace{self.suffix}.json"))
        log.info("profiled steps %d-%d: %s (%s)", self.first, self.last, summary, self.out_dir)


def idle_gaps(spans: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The stretches between the first and the last span that no span covers (same units as the spans)."""
    gaps, reached = [], None
    for start, end in sorted(spans):
        if reached is not None and start > reached:
            gaps.append((reached, start))
        reached = end if reached is None else max(reached, end)
    return gaps


# what covered an idle stretch where no top-level CPU operator did
NO_OPERATOR = "(no operator: Python between operators)"


def idle_while(
    gaps: Sequence[tuple[float, float]], cpu_ops: Sequence[tuple[str, float, float]], top: int = 12
) -> dict[str, float]:
    """Seconds of the idle `gaps` (microseconds) that each named CPU operator (name, start, end) overlapped, the
    `top` largest, largest first, and the idle time no operator overlapped under `NO_OPERATOR`. Operators on
    several threads may overlap the same stretch, so the figures can add up to more than the idle time."""
    totals: dict[str, float] = {}
    covered: list[tuple[float, float]] = []
    ordered = sorted(gaps)
    starts = [g[0] for g in ordered]
    for name, start, end in cpu_ops:
        i = max(bisect.bisect_right(starts, start) - 1, 0)
        while i < len(ordered) and ordered[i][0] < end:
            low, high = max(start, ordered[i][0]), min(end, ordered[i][1])
            if high > low:
                totals[name] = totals.get(name, 0.0) + (high - low) / 1e6
                covered.append((low, high))
            i += 1
    result = dict(sorted(totals.items(), key=lambda item: -item[1])[:top])
    result[NO_OPERATOR] = sum(end - start for start, end in ordered) / 1e6 - covered_seconds(covered)
    return result


def covered_seconds(spans: Sequence[tuple[float, float]]) -> float:
    """Seconds covered by at least one of the (start, end) spans in microseconds: kernels that overlap on several
    streams (compute and NCCL) count once."""
    covered, reached = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reached:
            covered += end - max(start, reached)
            reached = end
    return covered / 1e6
