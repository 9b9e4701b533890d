"""The fixed colour palette shared by `MovingShapes` and the colour-accuracy measure."""

from __future__ import annotations

import torch

from mp_layers.validation import check_floating

PALETTE: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 0.0),
    (0.0, 1.0, 0.0),
    (0.0, 0.0, 1.0),
    (1.0, 1.0, 0.0),
)
"""RGB colours of the `MovingShapes` palette; `label` indexes this tuple."""
COLOR_NAMES: tuple[str, ...] = ("red", "green", "blue", "yellow")
"""Names of the `PALETTE` colours, as used in captions."""
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights: how RGB becomes a single grey channel (`channels=1`)."""


def palette_tensor(channels: int = 3) -> torch.Tensor:
    """The palette as a `(4, channels)` float32 tensor: RGB for 3 channels, luma for 1."""
    return to_channels(torch.tensor(PALETTE).T, channels).T.contiguous()


def to_channels(video: torch.Tensor, channels: int) -> torch.Tensor:
    """Keep an RGB tensor `(3, ...)` as is (`channels=3`) or turn it into grey luma `(1, ...)`."""
    video = check_floating("video", video)
    if video.shape[0] != 3:
        raise ValueError(f"video: expected 3 (RGB) channels first, got shape {tuple(video.shape)}")
    if channels == 3:
        return video
    if channels == 1:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=video.dtype, device=video.device)
        return torch.tensordot(weights, video, dims=1).unsqueeze(0)
    raise ValueError(f"channels: expected 1 or 3, got {channels!r}")
