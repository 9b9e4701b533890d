"""`Condition`: what is given for a conditional sample (known frames or pixels by a mask, or a
low-resolution video to match), and the functions that build one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from mp_layers.typecheck import typechecked
from mp_layers.validation import check_float, check_int

__all__ = [
    "METHODS",
    "Condition",
    "area_downsample",
    "frame_mask",
    "interpolation",
    "known_frames",
    "super_resolution",
]

METHODS = ("replace", "guidance")


@typechecked
def frame_mask(positions: list[int] | tuple[int, ...], num_frames: int) -> Tensor:
    """A known-frame mask `(1, 1, num_frames, 1, 1)` (bool), True at `positions`."""
    num_frames = check_int("num_frames", num_frames)
    mask = torch.zeros(1, 1, num_frames, 1, 1, dtype=torch.bool)
    for position in positions:
        if isinstance(position, bool) or not 0 <= position < num_frames:
            raise ValueError(
                f"positions: expected frame indices in [0, {num_frames}), got {list(positions)}"
            )
        mask[:, :, position] = True
    return mask


@typechecked
@dataclass(frozen=True)
class Condition:
    """What is given for a sample: videos in [0, 1] (what users have); a package's sampler
    maps it to its data space with `rescaled(2, -1)` ([-1, 1]).

    `values`: known values `(b, c, f, h, w)` (only the masked part is read), or for
    super-resolution the low-resolution video `measure(y)` should match. `mask`: bool,
    broadcastable to `(b, c, f, h, w)`, True where known; None for super-resolution.
    `method`: "replace" or "guidance" (reconstruction guidance, weight `weight` = `w_r`).
    `measure`: a differentiable map from a full video to what `values` holds (default: the video
    itself); needed without a mask. `error_scale` multiplies the reconstruction error (a
    measure that averages `k` pixels into one counts each of its errors `k` times, so that
    `weight` 1 corrects a whole residual at low noise)."""

    values: Tensor
    mask: Tensor | None = None
    method: Literal["replace", "guidance"] = "guidance"
    weight: float = 10.0
    measure: Callable[[Tensor], Tensor] | None = field(default=None, compare=False)
    error_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.values.ndim != 5 or not self.values.is_floating_point():
            raise ValueError(
                f"values: expected a float video (b, c, f, h, w), got "
                f"{tuple(self.values.shape)} {self.values.dtype}"
            )
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {self.method!r}")
        check_float("weight", self.weight, low=0.0)
        if self.mask is None:
            if self.measure is None:
                raise ValueError(
                    "mask: expected a known-part mask, or a measure (super-resolution)"
                )
            if self.method != "guidance":
                raise ValueError(
                    "method: super-resolution (no mask) knows no pixel to replace; expected "
                    "'guidance'"
                )
            return
        if self.mask.dtype != torch.bool or self.mask.ndim != 5:
            raise ValueError(
                f"mask: expected a bool tensor of 5 dims broadcastable to {tuple(self.values.shape)}"
                f", got {tuple(self.mask.shape)} {self.mask.dtype}"
            )
        try:
            torch.broadcast_shapes(self.mask.shape, self.values.shape)
        except RuntimeError:
            raise ValueError(
                f"mask: expected a shape broadcastable to the video {tuple(self.values.shape)} "
                f"(e.g. (1, 1, {self.values.shape[2]}, 1, 1) for frames), got "
                f"{tuple(self.mask.shape)}"
            ) from None

    def rescaled(self, scale: float, shift: float) -> Condition:
        """The condition on `scale * video + shift` (a measure must be linear and keep
        constants, as `area_downsample` does: it then commutes with the map)."""
        return Condition(
            self.values * scale + shift,
            self.mask,
            self.method,
            self.weight,
            self.measure,
            self.error_scale,
        )

    def check_video(self, shape: tuple[int, ...]) -> None:
        """Raise `ValueError` unless the condition fits sampled videos of `shape`."""
        if self.mask is None:
            assert self.measure is not None
            measured = tuple(self.measure(torch.zeros(1, *shape[1:])).shape[1:])
            if tuple(self.values.shape[1:]) != measured or self.values.shape[0] not in (
                1,
                shape[0],
            ):
                raise ValueError(
                    f"values: expected a low-resolution video of shape (1 or {shape[0]}, "
                    f"{', '.join(map(str, measured))}) for samples of {tuple(shape)}, got "
                    f"{tuple(self.values.shape)}"
                )
            return
        try:
            fits = tuple(torch.broadcast_shapes(self.mask.shape, shape)) == tuple(shape)
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"mask: expected a shape broadcastable to the samples {tuple(shape)}, got "
                f"{tuple(self.mask.shape)} (a known-frame mask needs one entry per frame)"
            )
        if tuple(self.values.shape[1:]) != tuple(shape[1:]) or self.values.shape[0] not in (
            1,
            shape[0],
        ):
            raise ValueError(
                f"values: expected a video of shape (1 or {shape[0]}, {', '.join(map(str, shape[1:]))}) "
                f"(channels, frames, height, width of the samples), got {tuple(self.values.shape)}"
            )


@typechecked
def known_frames(
    video: Tensor,
    positions: list[int] | tuple[int, ...],
    num_frames: int,
    *,
    method: Literal["replace", "guidance"] = "guidance",
    weight: float = 10.0,
) -> Condition:
    """A `Condition` knowing `video`'s frames `(b, c, len(positions), h, w)` (in [0, 1]) at
    `positions` of a clip of `num_frames`."""
    if video.ndim != 5 or video.shape[2] != len(positions):
        raise ValueError(
            f"video: expected (b, c, {len(positions)}, h, w) for {len(positions)} positions, got "
            f"{tuple(video.shape)}"
        )
    mask = frame_mask(list(positions), num_frames).to(video.device)
    values = video.new_zeros(*video.shape[:2], num_frames, *video.shape[3:])
    values[:, :, list(positions)] = video
    return Condition(values, mask, method=method, weight=weight)


@typechecked
def area_downsample(video: Tensor, factor: int) -> Tensor:
    """`(b, c, f, h, w) -> (b, c, f, h / factor, w / factor)`: the mean of each `factor x factor`
    block (differentiable; the measurement of super-resolution)."""
    factor = check_int("factor", factor)
    if video.shape[-1] % factor or video.shape[-2] % factor:
        raise ValueError(
            f"video: expected height and width divisible by {factor}, got {tuple(video.shape)}"
        )
    return F.avg_pool3d(video, kernel_size=(1, factor, factor))


@typechecked
def super_resolution(low_res: Tensor, factor: int, *, weight: float = 1.0) -> Condition:
    """A `Condition` for videos `factor` times larger than `low_res (b, c, f, h, w)` (in
    [0, 1]) whose `area_downsample` matches it, by reconstruction guidance.

    The error is counted per high-resolution pixel (`error_scale = factor**2`), so `weight` is
    the share of the low-resolution residual one step corrects where the denoiser keeps its
    input (low noise): 1 corrects it all, and above 2 the correction overshoots and diverges."""
    factor = check_int("factor", factor, minimum=2)
    weight = check_float("weight", weight, low=0.0, high=2.0)
    return Condition(
        low_res,
        None,
        method="guidance",
        weight=weight,
        measure=lambda v: area_downsample(v, factor),
        error_scale=float(factor**2),
    )


@typechecked
def interpolation(
    video: Tensor,
    every: int,
    *,
    method: Literal["replace", "guidance"] = "guidance",
    weight: float = 10.0,
) -> Condition:
    """A `Condition` for filling `every - 1` frames between consecutive frames of `video
    (b, c, n, h, w)`: a clip of `(n - 1) * every + 1` frames whose frames `0, every, 2 every, ...`
    are `video`'s."""
    every = check_int("every", every, minimum=2)
    if video.ndim != 5 or video.shape[2] < 2:
        raise ValueError(f"video: expected (b, c, n >= 2, h, w), got {tuple(video.shape)}")
    count = video.shape[2]
    positions = [i * every for i in range(count)]
    return known_frames(video, positions, positions[-1] + 1, method=method, weight=weight)
