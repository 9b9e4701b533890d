"""Writing a batch of sampled videos as one GIF sample sheet."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from mp_layers.typecheck import typechecked


@typechecked
def write_sample_sheet(
    videos: torch.Tensor, path: str | os.PathLike[str], *, fps: int = 8, nrow: int | None = None
) -> Path:
    """Tile `videos` (B, C, F, H, W) in [0, 1] into a grid and write it as a GIF (atomically).

    `nrow` defaults to ceil(sqrt(B)). Values outside [0, 1] are clamped (samplers overshoot
    slightly); a tensor that is not 5-d and floating raises `ValueError`.
    """
    if videos.ndim != 5 or not videos.is_floating_point():
        raise ValueError(
            "sample_fn: expected a float tensor (b, c, f, h, w) in [0, 1], "
            f"got {tuple(videos.shape)} {videos.dtype}"
        )
    from mp_layers.video import video_grid, write_video  # the [video] extra, imported on use

    nrow = nrow or math.ceil(math.sqrt(videos.shape[0]))
    grid = video_grid(videos.detach().float().clamp(0, 1).cpu(), nrow=nrow)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write_video(grid, tmp, fps=fps)
    os.replace(tmp, path)
    return path
