"""Training of a demo run: the run config on disk, then the shared `mp_layers.training.Trainer`
(Adam, a linear learning-rate warm-up, EMA weights, checkpoints, metrics, loss plot)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mp_layers.pretrained import write_config
from video_ddpm.demo.config import CONFIG_FILE, TrainSettings
from video_ddpm.demo.data import make_loss_fn
from video_ddpm.gaussian_diffusion import GaussianDiffusion

if TYPE_CHECKING:
    from mp_layers.training import FitResult, Trainer, TrainerConfig

__all__ = ["fit", "write_run_config"]


def write_run_config(out: Path, run_config: dict[str, Any]) -> None:
    """Write `out/config.json` (atomically; `out` is created), what `video-ddpm sample` rebuilds
    the model from."""
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / CONFIG_FILE, run_config)


def fit(
    model: GaussianDiffusion,
    data: Any,
    settings: TrainSettings,
    config: TrainerConfig,
    *,
    resume: str | Path | None,
) -> tuple[Trainer, FitResult, dict[str, Any]]:
    """Train `model` on `data` with Adam (`settings.lr`, warmed up linearly over
    `settings.warmup_steps`) as `config` says, resuming as `resume` says (`timed_fit`).

    Returns the trainer, its `FitResult` and the summary dict `{"step", "train_seconds",
    "time_limit_reached"}`.
    """
    from mp_layers.training import Trainer, timed_fit
    from mp_layers.video import collate_videos

    warmup = max(settings.warmup_steps, 1)
    trainer = Trainer(
        model=model,
        data=data,
        optimizer_factory=partial(torch.optim.Adam, lr=settings.lr),
        config=config,
        loss_fn=make_loss_fn(settings.cond, settings.num_classes),
        lr_lambda=lambda step: min(1.0, (step + 1) / warmup),
        collate_fn=collate_videos,
    )
    result, summary = timed_fit(trainer, resume)
    return trainer, result, summary
