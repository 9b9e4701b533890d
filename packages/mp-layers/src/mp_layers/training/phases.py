"""`TrainingPhase`: an extra optimizer stepped after the main one in every training step (a GAN
discriminator), and the selection of each optimizer's parameters."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from mp_layers.typecheck import typechecked

LossFn = Callable[[nn.Module, Any], torch.Tensor]
PhaseLossFn = Callable[[nn.Module, Any, int], torch.Tensor]
ParameterSelector = Callable[[nn.Module], Iterable[nn.Parameter]]
OptimizerFactory = Callable[[Any], Optimizer]
_PHASE_NAME = re.compile(r"[a-z][a-z0-9_]*")


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


def select_parameters(
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


def as_scalar(loss: Any, what: str) -> torch.Tensor:
    """`loss` as a 0-d tensor; `ValueError` unless it is a one-element tensor."""
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"{what}: expected a scalar tensor, got {got}")
    return loss.reshape(())


def optimizer_params(optimizer: Any) -> list[torch.Tensor]:
    """The parameters `optimizer` updates, in its order."""
    return [param for group in optimizer.param_groups for param in group["params"]]


def check_phases(phases: object, mixed_precision: str) -> tuple[TrainingPhase, ...]:
    """`phases` as a tuple after the checks a `Trainer` makes: a sequence of `TrainingPhase`s with
    unique names, and no fp16 loss scaling with them."""
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
    if phases and mixed_precision == "fp16":
        raise ValueError(
            "mixed_precision: expected 'bf16' or 'no' with phases (one GradScaler across "
            "several optimizers is not supported; use bf16 or no), got 'fp16'"
        )
    return phases
