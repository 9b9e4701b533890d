"""Training of a demo run on the shared train-command skeleton (`mp_layers.training.TrainJob`,
`run_train_job`): the run's `TrainJob` (data, a fresh model, Adam with a linear learning-rate
warm-up, the run config) and what the run reports once fitted (a sample sheet of the EMA weights
and its quality figures)."""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mp_layers.pretrained import write_config
from video_ddpm.demo.config import CONFIG_FILE, SampleSettings, TrainSettings
from video_ddpm.demo.data import build_data, make_loss_fn
from video_ddpm.demo.evaluation import evaluate
from video_ddpm.demo.models import build_model, make_run_config, sampling_model
from video_ddpm.demo.real_data import real_data_prompts, report_real_data, resolve_cond
from video_ddpm.demo.report import report_training
from video_ddpm.gaussian_diffusion import GaussianDiffusion

if TYPE_CHECKING:
    from mp_layers.training import FitResult, Trainer, TrainerConfig, TrainJob

__all__ = ["report_run", "train_job", "write_run_config"]


def write_run_config(out: Path, run_config: dict[str, Any]) -> None:
    """Write `out/config.json` (atomically; `out` is created), what `video-ddpm sample` rebuilds
    the model from (`run_train_job` writes it so when a run starts)."""
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / CONFIG_FILE, run_config)


def train_job(settings: TrainSettings, config: TrainerConfig) -> TrainJob:
    """The `TrainJob` of a run: its data (`build_data`), a fresh model (`build_model`) trained
    with the loss of its conditioning, Adam (`settings.lr`, warmed up linearly over
    `settings.warmup_steps`), the `Trainer` settings `config`, and the run config
    (`make_run_config`, written to `config.json`)."""
    from mp_layers.training import TrainJob, held_out_split
    from mp_layers.video import collate_videos

    data = build_data(settings)
    cond = resolve_cond(settings.cond, data)
    settings = replace(
        settings, cond=cond, num_classes=settings.num_classes if cond == "class" else None
    )
    held_out = None
    extra: dict[str, Any] = {"data": "synthetic"}
    if settings.data != "synthetic":  # the user's videos: train on a part, report on the rest
        split = held_out_split(data)
        data, held_out = split.train, split.held_out
        extra = {"data": "videos", "held_out": split.description}
        if cond == "text":
            extra["sample_prompts"] = real_data_prompts(held_out, data)
    model = build_model(settings)
    warmup = max(settings.warmup_steps, 1)
    return TrainJob(
        model=model,
        data=data,
        loss_fn=make_loss_fn(settings.cond, settings.num_classes),
        optimizer_factory=partial(torch.optim.Adam, lr=settings.lr),
        config=config,
        run_config={**make_run_config(model, settings), **extra},
        run_config_file=CONFIG_FILE,
        trainer_kwargs={
            "lr_lambda": lambda step: min(1.0, (step + 1) / warmup),
            "collate_fn": collate_videos,
        },
        held_out=held_out,
    )


def report_run(
    trainer: Trainer,
    result: FitResult,
    summary: dict[str, Any],
    *,
    job: TrainJob,
    sampling: SampleSettings,
) -> None:
    """After a run (main process, `run_train_job`'s `report`): sample a sheet with the EMA
    weights of its last checkpoint (`samples.gif`, the trained model's text encoder and its cache
    reused), print where it is and its quality, and add them to `summary`. On the user's videos
    (`job.held_out` set) the figures are those of `report_real_data` instead."""
    assert result.checkpoint is not None  # fit ends with a checkpoint
    model = job.model
    assert isinstance(model, GaussianDiffusion)
    sampler = sampling_model(
        job.run_config,
        result.checkpoint,
        text_encoder=model.text_encoder,
        device=trainer.accelerator.device,
    )
    from mp_layers.training import write_sample_sheet

    out = Path(job.config.out_dir)
    if job.held_out is not None:  # the user's videos: figures of real data only
        start = time.perf_counter()
        samples = report_real_data(
            trainer,
            summary,
            sampler,
            job.run_config,
            job.held_out,
            guidance=sampling.guidance,
            sampler=sampling.sampler,
            steps=sampling.steps,
            seed=sampling.seed,
        )
        write_sample_sheet(samples, out / "samples.gif", fps=sampling.fps)
        report_training(
            summary, out, report=None, sample_seconds=round(time.perf_counter() - start, 1)
        )
        return
    report, seconds = evaluate(sampler, job.run_config, out / "samples.gif", sampling)
    report_training(summary, out, report=report, sample_seconds=seconds)
    if report is not None:
        trainer.log({f"samples/{k}": v for k, v in report[0].items() if v is not None})
