"""One training step of a `Trainer` (`TrainStep`, a mixin): the main loss accumulated over
micro-batches, reduced over processes, clipped and stepped unless non-finite, then each due
`TrainingPhase` on the same micro-batches."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from mp_layers.training.config import TrainerConfig
from mp_layers.training.phases import LossFn, TrainingPhase, as_scalar

if TYPE_CHECKING:
    from accelerate.optimizer import AcceleratedOptimizer


@dataclass
class StepOutcome:
    """One training step: the main loss, its pre-clip gradient norm and whether the main optimizer
    stepped, `(loss, stepped)` of each phase that ran, the seconds spent waiting for the
    step's batches and how many samples they held (on this process)."""

    loss: float
    grad_norm: float | None
    main_finite: bool
    phases: dict[str, tuple[float, bool]]
    data_seconds: float = 0.0
    samples: int = 0

    @property
    def finite(self) -> bool:
        return self.main_finite and all(ok for _, ok in self.phases.values())


def batch_size(batch: Any) -> int:
    """The number of samples in `batch`: the length of its first tensor (a tensor, or a dict,
    list or tuple holding one); 0 when it holds none."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    values = batch.values() if isinstance(batch, dict) else batch
    if isinstance(values, (list, tuple)) or isinstance(batch, dict):
        for value in values:
            if isinstance(value, torch.Tensor) and value.ndim:
                return int(value.shape[0])
    return 0


class TrainStep:
    """The step of a `Trainer`; the attributes below are set up by `Trainer.__init__`."""

    accelerator: Accelerator
    config: TrainerConfig
    model: nn.Module
    _train_model: nn.Module
    loss_fn: LossFn | None
    optimizer: AcceleratedOptimizer
    phase_optimizers: dict[str, AcceleratedOptimizer]
    phases: tuple[TrainingPhase, ...]
    scheduler: LRScheduler | None
    _main_params: list[torch.Tensor]
    _phase_params: dict[str, list[torch.Tensor]]
    _direct_step: bool
    step: int
    batches_consumed: int

    def _compute_loss(self, batch: Any) -> torch.Tensor:
        model = self._train_model
        loss = model(batch) if self.loss_fn is None else self.loss_fn(model, batch)
        return as_scalar(loss, "loss")

    def _train_step(self, batches: Iterator[Any]) -> StepOutcome:
        """Accumulate `grad_accum_steps` micro-batches, then step unless the loss (mean over
        micro-batches and processes) or the clipped gradient norm is non-finite; then the same for
        each phase due at this step, on the same micro-batches."""
        accelerator, config = self.accelerator, self.config
        kept: list[Any] = []  # this step's micro-batches, for the phases
        total = torch.zeros((), device=accelerator.device)
        waited, samples = 0.0, 0
        for _ in range(config.grad_accum_steps):
            start = time.perf_counter()
            batch = next(batches)
            waited += time.perf_counter() - start
            samples += batch_size(batch)
            batch = send_to_device(batch, accelerator.device, non_blocking=True)
            self.batches_consumed += 1
            if self.phases:
                kept.append(batch)
            with accelerator.accumulate(self.model):
                loss = self._compute_loss(batch)
                accelerator.backward(loss)
            total += loss.detach().float()
        loss_value, grad_norm, finite = self._reduce_clip_step(
            self.optimizer, total, self._main_params, config.max_grad_norm
        )
        if finite and self.scheduler is not None and not accelerator.optimizer_step_was_skipped:
            self.scheduler.step()
        # All of the model: the main loss usually reaches the phases' parameters as well.
        self.model.zero_grad(set_to_none=True)
        outcome = StepOutcome(loss_value, grad_norm, finite, {}, waited, samples)
        for phase in self.phases:
            if self.step % phase.every:
                continue
            total = torch.zeros((), device=accelerator.device)
            for batch in kept:
                with accelerator.accumulate(self.model):
                    loss = as_scalar(
                        phase.loss_fn(self._train_model, batch, self.step),
                        f"TrainingPhase {phase.name!r} loss",
                    )
                    accelerator.backward(loss)
                total += loss.detach().float()
            phase_loss, _, phase_finite = self._reduce_clip_step(
                self.phase_optimizers[phase.name],
                total,
                self._phase_params[phase.name],
                phase.max_grad_norm,
            )
            self.model.zero_grad(set_to_none=True)
            outcome.phases[phase.name] = (phase_loss, phase_finite)
        return outcome

    def _reduce_clip_step(
        self,
        optimizer: AcceleratedOptimizer,
        total: torch.Tensor,
        params: list[torch.Tensor],
        max_grad_norm: float | None,
    ) -> tuple[float, float | None, bool]:
        """Mean loss over micro-batches and processes, pre-clip gradient norm of `params` (when
        clipping), and whether `optimizer` stepped (both finite)."""
        accelerator, config = self.accelerator, self.config
        mean_loss = accelerator.reduce(total / config.grad_accum_steps, reduction="mean")
        loss_value = float(mean_loss.item())
        grad_norm: float | None = None
        finite = math.isfinite(loss_value)
        if finite and max_grad_norm is not None:
            grad_norm = float(accelerator.clip_grad_norm_(params, max_grad_norm))
            # Under fp16 an infinite norm is the loss scaler's business (it skips and rescales).
            finite = math.isfinite(grad_norm) or config.mixed_precision == "fp16"
        if finite:
            (optimizer.optimizer if self._direct_step else optimizer).step()
        return loss_value, grad_norm, finite
