"""What the `Trainer`'s progress bar shows beyond the step count."""

from __future__ import annotations

import math
import time

from mp_layers.training.config import TrainerConfig
from mp_layers.training.step import StepOutcome


class _Progress:
    """What the progress bar shows beyond the step count: the share of the step time spent
    waiting for data, the samples per second (of this process), and the step the run will end
    at: `config.steps`, or the step `max_time_s` reaches first at the pace so far."""

    def __init__(self, start_step: int) -> None:
        self.start_step = start_step
        self.data_seconds = 0.0
        self.samples = 0
        self.start = time.perf_counter()

    def add(self, outcome: StepOutcome) -> None:
        self.data_seconds += outcome.data_seconds
        self.samples += outcome.samples

    @property
    def elapsed(self) -> float:
        return max(time.perf_counter() - self.start, 1e-9)

    @property
    def data_share(self) -> float:
        return min(self.data_seconds / self.elapsed, 1.0)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.elapsed

    def tracker_values(self, outcome: StepOutcome, lr: float) -> dict[str, float | None]:
        """The figures of a step the tracker logs (`train/...`)."""
        return {
            "train/loss": outcome.loss,
            "train/lr": lr,
            "train/grad_norm": outcome.grad_norm,
            "train/data_wait": self.data_share,
            "train/clips_per_second": self.samples_per_second,
            **{f"train/loss_{name}": v for name, (v, _) in outcome.phases.items()},
        }

    def expected_total(self, step: int, elapsed: float, config: TrainerConfig) -> int:
        """`config.steps`, or fewer when `config.max_time_s` will end the run first: this call's
        step plus the remaining time over this call's mean seconds per step, rounded up (the run
        stops after the first step that ends past the limit)."""
        if config.max_time_s is None or step <= self.start_step:
            return config.steps
        per_step = elapsed / (step - self.start_step)
        remaining = max(config.max_time_s - elapsed, 0.0)
        return min(config.steps, step + math.ceil(remaining / per_step))
