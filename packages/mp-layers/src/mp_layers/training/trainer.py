"""`Trainer`: one training loop on HF Accelerate, from a laptop CPU to many GPUs; `TrainingPhase`:
an extra optimizer stepped after the main one in every step (a GAN discriminator)."""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DistributedDataParallelKwargs,
    DistributedType,
    GradientAccumulationPlugin,
    gather_object,
    send_to_device,
    set_seed,
)
from safetensors.torch import save_model
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler
from torch.utils.data import DataLoader, default_collate
from tqdm.auto import tqdm

from mp_layers.training import checkpoint as ckpt
from mp_layers.training import sharding
from mp_layers.training.config import TrainerConfig
from mp_layers.training.metrics import MetricsLog, plot_loss
from mp_layers.training.sampler import ResumableBatchSampler
from mp_layers.training.samples import write_sample_sheet
from mp_layers.typecheck import typechecked

if TYPE_CHECKING:
    from accelerate.optimizer import AcceleratedOptimizer
    from ema_pytorch import EMA, PostHocEMA

LossFn = Callable[[nn.Module, Any], torch.Tensor]
PhaseLossFn = Callable[[nn.Module, Any, int], torch.Tensor]
ParameterSelector = Callable[[nn.Module], Iterable[nn.Parameter]]
SampleFn = Callable[[nn.Module], torch.Tensor]
OptimizerFactory = Callable[[Any], Optimizer]
SchedulerFactory = Callable[[Optimizer], LRScheduler]
_FORMAT_VERSION = 1
_PHASE_NAME = re.compile(r"[a-z][a-z0-9_]*")


@runtime_checkable
class MapDataset(Protocol):
    """Anything with `len()` and integer indexing (a `torch.utils.data.Dataset` or not)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


class NonFiniteLossError(RuntimeError):
    """Raised when `max_nonfinite_steps` consecutive steps had a non-finite loss or gradient."""


@typechecked
@dataclass(frozen=True)
class TrainingPhase:
    """An extra optimizer stepped after the main one in each training step (e.g. a GAN
    discriminator).

    Fields:
        name: `[a-z][a-z0-9_]*`, unique among a Trainer's phases; names the checkpoint file
            `optimizer-{name}.pt` and the metrics column `loss_{name}`.
        parameters: `bare_model -> parameters` this phase's optimizer updates, called once on the
            unwrapped model when the `Trainer` is built; no parameter may also belong to the main
            optimizer or to another phase.
        optimizer_factory: `params -> Optimizer`, e.g. `partial(torch.optim.Adam, lr=1e-4)`.
        loss_fn: `loss_fn(model, batch, step) -> scalar tensor`, called on the same micro-batches
            as the main loss; `model` is the Accelerate/DDP-wrapped model (call `model(...)`),
            `step` the 0-based index of the training step (`Trainer.step` before it counts this
            one), e.g. for a gradient penalty every N steps.
        max_grad_norm: clip the gradient norm of this phase's parameters; `None` disables.
        every: the phase runs on the steps where `step % every == 0`.
    """

    name: str
    parameters: ParameterSelector
    optimizer_factory: OptimizerFactory
    loss_fn: PhaseLossFn
    max_grad_norm: float | None = None
    every: int = 1

    def __post_init__(self) -> None:
        # Types are checked by @typechecked; these are the value checks.
        if not _PHASE_NAME.fullmatch(self.name):
            raise ValueError(
                f"TrainingPhase.name: expected a name matching [a-z][a-z0-9_]*, got {self.name!r}"
            )
        every = self.every
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(
                f"TrainingPhase {self.name!r}: every: expected an int >= 1, got {every!r}"
            )
        norm = self.max_grad_norm
        if norm is not None and (
            isinstance(norm, bool) or not isinstance(norm, (int, float)) or not norm > 0
        ):
            raise ValueError(
                f"TrainingPhase {self.name!r}: max_grad_norm: expected None or a float > 0, "
                f"got {norm!r}"
            )


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


@dataclass
class _StepOutcome:
    """One training step: the main loss, its pre-clip gradient norm and whether the main optimizer
    stepped, and `(loss, stepped)` of each phase that ran."""

    loss: float
    grad_norm: float | None
    main_finite: bool
    phases: dict[str, tuple[float, bool]]

    @property
    def finite(self) -> bool:
        return self.main_finite and all(ok for _, ok in self.phases.values())


def _select_parameters(
    model: nn.Module,
    main: ParameterSelector | None,
    phases: Sequence[TrainingPhase],
) -> tuple[list[nn.Parameter], list[list[nn.Parameter]]]:
    """The main optimizer's and each phase's parameters of `model`, in their selectors' order;
    each selection non-empty and made of `model`'s parameters, no parameter selected twice (by
    identity)."""
    names = {id(p): name for name, p in model.named_parameters()}
    owners: dict[int, str] = {}

    def select(selector: ParameterSelector, owner: str) -> list[nn.Parameter]:
        chosen = selector(model)
        if isinstance(chosen, torch.Tensor) or not isinstance(chosen, Iterable):
            raise TypeError(
                f"{owner}: parameters: expected an iterable of the model's parameters, "
                f"got {type(chosen).__name__}"
            )
        params = list(chosen)
        if not params:
            raise ValueError(f"{owner}: parameters: expected at least one parameter, got none")
        for param in params:
            if not isinstance(param, torch.Tensor):
                raise TypeError(
                    f"{owner}: parameters: expected parameters of the model, "
                    f"got a {type(param).__name__}"
                )
            if id(param) not in names:
                raise ValueError(
                    f"{owner}: parameters: expected parameters of the model, got a tensor of "
                    f"shape {tuple(param.shape)} that is not in model.parameters()"
                )
            if id(param) in owners:
                other = owners[id(param)]
                where = f"twice by {owner}" if other == owner else f"by both {other} and {owner}"
                hint = (
                    "; the main optimizer takes every parameter unless Trainer(parameters=...) "
                    "selects its own"
                    if main is None and other == "the main optimizer"
                    else ""
                )
                raise ValueError(
                    f"{owner}: parameters: expected no parameter shared between optimizers, got "
                    f"{names[id(param)]!r} selected {where}{hint}"
                )
            owners[id(param)] = owner
        return params

    main_params = select(main or (lambda m: m.parameters()), "the main optimizer")
    phase_params = [select(p.parameters, f"TrainingPhase {p.name!r}") for p in phases]
    return main_params, phase_params


def _as_scalar(loss: Any, what: str) -> torch.Tensor:
    """`loss` as a 0-d tensor; `ValueError` unless it is a one-element tensor."""
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"{what}: expected a scalar tensor, got {got}")
    return loss.reshape(())


def _optimizer_params(optimizer: Any) -> list[torch.Tensor]:
    """The parameters `optimizer` updates, in its order."""
    return [param for group in optimizer.param_groups for param in group["params"]]


class Trainer:
    """Train `model` on `data` with Accelerate; resumable exactly from any checkpoint.

    Args:
        model: the network. Its parameters are optimised; EMA copies follow it.
        data: a map-style `Dataset` (recommended: batched by the deterministic, sharded
            `ResumableBatchSampler`, so resume is exact) or a `DataLoader` (sharded by Accelerate,
            resumed by skipping consumed batches; exact only if its order is deterministic).
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
        data: MapDataset | DataLoader[Any],
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
        if isinstance(phases, (TrainingPhase, str)) or not isinstance(phases, Sequence):
            raise TypeError(
                f"phases: expected a sequence of TrainingPhase, got {type(phases).__name__}"
            )
        phases = tuple(phases)
        for index, phase in enumerate(phases):
            if not isinstance(phase, TrainingPhase):
                raise TypeError(
                    f"phases[{index}]: expected a TrainingPhase, got {type(phase).__name__}"
                )
        phase_names = [phase.name for phase in phases]
        if len(set(phase_names)) != len(phase_names):
            raise ValueError(f"phases: expected unique names, got {phase_names}")
        if phases and config.mixed_precision == "fp16":
            raise ValueError(
                "mixed_precision: expected 'bf16' or 'no' with phases (one GradScaler across "
                "several optimizers is not supported; use bf16 or no), got 'fp16'"
            )
        # Checked on the bare model before Accelerate exists, so a bad selection changes no state.
        main_params, phase_params = _select_parameters(model, parameters, phases)
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
            self._make_ema(model if self._gathered is None else self._gathered)
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
        self._main_params = _optimizer_params(self.optimizer)
        self._phase_params = {
            name: _optimizer_params(opt) for name, opt in self.phase_optimizers.items()
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
        self.metrics = MetricsLog(
            self.out_dir / "metrics.csv", extra_fields=[f"loss_{name}" for name in phase_names]
        )

    def _make_ema(self, model: nn.Module) -> None:
        config = self.config
        if config.ema_beta is not None:
            from ema_pytorch import EMA

            self.ema = EMA(
                model,
                beta=config.ema_beta,
                update_after_step=config.ema_update_after_step,
                update_every=config.ema_update_every,
                include_online_model=False,
            )
        if config.post_hoc_ema_sigma_rels:
            from ema_pytorch import PostHocEMA

            self.post_hoc_ema = PostHocEMA(
                model,
                sigma_rels=config.post_hoc_ema_sigma_rels,
                checkpoint_every_num_steps=config.post_hoc_ema_every,
                checkpoint_folder=str(self.out_dir / "post_hoc_ema"),
                # ema-pytorch's KarrasEMA defaults to updating every 100th call while its beta
                # counts every call: the average then spans far more than sigma_rel of the run
                # (mostly the untrained start). EDM2's power-function EMA updates every step.
                update_every=1,
            )

    @property
    def unwrapped_model(self) -> nn.Module:
        """The bare model (without DDP or other wrappers). Under FSDP its parameters are this
        process's shards (DTensors); `full_model()` gives whole weights."""
        model: nn.Module = self.accelerator.unwrap_model(self.model)
        return model

    def full_model(self) -> nn.Module | None:
        """The model with whole weights: the bare model, or under FSDP the main process's copy
        refreshed from the shards (collective under FSDP: call on every process; `None` on the
        other processes)."""
        if not self._fsdp:
            return self.unwrapped_model
        state = sharding.gather_full_state(self.model)
        if self._gathered is None:
            return None
        self._gathered.load_state_dict(state)
        return self._gathered

    def _ema_reads_weights(self) -> bool:
        """Whether this step's EMA update reads the online weights (the post-hoc EMA: every step;
        ema-pytorch's `EMA`: at its first update and every `update_every`-th one). Known on every
        process, so under FSDP all of them join the gather exactly then: updates happen on
        finite steps only, so the EMA has been updated `step - 1 - skipped_steps` times before."""
        config = self.config
        if config.post_hoc_ema_sigma_rels:
            return True
        if config.ema_beta is None:
            return False
        return (self.step - 1 - self.skipped_steps) % config.ema_update_every == 0

    # ------------------------------------------------------------------ data

    def _batches(self) -> Iterator[Any]:
        """Endless batches for this process, starting at `self.batches_consumed`."""
        accelerator = self.accelerator
        if isinstance(self.data, DataLoader):
            prepared = accelerator.prepare_data_loader(self.data)
            epoch, skip = divmod(self.batches_consumed, len(prepared))
            while True:
                prepared.set_epoch(epoch)
                yield from accelerator.skip_first_batches(prepared, skip) if skip else prepared
                epoch, skip = epoch + 1, 0
        sampler = ResumableBatchSampler(
            num_samples=len(self.data),
            batch_size=self.config.batch_size,
            seed=self.config.seed,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
            start_batch=self.batches_consumed,
        )
        loader: DataLoader[Any] = DataLoader(
            self.data,  # type: ignore[arg-type]  # any map-style dataset works, not only Dataset
            batch_sampler=sampler,
            collate_fn=self.collate_fn,
            num_workers=self.config.num_workers,
            pin_memory=accelerator.device.type == "cuda",
            # Its own generator: creating the iterator must not draw from the global RNG, or a
            # resumed run's random stream would be shifted by one draw.
            generator=torch.Generator().manual_seed(self.config.seed + self.batches_consumed),
        )
        yield from loader

    # ------------------------------------------------------------------ one step

    def _compute_loss(self, batch: Any) -> torch.Tensor:
        model = self._train_model
        loss = model(batch) if self.loss_fn is None else self.loss_fn(model, batch)
        return _as_scalar(loss, "loss")

    def _train_step(self, batches: Iterator[Any]) -> _StepOutcome:
        """Accumulate `grad_accum_steps` micro-batches, then step unless the loss (mean over
        micro-batches and processes) or the clipped gradient norm is non-finite; then the same for
        each phase due at this step, on the same micro-batches."""
        accelerator, config = self.accelerator, self.config
        kept: list[Any] = []  # this step's micro-batches, for the phases
        total = torch.zeros((), device=accelerator.device)
        for _ in range(config.grad_accum_steps):
            batch = send_to_device(next(batches), accelerator.device, non_blocking=True)
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
        outcome = _StepOutcome(loss_value, grad_norm, finite, {})
        for phase in self.phases:
            if self.step % phase.every:
                continue
            total = torch.zeros((), device=accelerator.device)
            for batch in kept:
                with accelerator.accumulate(self.model):
                    loss = _as_scalar(
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

    # ------------------------------------------------------------------ checkpoints

    def _state(self) -> dict[str, Any]:
        return {
            "format_version": _FORMAT_VERSION,
            "step": self.step,
            "batches_consumed": self.batches_consumed,
            "skipped_steps": self.skipped_steps,
            "consecutive_nonfinite": self.consecutive_nonfinite,
            "world_size": self.accelerator.num_processes,
            "config": self.config.to_dict(),
            "phases": [phase.name for phase in self.phases],
            "distributed": "fsdp" if self._fsdp else "ddp",
        }

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (collective: call on every process).

        Returns its folder on the main process and `None` elsewhere."""
        accelerator = self.accelerator
        rng_states = gather_object([ckpt.capture_rng_state()])
        shards = self._save_shards() if self._fsdp else None
        whole = self.full_model()
        path = None
        if accelerator.is_main_process:
            self.metrics.flush()

            def write(folder: Path) -> None:
                assert whole is not None  # the main process holds whole weights
                save_model(whole, str(folder / "model.safetensors"))
                if shards is not None:  # model and optimizer shards, for resuming
                    os.replace(shards, folder / sharding.SHARDED_DIR)
                if self.ema is not None:
                    save_model(self.ema, str(folder / "ema.safetensors"))
                if self.post_hoc_ema is not None:
                    save_model(self.post_hoc_ema, str(folder / "post_hoc_ema.safetensors"))
                if shards is None:
                    torch.save(self.optimizer.optimizer.state_dict(), folder / "optimizer.pt")
                for name, optimizer in self.phase_optimizers.items():
                    torch.save(optimizer.optimizer.state_dict(), folder / f"optimizer-{name}.pt")
                if self.scheduler is not None:
                    torch.save(self.scheduler.state_dict(), folder / "scheduler.pt")
                if accelerator.scaler is not None:
                    torch.save(accelerator.scaler.state_dict(), folder / "scaler.pt")
                torch.save(rng_states, folder / "rng.pt")

            path = ckpt.write_checkpoint(
                self.checkpoint_dir,
                step=self.step,
                write=write,
                state=self._state(),
                keep_last=self.config.keep_last,
            )
        accelerator.wait_for_everyone()
        return path

    def _save_shards(self) -> Path:
        """Every process writes its model and optimizer shards into one staging folder (named by
        the step, so all processes agree; a crash leaves a `.tmp-` folder that the next start
        removes); the main process then moves it into the checkpoint. Collective."""
        staging = self.checkpoint_dir / f".tmp-shards-{ckpt.checkpoint_name(self.step)}"
        if self.accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        sharding.save_sharded(staging, self.model, self.optimizer.optimizer)
        self.accelerator.wait_for_everyone()
        return staging

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore model, EMA, optimizers (the main one and each phase's), scheduler, scaler, RNG
        and data position from `path`."""
        accelerator = self.accelerator
        path = Path(path)
        state = ckpt.read_state(path)
        for name in self.phase_optimizers:
            file = path / f"optimizer-{name}.pt"
            if not file.is_file():
                raise ValueError(
                    f"checkpoint {path}: expected {file} (the optimizer state of TrainingPhase "
                    f"{name!r}), got no such file; was the checkpoint written without this phase?"
                )
        saved_phases = list(state.get("phases", []))
        unknown = [name for name in saved_phases if name not in self.phase_optimizers]
        if unknown:
            raise ValueError(
                f"checkpoint {path}: written with phases {saved_phases}; expected this Trainer to "
                f"have them too, got phases {list(self.phase_optimizers)}"
            )
        written_under = state.get("distributed", "ddp")
        if written_under != ("fsdp" if self._fsdp else "ddp"):
            raise ValueError(
                f"checkpoint {path}: written under distributed={written_under!r} by "
                f"{state['world_size']} processes; expected distributed="
                f"{'fsdp' if self._fsdp else 'ddp'!r} here ({accelerator.num_processes} processes):"
                f" resume with --distributed {written_under} on several processes"
            )
        if self._fsdp:
            sharding.load_sharded(path / sharding.SHARDED_DIR, self.model, self.optimizer.optimizer)
        else:
            ckpt.load_safetensors_into(self.unwrapped_model, path / "model.safetensors")
        for module, name in ((self.ema, "ema"), (self.post_hoc_ema, "post_hoc_ema")):
            file = path / f"{name}.safetensors"
            if module is not None:
                if not file.is_file():
                    raise ValueError(f"checkpoint {path}: {name} is enabled but {file} is missing")
                ckpt.load_safetensors_into(module, file, device=accelerator.device)
        if not self._fsdp:
            self.optimizer.optimizer.load_state_dict(ckpt.load_tensors(path / "optimizer.pt"))
        for name, optimizer in self.phase_optimizers.items():
            optimizer.optimizer.load_state_dict(ckpt.load_tensors(path / f"optimizer-{name}.pt"))
        if self.scheduler is not None:
            self.scheduler.load_state_dict(ckpt.load_tensors(path / "scheduler.pt"))
        if accelerator.scaler is not None and (path / "scaler.pt").is_file():
            accelerator.scaler.load_state_dict(ckpt.load_tensors(path / "scaler.pt"))
        rng_states = ckpt.load_tensors(path / "rng.pt")
        if state["world_size"] != accelerator.num_processes:
            accelerator.print(
                f"warning: checkpoint written by {state['world_size']} processes, resuming on "
                f"{accelerator.num_processes}: data order and RNG streams will differ"
            )
        ckpt.restore_rng_state(rng_states[accelerator.process_index % len(rng_states)])
        self.step = int(state["step"])
        self.batches_consumed = int(state["batches_consumed"])
        self.skipped_steps = int(state["skipped_steps"])
        self.consecutive_nonfinite = int(state["consecutive_nonfinite"])

    def _resolve_resume(self, resume: str | Path | None) -> Path | None:
        """`checkpoint.resolve_resume` (verified; 'latest' skips damaged checkpoints with a
        warning), run on the main process and its outcome (folder or error) sent to the others,
        so the files are hashed once and every process resumes from the same folder or raises."""
        from accelerate.utils import broadcast_object_list

        accelerator = self.accelerator
        outcome: list[Path | Exception | None] = [None]
        if accelerator.is_main_process:
            try:
                outcome[0] = ckpt.resolve_resume(
                    self.checkpoint_dir, resume, warn=accelerator.print
                )
            except Exception as error:  # e.g. CheckpointError: raised on every process below
                outcome[0] = error
        if accelerator.num_processes > 1:
            broadcast_object_list(outcome)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

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
        return write_sample_sheet(videos, path, fps=self.config.sample_fps)

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
        self.model.train()
        batches = self._batches()
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

    def _after_step(self, outcome: _StepOutcome, lr: float, elapsed: float, bar: tqdm[Any]) -> None:
        config = self.config
        loss, grad_norm, finite = outcome.loss, outcome.grad_norm, outcome.finite
        if finite:
            self.consecutive_nonfinite = 0
            if self._fsdp and self._ema_reads_weights():
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
            if self.step % config.log_every == 0:
                self.metrics.flush()
                shown = {
                    f"loss_{name}": f"{value:.4g}" for name, (value, _) in outcome.phases.items()
                }
                bar.set_postfix(
                    loss=f"{loss:.4g}", **shown, skipped=self.skipped_steps, refresh=False
                )
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
