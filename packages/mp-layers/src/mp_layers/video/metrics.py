"""Colour accuracy of sampled clips against the `MovingShapes` palette (for class-conditional
evaluation: did the model draw the colour it was asked for?)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange

from mp_layers.typecheck import typechecked
from mp_layers.validation import check_floating
from mp_layers.video._color import PALETTE, palette_tensor


@typechecked
def predict_palette_color(videos: torch.Tensor) -> torch.Tensor:
    """Dominant palette colour of each clip `(B, C, F, H, W)` (C = 3 RGB, or 1 luma) → `(B,)` int64.

    Every pixel of every frame goes to the nearest (Euclidean) of five references: black
    (background) and the four `PALETTE` colours (their BT.601 luma when C = 1). The prediction is
    the palette colour with the most pixels, black excluded; it is -1 when no pixel is nearer to a
    palette colour than to black. Non-finite values count as black; values outside [0, 1] are
    allowed (they simply go to the nearest reference).
    """
    videos = check_floating("videos", videos)
    if videos.ndim != 5 or videos.shape[1] not in (1, 3) or videos.shape[0] == 0:
        raise ValueError(
            "videos: expected shape (b, c, f, h, w) with b >= 1 and c in (1, 3), "
            f"got {tuple(videos.shape)}"
        )
    batch, channels = videos.shape[:2]
    pixels = rearrange(
        videos.detach().float().nan_to_num(0.0, 0.0, 0.0), "b c f h w -> b (f h w) c"
    )
    references = torch.cat([torch.zeros(1, channels), palette_tensor(channels)]).to(pixels.device)
    nearest = torch.cdist(
        pixels, references.expand(batch, -1, -1), compute_mode="donot_use_mm_for_euclid_dist"
    ).argmin(-1)
    offsets = torch.arange(batch, device=pixels.device)[:, None] * len(references)
    counts = torch.bincount((nearest + offsets).flatten(), minlength=batch * len(references))
    foreground = counts.view(batch, len(references))[:, 1:]
    return torch.where(foreground.sum(1) > 0, foreground.argmax(1), -1)


@typechecked
def palette_color_accuracy(videos: torch.Tensor, labels: torch.Tensor | Sequence[int]) -> float:
    """Fraction of clips `(B, C, F, H, W)` whose dominant palette colour (`predict_palette_color`)
    equals the requested colour index in `labels` `(B,)`; a clip without foreground is wrong."""
    predicted = predict_palette_color(videos)
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels: expected integer colour indices, got dtype {labels.dtype}")
    if labels.shape != predicted.shape:
        raise ValueError(
            f"labels: expected shape {tuple(predicted.shape)}, got {tuple(labels.shape)}"
        )
    if bool(((labels < 0) | (labels >= len(PALETTE))).any()):
        raise ValueError(
            f"labels: expected colour indices in [0, {len(PALETTE) - 1}], got {labels.tolist()}"
        )
    return (predicted == labels.to(predicted.device)).float().mean().item()
