"""What conditional sampling is for: extend a video, interpolate between given frames, upsample
a low-resolution video, sample more frames than a model was trained on; as functions of a
package's `Sampler` and as the methods of `ConditionalSampling`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from mp_layers.conditioning.condition import (
    Condition,
    interpolation,
    known_frames,
    super_resolution,
)
from mp_layers.typecheck import typechecked
from mp_layers.validation import check_int

__all__ = ["ConditionalSampling", "Sampler", "extend", "interpolate", "upsample"]


Sampler = Callable[[int, int, int | None, Condition | None, int | None, int | None], Tensor]
"""A package's conditional sampler, in [0, 1]: `sample(batch_size, frames, image_size,
condition, window, overlap) -> (batch_size, c, frames, image_size, image_size)` (`image_size`
None: the model's; `window` None: the whole clip at once)."""


def _windows_for(frames: int, window: int, overlap: int | None) -> tuple[int | None, int | None]:
    """`(window, overlap)` for `frames` frames of a model of `window`: none when one fits."""
    return (window, overlap) if frames > window else (None, None)


def _check_given(video: Tensor, name: str = "video") -> None:
    if video.ndim != 5 or not video.is_floating_point():
        raise ValueError(
            f"{name}: expected a float video (b, c, frames, height, width) in [0, 1], got "
            f"{tuple(video.shape)} {video.dtype}"
        )


@typechecked
def extend(
    sample: Sampler,
    video: Tensor,
    num_frames: int,
    *,
    window: int,
    overlap: int,
    method: Literal["replace", "guidance"] = "guidance",
    weight: float = 10.0,
) -> Tensor:
    """Continue `video (b, c, n, h, w)` (in [0, 1]) to `num_frames` frames, autoregressively:
    each new window of `window` frames (the model's length) knows its first `overlap` frames
    (the last ones made so far) and adds `window - overlap`. Returns `(b, c, num_frames, h, w)`;
    the first `n` frames are `video`'s."""
    _check_given(video)
    window = check_int("window", window, minimum=2)
    overlap = check_int("overlap", overlap)
    if overlap >= window:
        raise ValueError(
            f"overlap: expected fewer frames than the window ({window}), got {overlap}"
        )
    if video.shape[2] < overlap:
        raise ValueError(
            f"video: expected at least overlap = {overlap} frames, got {tuple(video.shape)}"
        )
    num_frames = check_int("num_frames", num_frames)
    if num_frames <= video.shape[2]:
        raise ValueError(
            f"num_frames: expected more than the video's {video.shape[2]} frames, got {num_frames}"
        )
    made = video
    expected = (*video.shape[:2], window, *video.shape[3:])
    while made.shape[2] < num_frames:
        given = made[:, :, made.shape[2] - overlap :]
        condition = known_frames(given, list(range(overlap)), window, method=method, weight=weight)
        clip = sample(video.shape[0], window, video.shape[-1], condition, None, None)
        if tuple(clip.shape) != expected:
            raise ValueError(f"sample: expected clips of shape {expected}, got {tuple(clip.shape)}")
        made = torch.cat((made, clip[:, :, overlap:].to(made)), dim=2)
    return made[:, :, :num_frames]


@typechecked
def interpolate(
    sample: Sampler,
    video: Tensor,
    every: int,
    *,
    window: int,
    overlap: int | None = None,
    method: Literal["replace", "guidance"] = "guidance",
    weight: float = 10.0,
) -> Tensor:
    """`every - 1` new frames between consecutive frames of `video (b, c, n, h, w)`: a clip of
    `(n - 1) * every + 1` frames whose every `every`-th frame is `video`'s, in one pass
    (temporal windows of `window` frames when it is longer)."""
    _check_given(video)
    condition = interpolation(video, every, method=method, weight=weight)
    frames = condition.values.shape[2]
    return sample(
        video.shape[0], frames, video.shape[-1], condition, *_windows_for(frames, window, overlap)
    )


@typechecked
def upsample(
    sample: Sampler,
    low_res: Tensor,
    factor: int,
    *,
    window: int,
    overlap: int | None = None,
    weight: float = 1.0,
) -> Tensor:
    """A video `factor` times larger than `low_res (b, c, f, h, w)` whose `factor x factor`
    block means match it (reconstruction guidance through `area_downsample`), in one pass."""
    _check_given(low_res, "low_res")
    condition = super_resolution(low_res, factor, weight=weight)
    frames = low_res.shape[2]
    return sample(
        low_res.shape[0],
        frames,
        low_res.shape[-1] * factor,
        condition,
        *_windows_for(frames, window, overlap),
    )


class ConditionalSampling:
    """Long videos and conditioning as methods of a diffusion model (karras-unet3d's
    `EDM2Diffusion` and video-ddpm's `GaussianDiffusion`, with the same names and arguments).

    A subclass gives `_window_frames` (the clip length it was trained on) and
    `_conditional_sampler(**sample_kwargs) -> Sampler` (its own sampler with `sample_kwargs`:
    labels or text, guidance, steps, generator). Videos are `(b, c, f, h, w)` in [0, 1];
    `method` is "replace" or "guidance" (reconstruction guidance of weight `weight`, the
    paper's `w_r`)."""

    @property
    def _window_frames(self) -> int:
        raise NotImplementedError

    def _conditional_sampler(self, **sample_kwargs: Any) -> Sampler:
        raise NotImplementedError

    def sample_long(
        self,
        batch_size: int,
        num_frames: int,
        *,
        overlap: int | None = None,
        condition: Condition | None = None,
        **sample_kwargs: Any,
    ) -> Tensor:
        """`num_frames` frames in one pass: windows of the training length sharing `overlap`
        frames (default half a window), averaged at every step; one window when it fits.
        `condition`: for all `num_frames` frames (e.g. `known_frames(image, [0], num_frames)`:
        image to video)."""
        num_frames = check_int("num_frames", num_frames)
        image_size = sample_kwargs.pop("image_size", None)
        sample = self._conditional_sampler(**sample_kwargs)
        window, overlap = _windows_for(num_frames, self._window_frames, overlap)
        return sample(batch_size, num_frames, image_size, condition, window, overlap)

    def extend_video(
        self,
        video: Tensor,
        num_frames: int,
        *,
        overlap: int,
        method: Literal["replace", "guidance"] = "guidance",
        weight: float = 10.0,
        **sample_kwargs: Any,
    ) -> Tensor:
        """Continue `video (b, c, n, h, w)` to `num_frames` frames (`extend`): windows of the
        training length, each knowing the last `overlap` frames made so far."""
        return extend(
            self._conditional_sampler(**sample_kwargs),
            video,
            num_frames,
            window=self._window_frames,
            overlap=overlap,
            method=method,
            weight=weight,
        )

    def interpolate_video(
        self,
        video: Tensor,
        every: int,
        *,
        overlap: int | None = None,
        method: Literal["replace", "guidance"] = "guidance",
        weight: float = 10.0,
        **sample_kwargs: Any,
    ) -> Tensor:
        """`every - 1` new frames between consecutive frames of `video` (`interpolate`)."""
        return interpolate(
            self._conditional_sampler(**sample_kwargs),
            video,
            every,
            window=self._window_frames,
            overlap=overlap,
            method=method,
            weight=weight,
        )

    def upsample_video(
        self,
        low_res: Tensor,
        factor: int,
        *,
        overlap: int | None = None,
        weight: float = 1.0,
        **sample_kwargs: Any,
    ) -> Tensor:
        """A video `factor` times larger than `low_res` whose block means match it
        (`upsample`; `weight` in [0, 2], see `super_resolution`)."""
        return upsample(
            self._conditional_sampler(**sample_kwargs),
            low_res,
            factor,
            window=self._window_frames,
            overlap=overlap,
            weight=weight,
        )
