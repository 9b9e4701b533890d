"""Writing a batch of sampled videos as one GIF sample sheet."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch


def write_sample_sheet(
    videos: torch.Tensor, path: str | os.PathLike[str], *, fps: int = 8, nrow: int | None = None
) -> Path:
    """Tile `videos` (B, C, F, H, W) in [0, 1] into a grid and write it as a GIF (atomically).

    `nrow` defaults to ceil(sqrt(B)). Values outside [0, 1] are clamped (samplers overshoot
    slightly); anything but a 5-d floating tensor raises `ValueError`.
    """
    if not isinstance(videos, torch.Tensor) or videos.ndim != 5 or not videos.is_floating_point():
        got = tuple(videos.shape) if isinstance(videos, torch.Tensor) else type(videos).__name__
        raise ValueError(f"sample_fn: expected a float tensor (b, c, f, h, w) in [0, 1], got {got}")
    from mp_layers.video import video_grid, write_video  # the [video] extra, imported on use

    nrow = nrow or math.ceil(math.sqrt(videos.shape[0]))
    grid = video_grid(videos.detach().float().clamp(0, 1).cpu(), nrow=nrow)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write_video(grid, tmp, fps=fps)
    os.replace(tmp, path)
    return path
