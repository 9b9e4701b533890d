"""Experiment trackers for `Trainer`, through Accelerate's tracking API (`log_with`).

`TrainerConfig.report_to` picks one: 'none' (default: `metrics.csv` and `loss.png` only),
'tensorboard' (event files under `out_dir/tracking/<project>`; `tensorboard --logdir
out_dir/tracking`), 'wandb' or 'trackio'. The trainer logs `train/loss`, `train/lr`,
`train/grad_norm`, `train/data_wait` (the share of the step spent waiting for data) and
`train/clips_per_second` every `log_every` steps; reports add held-out figures with
`Trainer.log` and sample videos with `Trainer.log_videos` (TensorBoard: a strip of frames per
video sheet, wandb: a `wandb.Video`, trackio: scalars only).

A tracker whose package is missing is refused before anything runs, naming what to install.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from mp_layers.training.config import REPORT_TO, TrainerConfig
from mp_layers.typecheck import typechecked

__all__ = ["REPORT_TO", "check_tracker", "log_videos", "tracker_hparams"]

_INSTALL = {
    "tensorboard": "pip install 'mp-layers[tensorboard]' (the tensorboard package)",
    "wandb": "pip install 'mp-layers[wandb]' (the wandb package)",
    "trackio": "pip install trackio",
}


@typechecked
def check_tracker(report_to: str) -> None:
    """Raise `ValueError` when `report_to` is not one of `REPORT_TO` or its package is missing."""
    if report_to not in REPORT_TO:
        raise ValueError(f"--report-to: expected one of {REPORT_TO}, got {report_to!r}")
    if report_to == "none":
        return
    from accelerate.utils import is_tensorboard_available, is_trackio_available, is_wandb_available

    available = {
        "tensorboard": is_tensorboard_available,
        "wandb": is_wandb_available,
        "trackio": is_trackio_available,
    }[report_to]()
    if not available:
        raise ValueError(
            f"--report-to {report_to}: the {report_to} package is not installed; "
            f"{_INSTALL[report_to]}"
        )


@typechecked
def tracker_hparams(config: TrainerConfig) -> dict[str, Any]:
    """The config values trackers accept as hyper-parameters (numbers, strings, booleans)."""
    hparams: dict[str, Any] = {}
    for key, value in config.to_dict().items():
        if isinstance(value, (bool, int, float, str)):
            hparams[key] = value
        elif isinstance(value, list):
            hparams[key] = ",".join(str(v) for v in value)
    return hparams


def start_trackers(accelerator: Accelerator, config: TrainerConfig) -> None:
    """Start the run's tracker (a no-op for 'none'); on every process, as Accelerate asks."""
    if config.report_to == "none":
        return
    project = config.tracker_project or Path(config.out_dir).resolve().name
    accelerator.init_trackers(project, config=tracker_hparams(config))


def log_scalars(accelerator: Accelerator, values: dict[str, float | None], step: int) -> None:
    """Log finite scalar `values` at `step` to the run's trackers (non-finite ones are left out:
    some trackers reject NaN)."""
    if not accelerator.trackers:
        return
    finite = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
    if finite:
        accelerator.log(finite, step=step)


@typechecked
def log_videos(
    accelerator: Accelerator, name: str, videos: torch.Tensor, *, step: int, fps: int = 8
) -> None:
    """Log a sheet of `videos` (B, C, F, H, W) in [0, 1] to the run's trackers as `name`."""
    if not accelerator.trackers or not accelerator.is_main_process:
        return
    from mp_layers.video import video_grid

    if videos.ndim != 5:
        raise ValueError(f"videos: expected (b, c, f, h, w), got {tuple(videos.shape)}")
    grid = video_grid(
        videos.detach().float().clamp(0, 1).cpu(), nrow=math.ceil(videos.shape[0] ** 0.5)
    )
    frames = grid.permute(1, 0, 2, 3)  # (F, C, H, W)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_images(name, frames, global_step=step, dataformats="NCHW")
            tracker.writer.flush()
        elif tracker.name == "wandb":
            import wandb

            pixels = frames.mul(255).round().to(torch.uint8).numpy()
            tracker.log({name: wandb.Video(pixels, fps=fps, format="gif")}, step=step)
