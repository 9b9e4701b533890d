"""Evaluation of a demo model: a sample sheet (one row per prompt or class) and its quality
figures (`mp_layers.video.sample_quality_report`: colour and shape accuracy, one-object rate)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from video_ddpm.demo.config import DEFAULT_PROMPTS, SampleSettings
from video_ddpm.gaussian_diffusion import GaussianDiffusion

__all__ = ["Report", "evaluate", "sample_sheet"]

Report = tuple[dict[str, float | None], str] | None
"""`sample_quality_report`'s figures and printed line, or None (clips not RGB or grey)."""


def _index_named(text: str, names: Sequence[str]) -> int:
    """Index of the first of `names` that is a word of `text`, or -1."""
    words = text.split()
    return next((i for i, name in enumerate(names) if name in words), -1)


def _rows(
    config: dict[str, Any], prompts: str | None, per_row: int
) -> tuple[Any, list[int], list[int]]:
    """The conditioning of the sample sheet, and the colour and shape asked for by each sample
    (-1: not asked): text prompts (default: one per palette colour), every class, or nothing."""
    from mp_layers.video import COLOR_NAMES, SHAPE_NAMES

    cond = config.get("cond", "none")
    if cond == "text":
        texts = [p.strip() for p in prompts.split("|")] if prompts else list(DEFAULT_PROMPTS)
        texts = [t for t in texts for _ in range(per_row)]
        colours = [_index_named(t, COLOR_NAMES) for t in texts]
        return texts, colours, [_index_named(t, SHAPE_NAMES) for t in texts]
    if cond == "class":
        classes = config["unet"]["cond_dim"]
        labels = torch.arange(classes).repeat_interleave(per_row)
        one_hot = torch.nn.functional.one_hot(labels, classes).float()
        return one_hot, labels.tolist(), [-1] * len(labels)
    return None, [-1] * per_row, [-1] * per_row


def sample_sheet(
    model: GaussianDiffusion,
    config: dict[str, Any],
    path: Path,
    *,
    prompts: str | None = None,
    per_row: int = 4,
    sampler: str = "ddim",
    steps: int | None = 50,
    guidance: float | None = None,
    frames: int | None = None,
    seed: int = 0,
    fps: int = 8,
) -> Report:
    """Sample one row per prompt / class, write the sheet to `path` (.gif or .mp4) and return
    `mp_layers.video.sample_quality_report` of the samples (colour accuracy when every sample
    asked for a palette colour, shape accuracy when every one named a shape), or None for clips
    that are not RGB or grey."""
    from mp_layers.training import write_sample_sheet
    from mp_layers.video import sample_quality_report
    from video_ddpm.demo.real_data import default_guidance

    cond, colours, shapes = _rows(config, prompts, per_row)
    if config.get("data") == "videos" and prompts is None and config.get("sample_prompts"):
        texts = [t for t in config["sample_prompts"] for _ in range(per_row)]
        cond, colours, shapes = texts, [-1] * len(texts), [-1] * len(texts)
    device = next(model.parameters()).device
    if isinstance(cond, torch.Tensor):
        cond = cond.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    videos = model.sample(
        cond,
        cond_scale=default_guidance(config.get("cond", "none"), guidance),
        batch_size=len(colours),
        sampler=sampler,
        steps=steps,
        num_frames=frames,
        generator=generator,
    ).cpu()
    write_sample_sheet(videos, path, fps=fps, nrow=per_row)
    if videos.shape[1] not in (1, 3) or config.get("data") == "videos":
        return None  # MovingShapes figures only for MovingShapes runs
    return sample_quality_report(
        videos,
        labels=colours if min(colours) >= 0 else None,
        shapes=shapes if min(shapes) >= 0 else None,
    )


def evaluate(
    model: GaussianDiffusion, run_config: dict[str, Any], path: Path, sampling: SampleSettings
) -> tuple[Report, float]:
    """`sample_sheet(model, run_config, path, ...)` with the settings of `sampling`; returns its
    report and the seconds it took (rounded to 0.1 s)."""
    start = time.perf_counter()
    report = sample_sheet(
        model,
        run_config,
        path,
        prompts=sampling.prompts,
        per_row=sampling.per_row,
        sampler=sampling.sampler,
        steps=sampling.steps,
        guidance=sampling.guidance,
        frames=sampling.frames,
        seed=sampling.seed,
        fps=sampling.fps,
    )
    return report, round(time.perf_counter() - start, 1)
