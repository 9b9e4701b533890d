"""`video-ddpm sample` with conditioning or more frames than trained: `--init-video FILE
--extend N`, `--interpolate K`, `--upsample-from FILE`, `--first-frame IMAGE`, `--frames N`
beyond the training length (`mp_layers.video.conditional_cli`, the same flags as
karras-unet3d's); the sheet marks the given frames with a red border."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from mp_layers.typecheck import typechecked
from video_ddpm.demo.config import SampleSettings
from video_ddpm.demo.evaluation import _rows
from video_ddpm.gaussian_diffusion import GaussianDiffusion

__all__ = ["conditional_sheet"]


@typechecked
def conditional_sheet(
    model: GaussianDiffusion,
    config: dict[str, Any],
    path: Path,
    sampling: SampleSettings,
    args: argparse.Namespace,
) -> dict[str, Any] | None:
    """Sample and write the sheet the conditioning flags ask for (one row per prompt or class,
    as a plain sheet); None when they ask for a plain sample no longer than the training."""
    from mp_layers.training import write_sample_sheet
    from mp_layers.video import palette_color_accuracy
    from mp_layers.video.conditional_cli import (
        conditional_request,
        mark_known_frames,
        sample_conditional,
    )
    from video_ddpm.demo.real_data import default_guidance

    request = conditional_request(args, model.frame_shape[0])
    frames = sampling.frames or model.num_frames
    if request.mode is None and frames <= model.num_frames:
        return None
    cond, colours, _ = _rows(config, sampling.prompts, sampling.per_row)
    device = next(model.parameters()).device
    if isinstance(cond, torch.Tensor):
        cond = cond.to(device)
    videos, known = sample_conditional(
        model,
        request,
        args,
        batch_size=len(colours),
        frames=frames,
        cond=cond,
        cond_scale=default_guidance(config.get("cond", "none"), sampling.guidance),
        sampler=sampling.sampler,
        steps=sampling.steps,
        generator=torch.Generator(device=device).manual_seed(sampling.seed),
    )
    videos = videos.cpu()
    write_sample_sheet(mark_known_frames(videos, known), path, fps=sampling.fps,
                       nrow=sampling.per_row)  # fmt: skip
    what = request.mode or "long sample"
    print(f"wrote {path}: {what}, {len(colours)} clips of {videos.shape[2]} frames "
          f"({sum(known)} given, marked red)")  # fmt: skip
    summary: dict[str, Any] = {"out": str(path), "mode": what, "frames": int(videos.shape[2]),
                               "given_frames": sum(known)}  # fmt: skip
    if min(colours) >= 0 and config.get("data") != "videos":
        summary["color_accuracy"] = palette_color_accuracy(videos, colours)
        print(f"colour accuracy of the samples against their prompt's colour: "
              f"{summary['color_accuracy']:.1%}")  # fmt: skip
    return summary
