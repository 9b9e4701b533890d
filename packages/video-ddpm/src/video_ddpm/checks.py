"""Input checks of the Gaussian diffusion: settings at construction, videos and timesteps at call.

Each raises a `ValueError` (a `TypeError` for a wrong kind of value) that says what was expected
and what was given.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "RANGE_TOLERANCE",
    "check_choice",
    "check_image_size",
    "check_network",
    "check_steps",
    "check_t",
    "check_videos",
]

RANGE_TOLERANCE = 1e-3
"""How far outside [0, 1] a video's values may lie (rounding of decoded or resized videos)."""


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """`value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


def check_image_size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """`(height, width)` of an int or a pair, both >= 1."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(s < 1 for s in size):
        raise ValueError(f"image_size: expected an int or (height, width) >= 1, got {image_size!r}")
    return size[0], size[1]


def check_network(denoise_fn: nn.Module, channels: int, size: tuple[int, int]) -> None:
    """Channels and down-sampling of the network must fit the diffusion's videos."""
    net_channels = getattr(denoise_fn, "channels", None)
    if net_channels is not None and net_channels != channels:
        raise ValueError(
            f"channels: expected denoise_fn.channels={net_channels}, got channels={channels}"
        )
    factor = getattr(denoise_fn, "downsample_factor", 1)
    if any(s % factor for s in size):
        raise ValueError(
            f"image_size: expected a multiple of the network's downsample_factor={factor}, "
            f"got {size}"
        )
    if not callable(getattr(denoise_fn, "forward_with_cond_scale", None)):
        raise TypeError(
            f"denoise_fn: expected a network with forward_with_cond_scale, got {type(denoise_fn).__name__}"
        )


def check_videos(
    name: str,
    videos: Tensor,
    *,
    channels: int,
    frame_shape: tuple[int, int],
    frames: int | None,
) -> None:
    """Float `(b, channels, frames, h, w)` in [0, 1] (within `RANGE_TOLERANCE`); any frame count
    when `frames` is None."""
    c, (h, w) = channels, frame_shape
    f = "f" if frames is None else frames
    expected = f"(b, {c}, {f}, {h}, {w})"
    if not videos.is_floating_point():
        raise TypeError(f"{name}: expected a float video tensor {expected}, got {videos.dtype}")
    shape = tuple(videos.shape)
    ok = len(shape) == 5 and shape[0] >= 1 and shape[1] == c and shape[3:] == (h, w)
    if not ok or (frames is not None and shape[2] != frames):
        raise ValueError(f"{name}: expected video of shape {expected}, got {shape}")
    low, high = torch.stack(torch.aminmax(videos.detach())).tolist()
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise ValueError(f"{name}: expected values in [0, 1], got [{low:.4g}, {high:.4g}]")


def check_t(t: Tensor, batch: int, timesteps: int) -> None:
    """An integer tensor `(batch,)` of steps in [0, timesteps - 1]."""
    if t.shape != (batch,) or t.is_floating_point() or t.is_complex():
        raise ValueError(
            f"t: expected an integer tensor ({batch},), got {t.dtype} {tuple(t.shape)}"
        )
    if t.min().item() < 0 or t.max().item() >= timesteps:
        raise ValueError(f"t: expected values in [0, {timesteps - 1}], got {t.tolist()}")


def check_steps(steps: int | None, timesteps: int) -> int:
    """A sampler's step count in [1, timesteps] (None: all `timesteps`)."""
    steps = timesteps if steps is None else steps
    if not 1 <= steps <= timesteps:
        raise ValueError(f"steps: expected an int in [1, {timesteps}], got {steps}")
    return steps
