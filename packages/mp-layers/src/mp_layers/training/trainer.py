"""`Trainer`: one training loop on HF Accelerate, from a laptop CPU to many GPUs.

Composed of: `phases.py` (`TrainingPhase`, an extra optimizer stepped after the main one in every
step, e.g. a GAN discriminator), `ema.py` (the EMA copies), `state.py` (`TrainState`: what a
checkpoint holds, saving, loading and choosing one), `sampler.py` (the resumable data order).
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DistributedDataParallelKwargs,
    DistributedType,
    GradientAccumulationPlugin,
    set_seed,
)
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler
from torch.utils.data import DataLoader, IterableDataset, default_collate
from tqdm.auto import tqdm

from mp_layers.training import checkpoint as ckpt
from mp_layers.training import sharding, trackers
from mp_layers.training.config import TrainerConfig
from mp_layers.training.data import endless_batches
from mp_layers.training.ema import ema_reads_weights, make_ema
from mp_layers.training.metrics import MetricsLog, plot_loss
from mp_layers.training.phases import (
    LossFn,
    OptimizerFactory,
    ParameterSelector,
    TrainingPhase,
    check_phases,
    optimizer_params,
    select_parameters,
)
from mp_layers.training.progress import _Progress
from mp_layers.training.samples import write_sample_sheet
from mp_layers.training.state import TrainState
from mp_layers.training.step import StepOutcome, TrainStep
from mp_layers.typecheck import typechecked

if TYPE_CHECKING:
    from accelerate.optimizer import AcceleratedOptimizer
    from ema_pytorch import EMA, PostHocEMA

SampleFn = Callable[[nn.Module], torch.Tensor]
SchedulerFactory = Callable[[Optimizer], LRScheduler]
__all__ = ["FitResult", "NonFiniteLossError", "Trainer", "TrainingPhase"]


@runtime_checkable
class MapDataset(Protocol):
    """Anything with `len()` and integer indexing (a `torch.utils.data.Dataset` or not)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


class NonFiniteLossError(RuntimeError):
    """Raised when `max_nonfinite_steps` consecutive steps had a non-finite loss or gradient."""


@typechecked
@dataclass
class FitResult:
    """What `Trainer.fit` did: final step, per-step losses of this call (NaN where the main
    optimizer skipped a non-finite step), each `TrainingPhase`'s per-step losses by name (NaN
    where the phase did not run or was non-finite), total skipped steps of the run, the
    checkpoint it resumed from, the last one written, and whether it stopped early at
    `config.max_time_s`."""

    step: int
    losses: list[float] = field(default_factory=list)
    skipped_steps: int = 0
    resumed_from: Path | None = None
    checkpoint: Path | None = None
    time_limit_reached: bool = False
    phase_losses: dict[str, list[float]] = field(default_factory=dict)


class Trainer(TrainStep, TrainState):
    """Train `model` on `data` with Accelerate; resumable exactly from any checkpoint.

    Args:
        model: the network. Its parameters are optimised; EMA copies follow it.
        data: a map-style `Dataset` (recommended: batched by the deterministic, sharded
            `ResumableBatchSampler`, so resume is exact) or a `DataLoader` (sharded by Accelerate,
            resumed by skipping consumed batches; exact only if its order is deterministic), or
            an `IterableDataset` that splits itself by process and worker (`VideoShards`;
            batched with `config.num_workers` workers; a resumed run reads a fresh stream).
        optimizer_factory: `params -> Optimizer`, e.g. `partial(torch.optim.Adam, lr=1e-3)`.
        config: a `TrainerConfig` (defaults if omitted).
        loss_fn: `loss_fn(model, batch) -> scalar tensor`; it must call `model(...)` (the
            Accelerate/DDP-wrapped model). Omitted: `model(batch)` must return the loss.
        lr_lambda: `step -> lr multiplier` (a `LambdaLR`); `step` counts optimizer steps.
        scheduler_factory: `optimizer -> LRScheduler`, stepped once per optimizer step (exclusive
            with `lr_lambda`).
        sample_fn: `sample_fn(model) -> videos (B, C, F, H, W)` in [0, 1], called on the main
            process every `config.sample_every` steps with the EMA model (or the model) in eval mode
            under `torch.no_grad()`; written to `out_dir/samples/step-XXXXXXXXX.gif`.
        collate_fn: batch collation for a `Dataset` (default `torch.utils.data.default_collate`,
            which stacks tensors and keeps strings as lists).
        parameters: `bare_model -> parameters` the main optimizer updates (default: all of
            `model.parameters()`); needed with `phases`, whose parameters it must not include.
        phases: `TrainingPhase`s, extra optimizers stepped in order after the main one in each
            step (GAN training: the generator is the main phase, the discriminator a phase).

    One step: the main loss is accumulated over `grad_accum_steps` micro-batches, clipped to
    `config.max_grad_norm` and stepped (then the scheduler). Then all of the model's gradients are
    cleared (the main loss usually back-propagates into the phases' parameters too), and each phase
    whose `every` divides the step accumulates its own loss over the same micro-batches, clips its
    parameters to its `max_grad_norm`, steps its optimizer and clears the gradients again. Every
    optimizer skips its update when its loss or clipped gradient norm is non-finite; the step
    counts as skipped (metrics, `FitResult.skipped_steps`, `max_nonfinite_steps`, no EMA update)
    when any optimizer that ran in it skipped. With phases, DDP runs with
    `find_unused_parameters=True` and `mixed_precision='fp16'` is refused (one loss scaler across
    several optimizers is not supported).

    Batches are moved to the device with `accelerate.utils.send_to_device`. The run writes only on
    the main process: `checkpoints/` (a phase's optimizer state in `optimizer-{name}.pt`),
    `samples/`, `metrics.csv` (a `loss_{name}` column per phase), `loss.png`, `post_hoc_ema/`.
    """

    @typechecked
    def __init__(
        self,
        *,
        model: nn.Module,
        data: MapDataset | IterableDataset[Any] | DataLoader[Any],
        optimizer_factory: OptimizerFactory,
        config: TrainerConfig | None = None,
        loss_fn: LossFn | None = None,
        lr_lambda: Callable[[int], float] | None = None,
        scheduler_factory: SchedulerFactory | None = None,
        sample_fn: SampleFn | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        parameters: ParameterSelector | None = None,
        phases: Sequence[TrainingPhase] = (),
    ) -> None:
        # Argument types (a Module, a map-style dataset or a DataLoader, callables) are checked by
        # @typechecked; what follows are the checks of values and combinations.
        if isinstance(data, DataLoader) and collate_fn is not None:
            raise ValueError("collate_fn: expected None when data is a DataLoader (it has its own)")
        if lr_lambda is not None and scheduler_factory is not None:
            raise ValueError("lr_lambda and scheduler_factory: expected at most one, got both")
        config = TrainerConfig() if config is None else config
        if config.sample_every and sample_fn is None:
            raise ValueError(f"sample_every={config.sample_every} needs a sample_fn, got None")
        trackers.check_tracker(config.report_to)
        phases = check_phases(phases, config.mixed_precision)
        phase_names = [phase.name for phase in phases]
        # Checked on the bare model before Accelerate exists, so a bad selection changes no state.
        main_params, phase_params = select_parameters(model, parameters, phases)
        self._fsdp = sharding.wants_fsdp(config)
        if self._fsdp and phases:
            raise ValueError(
                "phases: expected no TrainingPhase under distributed='fsdp' (one sharded optimizer "
                f"per model), got {phase_names}"
            )
        plugin = sharding.fsdp_plugin() if self._fsdp else None

        self.config = config
        self.out_dir = Path(config.out_dir)
        self.loss_fn = loss_fn
        self.sample_fn = sample_fn
        self.collate_fn = collate_fn or default_collate
        self.data = data
        self.phases: tuple[TrainingPhase, ...] = phases
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            cpu=config.cpu or sharding.cpu_processes(),
            gradient_accumulation_plugin=GradientAccumulationPlugin(
                num_steps=config.grad_accum_steps, sync_with_dataloader=False
            ),
            # Each phase's loss (and often the main one) reaches only part of the model.
            kwargs_handlers=(
                [DistributedDataParallelKwargs(find_unused_parameters=True)] if phases else None
            ),
            fsdp_plugin=plugin,
            log_with=None if config.report_to == "none" else config.report_to,
            project_dir=str(self.out_dir / "tracking"),
        )
        accelerator = self.accelerator
        if plugin is not None:
            sharding.ensure_fsdp(accelerator, plugin)
        set_seed(config.seed, device_specific=True)
        # `AcceleratedOptimizer.step` probes the file system for an optional package (lomo) twice
        # per call, uncached, and its `zero_grad` calls `inspect.signature` (together ~1 ms a step
        # on a small CPU model). Without a loss scaler and outside XLA / DeepSpeed / Megatron both
        # only forward to the wrapped optimizer (DDP has already reduced the gradients, and this
        # loop steps and zeroes only after the sync micro-batch), so call that one directly.
        self._direct_step = accelerator.scaler is None and accelerator.distributed_type not in (
            DistributedType.XLA,
            DistributedType.DEEPSPEED,
            DistributedType.MEGATRON_LM,
        )

        # EMA copies live on the main process only (they are saved and sampled there). They are
        # made before `prepare`, which may patch `model.forward` with autocast.
        self.ema: EMA | None = None
        self.post_hoc_ema: PostHocEMA | None = None
        # Under FSDP the main process keeps a whole copy of the model that `_gather` fills from the
        # shards: the EMA copies follow it, sampling and `model.safetensors` use it.
        self._gathered: nn.Module | None = None
        if accelerator.is_main_process:
            if self._fsdp:
                self._gathered = copy.deepcopy(model).requires_grad_(False)
            self.ema, self.post_hoc_ema = make_ema(
                config, model if self._gathered is None else self._gathered, self.out_dir
            )
        optimizer = optimizer_factory(main_params)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer_factory: expected it to return a torch Optimizer, "
                f"got {type(optimizer).__name__}"
            )
        phase_optimizers = []
        for phase, params in zip(phases, phase_params, strict=True):
            phase_optimizer = phase.optimizer_factory(params)
            if not isinstance(phase_optimizer, Optimizer):
                raise TypeError(
                    f"TrainingPhase {phase.name!r}: optimizer_factory: expected it to return a "
                    f"torch Optimizer, got {type(phase_optimizer).__name__}"
                )
            phase_optimizers.append(phase_optimizer)
        self.model, self.optimizer, *prepared = accelerator.prepare(
            model, optimizer, *phase_optimizers
        )
        # What the losses call: the prepared model, compiled when asked (`self.model` stays the
        # uncompiled wrapper for Accelerate's gradient-sync context and for saving).
        self._train_model: nn.Module = (
            torch.compile(self.model, backend=config.compile_backend)  # type: ignore[assignment]
            if config.compile
            else self.model
        )
        self._compiled_samplers: dict[int, nn.Module] = {}
        # Each phase's prepared (Accelerate-wrapped) optimizer by name.
        self.phase_optimizers: dict[str, AcceleratedOptimizer] = dict(
            zip(phase_names, prepared, strict=True)
        )
        # What each optimizer updates (and clips): its own parameter list.
        self._main_params = optimizer_params(self.optimizer)
        self._phase_params = {
            name: optimizer_params(opt) for name, opt in self.phase_optimizers.items()
        }
        for ema in (self.ema, self.post_hoc_ema, self._gathered):
            if ema is not None:
                ema.to(accelerator.device)
        # The scheduler is deliberately not passed to `prepare`: Accelerate would step it once per
        # process per step, while `lr_lambda(step)` here means optimizer steps on any world size.
        self.scheduler: LRScheduler | None = None
        if lr_lambda is not None:
            self.scheduler = LambdaLR(self.optimizer.optimizer, lr_lambda)
        elif scheduler_factory is not None:
            self.scheduler = scheduler_factory(self.optimizer.optimizer)

        self.step = 0
        self.batches_consumed = 0
        self.skipped_steps = 0
        self.consecutive_nonfinite = 0
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self._trackers_started = False
        self.metrics = MetricsLog(
            self.out_dir / "metrics.csv", extra_fields=[f"loss_{name}" for name in phase_names]
        )

    # ------------------------------------------------------------------ data

    def _batches(self) -> Iterator[Any]:
        """Endless batches for this process, starting at `self.batches_consumed`."""
        return endless_batches(
            self.data,
            self.accelerator,
            self.config,
            start=self.batches_consumed,
            collate_fn=self.collate_fn,
        )

    # ------------------------------------------------------------------ sampling

    def sample(self) -> Path | None:
        """Call `sample_fn` with the EMA model (or the model) and write the GIF sheet (main
        process only; returns its path there, `None` elsewhere). Under FSDP without EMA the whole
        weights are gathered first: call it on every process."""
        if self.sample_fn is None:
            return None
        uses_ema = self.config.ema_beta is not None
        full = None if uses_ema and self._fsdp else self.full_model()
        if not self.accelerator.is_main_process:
            return None
        model = full
        if self.ema is not None and isinstance(self.ema.ema_model, nn.Module):
            model = self.ema.ema_model
        assert model is not None  # the main process always holds whole weights
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                videos = self.sample_fn(self._sampling_network(model))
        finally:
            model.train(was_training)
        path = self.out_dir / "samples" / f"{ckpt.checkpoint_name(self.step)}.gif"
        self.log_videos("samples", videos)
        return write_sample_sheet(videos, path, fps=self.config.sample_fps)

    # ------------------------------------------------------------------ trackers

    def start_tracking(self) -> None:
        """Start the `config.report_to` tracker once (`fit` does; a no-op for 'none')."""
        if not self._trackers_started:
            trackers.start_trackers(self.accelerator, self.config)
            self._trackers_started = True

    def log(self, values: dict[str, float | None], *, step: int | None = None) -> None:
        """Log scalars (e.g. held-out figures `{"held_out/loss": 0.12}`) to the tracker at `step`
        (default: the current step); non-finite values are left out."""
        self.start_tracking()
        trackers.log_scalars(self.accelerator, values, self.step if step is None else step)

    def log_videos(self, name: str, videos: torch.Tensor, *, step: int | None = None) -> None:
        """Log a sheet of `videos` (B, C, F, H, W) in [0, 1] to the tracker (main process)."""
        self.start_tracking()
        step = self.step if step is None else step
        trackers.log_videos(self.accelerator, name, videos, step=step, fps=self.config.sample_fps)

    def end_tracking(self) -> None:
        """Flush and close the tracker (`run_train_job` calls it after the report)."""
        if self._trackers_started:
            self.accelerator.end_training()
            self._trackers_started = False

    def _sampling_network(self, model: nn.Module) -> nn.Module:
        """`model`, compiled once per model when `config.compile` is set."""
        if not self.config.compile:
            return model
        if id(model) not in self._compiled_samplers:
            compiled = torch.compile(model, backend=self.config.compile_backend)
            self._compiled_samplers[id(model)] = compiled  # type: ignore[assignment]
        return self._compiled_samplers[id(model)]

    # ------------------------------------------------------------------ the loop

    def fit(self, *, resume: str | Path | None = None) -> FitResult:
        """Train until `config.steps` (or until `config.max_time_s`). `resume`: None (fresh;
        refuses an out_dir that already has checkpoints), 'latest' (newest complete checkpoint,
        or fresh if none) or a folder.

        Raises `NonFiniteLossError` after `max_nonfinite_steps` consecutive non-finite steps; the
        last checkpoint on disk is then the last good one (a non-finite loss or gradient never
        reaches the weights; with phases, the optimizers that stayed finite in a skipped step did
        step).
        """
        accelerator, config = self.accelerator, self.config
        if accelerator.is_main_process:
            ckpt.remove_stale_temporaries(self.checkpoint_dir)
        accelerator.wait_for_everyone()
        start = self._resolve_resume(resume)
        result = FitResult(
            step=self.step,
            resumed_from=start,
            checkpoint=start,
            phase_losses={phase.name: [] for phase in self.phases},
        )
        if start is not None:
            self.load_checkpoint(start)
        if accelerator.is_main_process:
            if start is None and self.metrics.path.exists():
                self.metrics.path.unlink()  # a fresh run in an out_dir without checkpoints
            self.metrics.truncate(self.step)
            if self.post_hoc_ema is not None and start is None:
                shutil.rmtree(self.out_dir / "post_hoc_ema", ignore_errors=True)
                (self.out_dir / "post_hoc_ema").mkdir(parents=True)
        self.start_tracking()
        self.model.train()
        batches = self._batches()
        self._progress = _Progress(self.step)
        bar = tqdm(
            total=config.steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            disable=not (config.progress_bar and accelerator.is_main_process),
        )
        t0 = time.perf_counter()
        try:
            while self.step < config.steps:
                lr = float(self.optimizer.param_groups[0]["lr"])  # the rate this step uses
                outcome = self._train_step(batches)
                self.step += 1
                result.losses.append(outcome.loss if outcome.main_finite else math.nan)
                for name, losses in result.phase_losses.items():
                    phase_loss, phase_finite = outcome.phases.get(name, (math.nan, False))
                    losses.append(phase_loss if phase_finite else math.nan)
                self._progress.add(outcome)
                self._after_step(outcome, lr, time.perf_counter() - t0, bar)
                if config.sample_every and self.step % config.sample_every == 0:
                    self.sample()
                if config.save_every and self.step % config.save_every == 0:
                    result.checkpoint = self.save_checkpoint() or result.checkpoint
                limit = config.max_time_s
                if limit is not None and self._time_is_up(time.perf_counter() - t0, limit):
                    result.time_limit_reached = True
                    break
            if not (config.save_every and self.step % config.save_every == 0):
                result.checkpoint = self.save_checkpoint() or result.checkpoint
        finally:
            bar.close()
            if accelerator.is_main_process:
                self.metrics.flush()
                if self.metrics.path.exists():
                    plot_loss(self.metrics.path, self.out_dir / "loss.png")
        result.step, result.skipped_steps = self.step, self.skipped_steps
        return result

    def _time_is_up(self, elapsed: float, limit: float) -> bool:
        """Whether `limit` seconds have passed on any process (all processes agree, so they stop
        at the same step and none waits in a collective for the others)."""
        late = torch.tensor(float(elapsed >= limit), device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            late = self.accelerator.reduce(late, reduction="sum")
        return bool(late.item() > 0)

    def _after_step(self, outcome: StepOutcome, lr: float, elapsed: float, bar: tqdm[Any]) -> None:
        config = self.config
        loss, grad_norm, finite = outcome.loss, outcome.grad_norm, outcome.finite
        if finite:
            self.consecutive_nonfinite = 0
            if self._fsdp and ema_reads_weights(self.config, self.step, self.skipped_steps):
                self.full_model()  # the EMA copies follow the gathered model
            for ema in (self.ema, self.post_hoc_ema):
                if ema is not None:
                    ema.update()
        else:
            self.skipped_steps += 1
            self.consecutive_nonfinite += 1
        if self.accelerator.is_main_process:
            phase_columns = {  # empty where the phase did not run
                f"loss_{name}": repr(outcome.phases[name][0]) if name in outcome.phases else ""
                for name in self.phase_optimizers
            }
            self.metrics.append(
                {
                    "step": self.step,
                    "loss": repr(loss),
                    "lr": repr(lr),
                    "grad_norm": "" if grad_norm is None else repr(grad_norm),
                    "skipped": int(not finite),
                    "time_s": f"{elapsed:.4f}",
                    **phase_columns,
                }
            )
            progress = self._progress
            if self.step % config.log_every == 0 or self.step == progress.start_step + 1:
                self.metrics.flush()
                shown = {
                    f"loss_{name}": f"{value:.4g}" for name, (value, _) in outcome.phases.items()
                }
                bar.total = progress.expected_total(self.step, elapsed, config)
                bar.set_postfix(
                    loss=f"{loss:.4g}",
                    **shown,
                    skipped=self.skipped_steps,
                    data=f"{progress.data_share:.0%}",
                    clips_s=f"{progress.samples_per_second:.3g}",
                    refresh=False,
                )
                self.log(progress.tracker_values(outcome, lr))
            bar.update(1)
        if self.consecutive_nonfinite >= config.max_nonfinite_steps:
            phase_text = "".join(
                f", loss_{name} {value}" for name, (value, _) in outcome.phases.items()
            )
            raise NonFiniteLossError(
                f"stopped at step {self.step}: {self.consecutive_nonfinite} consecutive steps with "
                f"a non-finite loss or gradient norm (max_nonfinite_steps="
                f"{config.max_nonfinite_steps}); last loss {loss}{phase_text}. The newest "
                f"checkpoint in {self.checkpoint_dir} is the last good state; lower the learning "
                "rate, enable max_grad_norm or use bf16 instead of fp16."
            )
