"""The skeleton every model package's `train` command runs: `TrainJob` -> `run_train_job`.

A package's CLI turns its flags into a config, its own modules build a `TrainJob` from that config
(model, data, loss, optimizer, the run's JSON config), and `run_train_job` does the rest the same
way for every package:

1. write the run config `out_dir/<run_config_file>` atomically (what `sample` rebuilds the model
   from);
2. build the `Trainer` and fit it, timed (`timed_fit`: resume rules, one-line errors);
3. on the main process print what the run did (`print_fit`) and call `report(trainer, result,
   summary)`: the package's sampling and evaluation, which extends `summary`. `print_fit` runs
   first unless `report_first=True` (for commands whose report prints lines that belong above
   the fit summary, e.g. a stage banner);
4. write the summary, with every figure the report added, to `out_dir/report.json`, and close
   the experiment tracker (`--report-to`).

Returns the summary dict (also on the other processes, without the report's figures).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from mp_layers.pretrained import write_config
from mp_layers.training.cli import print_fit, timed_fit
from mp_layers.training.config import TrainerConfig
from mp_layers.training.evaluation import write_report
from mp_layers.training.phases import LossFn, OptimizerFactory
from mp_layers.training.trainer import FitResult, Trainer
from mp_layers.typecheck import typechecked

__all__ = ["Report", "TrainJob", "run_train_job"]

Report = Callable[[Trainer, FitResult, dict[str, Any]], None]


@typechecked
@dataclass
class TrainJob:
    """What a `train` command trains: the `Trainer`'s arguments plus the run's JSON config.

    `trainer_kwargs` go to `Trainer` as they are (`lr_lambda`, `collate_fn`, `sample_fn`,
    `parameters`, `phases`, ...). `held_out`: the data the report evaluates on (the held-out
    part of `held_out_split` for real videos; None: the package's own, e.g. MovingShapes)."""

    model: nn.Module
    data: Any
    loss_fn: LossFn | None
    optimizer_factory: OptimizerFactory
    config: TrainerConfig
    run_config: dict[str, Any]
    run_config_file: str
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    held_out: Any = None


@typechecked
def run_train_job(
    job: TrainJob,
    *,
    resume: str | Path | None = None,
    report: Report | None = None,
    report_first: bool = False,
) -> dict[str, Any]:
    """Write the run config, fit a `Trainer` on `job` (resuming as `resume` says), then on the
    main process print the fit and call `report` (in that order, or `report` first when
    `report_first`). Returns the summary dict."""
    out = Path(job.config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / job.run_config_file, job.run_config)
    trainer = Trainer(
        model=job.model,
        data=job.data,
        optimizer_factory=job.optimizer_factory,
        config=job.config,
        loss_fn=job.loss_fn,
        **job.trainer_kwargs,
    )
    try:
        result, summary = timed_fit(trainer, resume)
        if trainer.accelerator.is_main_process:
            summary.update(
                checkpoint=None if result.checkpoint is None else str(result.checkpoint),
                loss_plot=str(out / "loss.png"),
                final_loss=result.losses[-1] if result.losses else None,
            )
            if report is not None and report_first:
                report(trainer, result, summary)
            print_fit(result, summary, out)
            if report is not None and not report_first:
                report(trainer, result, summary)
            write_report(out, summary)
    finally:
        trainer.end_tracking()
    return summary
