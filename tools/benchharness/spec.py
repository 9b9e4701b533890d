"""What a benchmark spec declares: its sides, its timed steps, its memory kinds and its table."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from benchharness.run import Run


@dataclass(frozen=True)
class Side:
    """One row of the table: a worker process that the spec's `build(name, params)` fills.

    `reference`: the worker runs under `--ref-python` (else under the driver's own interpreter).
    """

    name: str
    reference: bool = False


@dataclass(frozen=True)
class Column:
    """One column of the table: the median time of a step, or the peak memory of a step.

    `key` is a step of the sides' `Workload`. A time column with `per_step=True` (the default)
    makes the harness time that step interleaved (the columns' order is the timing order); with
    `per_step=False` the spec's `after_timing` records its times. With `memory=True` the harness
    measures the step's peak memory. The "reference / ours" row shows, for an interleaved time,
    the median of the per-step ratios, else the ratio of the medians. `suffix`: text after a side's
    cell (e.g. " (est.)"). `target`: the least acceptable ratio (a target and a met row).
    """

    title: str
    key: str
    memory: bool = False
    fmt: str = ""
    ratio_fmt: str = ".2f"
    per_step: bool = True
    suffix: dict[str, str] = field(default_factory=dict)
    target: float | None = None
    target_note: str = ""

    @property
    def cell_fmt(self) -> str:
        return self.fmt or (".0f" if self.memory else ".3f")


def no_higher(title: str, kind: str) -> Column:
    """A peak-memory column whose target is ours no higher than the reference's."""
    return Column(title, kind, memory=True, target=1.0, target_note=" (no higher)")


@dataclass
class Workload:
    """What a side's `build` returns, inside its worker process.

    `steps`: the callables the harness times or measures, by name. `info`: JSON values the
    driver receives (parameter counts, checks), on top of the torch version and thread count.
    `same`: JSON values that must be equal on every side (input and weight checksums).
    """

    steps: dict[str, Callable[[], object]]
    info: dict[str, Any] = field(default_factory=dict)
    same: dict[str, Any] = field(default_factory=dict)


def train_step(
    model: Any, loss: Callable[[], Any], parameters: Any = None, lr: float = 1e-4
) -> Callable[[], None]:
    """A training step for a `Workload`: `model.train()`, `loss().backward()`, an Adam step over
    `parameters` (the model's by default), gradients dropped (inside a worker: imports torch)."""
    import torch

    opt = torch.optim.Adam(model.parameters() if parameters is None else parameters, lr=lr)

    def step() -> None:
        model.train()
        loss().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _no_params(args: argparse.Namespace) -> dict[str, Any]:
    return {}


def _no_lines(run: Run) -> list[str]:
    return []


@dataclass(frozen=True)
class Bench:
    """A spec: WHAT is compared. The harness (`benchharness.main`) decides HOW.

    - `file`: the spec's `__file__`; each worker imports it and calls its `build(side, params)`.
    - `description`: the command's help (the spec's docstring).
    - `columns`: the table (or a function of the parsed arguments returning it); they also say
      which steps are timed interleaved and which are measured for memory.
    - `params`: the JSON configuration every worker receives (`threads` and `device` are added).
    - `setting`: the header's words on the inputs ("batch 2 x 9 frames, fp32").
    - `describe` / `footer`: more lines before / after the table, from the finished run.
    - `after_timing`: more timings while the workers still run (`Run.time`, `Run.times`).
    - `arguments`: adds the spec's own command-line flags.
    """

    file: str
    description: str
    columns: list[Column] | Callable[[argparse.Namespace], list[Column]]
    setting: Callable[[argparse.Namespace], str]
    ref_python: str
    params: Callable[[argparse.Namespace], dict[str, Any]] = _no_params
    sides: tuple[Side, ...] = (Side("ours"), Side("reference", reference=True))
    describe: Callable[[Run], list[str]] = _no_lines
    footer: Callable[[Run], list[str]] = _no_lines
    after_timing: Callable[[Run], None] | None = None
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    steps: int = 10
    steps_flag: str = "--steps"
    rounds: int = 3
    threads: int | None = 2
    warmup: int = 2
    env: dict[str, str] = field(default_factory=dict)
    ratio_label: str = "reference / ours"
