"""Denoisers a sampler steps with: a `Condition` applied (`ConditionedDenoiser`: replacement
and reconstruction guidance) and temporal windows (`WindowedDenoiser`, MultiDiffusion)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from mp_layers.conditioning.condition import Condition
from mp_layers.typecheck import typechecked
from mp_layers.validation import check_int

__all__ = [
    "ConditionedDenoiser",
    "Denoiser",
    "WindowedDenoiser",
    "conditioned_denoiser",
    "temporal_windows",
]

Denoiser = Callable[[Tensor, float], Tensor]


class ConditionedDenoiser:
    """`denoise` with a `Condition` applied: `__call__(x, sigma) -> D~(x; sigma)`.

    With a mask, the known part of `x` is replaced by `values + sigma * noise` (one fixed noise
    draw per sample, from `generator`, so the ODE sees one trajectory) and the known part of
    the estimate by `values`; with "guidance" the rest of the estimate gets the reconstruction
    gradient (module docstring). `denoise` may itself be guided (classifier-free guidance): the
    gradient flows through it."""

    @typechecked
    def __init__(
        self,
        denoise: Denoiser,
        condition: Condition,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        condition.check_video(shape)
        self.denoise, self.condition = denoise, condition
        self.values = condition.values.to(device=device, dtype=torch.float32)
        self.mask = None if condition.mask is None else condition.mask.to(device)
        self.noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)

    def replace(self, x: Tensor, sigma: float) -> Tensor:
        """`x` with its known part at `values + sigma * noise`."""
        if self.mask is None:
            return x
        return torch.where(self.mask, self.values + sigma * self.noise, x)

    def __call__(self, x: Tensor, sigma: float) -> Tensor:
        x = self.replace(x, sigma)
        condition = self.condition
        if condition.method == "replace" or condition.weight == 0:
            estimate = self.denoise(x, sigma)
        else:
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                estimate = self.denoise(x, sigma)
                measured = estimate if condition.measure is None else condition.measure(estimate)
                error = condition.error_scale * (self.values - measured) ** 2
                if self.mask is not None:
                    error = error * self.mask
                (gradient,) = torch.autograd.grad(error.sum(), x)
            if self.mask is not None:
                gradient = gradient * ~self.mask  # grad_{x_b}: the unknown part only
            estimate = estimate.detach() - condition.weight / 2 * gradient
        if self.mask is not None:
            estimate = torch.where(self.mask, self.values, estimate)
        return estimate


@typechecked
def temporal_windows(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """`[start, end)` frame ranges of `window` frames that cover `num_frames`, consecutive ones
    sharing at least `overlap` frames (the stride is `window - overlap`; the last window ends at
    the last frame). One window `[0, num_frames)` when `window >= num_frames`."""
    num_frames, window = check_int("num_frames", num_frames), check_int("window", window)
    overlap = check_int("overlap", overlap, minimum=0)
    if overlap >= window:
        raise ValueError(
            f"overlap: expected fewer frames than the window ({window}), got {overlap}"
        )
    if window >= num_frames:
        return [(0, num_frames)]
    stride = window - overlap
    starts = [*range(0, num_frames - window, stride), num_frames - window]
    return [(start, start + window) for start in starts]


class WindowedDenoiser:
    """A denoiser of `window` frames applied to any number of frames (MultiDiffusion): every
    window of `temporal_windows(f, window, overlap)` is denoised by `denoise(x_window, sigma,
    frames)` (`frames`: the window's `slice`, for per-frame state such as self-conditioning) and
    each frame's estimate is the weighted mean over the windows holding it. With one window it
    is the plain call.

    `weights`: "uniform" (MultiDiffusion's plain mean), or "triangle" (the default): frame i of
    a window of F weighs `min(i + 1, F - i)`, so a window's first and last frames, whose
    neighbours it does not see, count least and estimates hand over gradually from one window
    to the next instead of jumping where a window starts or ends."""

    @typechecked
    def __init__(
        self,
        denoise: Callable[[Tensor, float, slice], Tensor],
        window: int,
        overlap: int,
        *,
        weights: Literal["uniform", "triangle"] = "triangle",
    ) -> None:
        self.denoise = denoise
        if weights not in ("uniform", "triangle"):
            raise ValueError(f"weights: expected 'uniform' or 'triangle', got {weights!r}")
        self.weights = weights
        self.window = check_int("window", window)
        self.overlap = check_int("overlap", overlap, minimum=0)
        if self.overlap >= self.window:
            raise ValueError(
                f"overlap: expected fewer frames than the window ({self.window}), got {overlap}"
            )

    def __call__(self, x: Tensor, sigma: float) -> Tensor:
        windows = temporal_windows(x.shape[2], self.window, self.overlap)
        if len(windows) == 1:
            return self.denoise(x, sigma, slice(0, x.shape[2]))
        total = torch.zeros_like(x, dtype=torch.float32)
        count = torch.zeros(1, 1, x.shape[2], 1, 1, device=x.device, dtype=torch.float32)
        size = windows[0][1] - windows[0][0]
        position = torch.arange(size, device=x.device, dtype=torch.float32)
        weight = torch.minimum(position + 1, size - position)
        if self.weights == "uniform":
            weight = torch.ones_like(weight)
        weight = weight.view(1, 1, size, 1, 1)
        for start, end in windows:
            frames = slice(start, end)
            estimate = self.denoise(x[:, :, frames], sigma, frames).to(torch.float32)
            total[:, :, frames] += weight * estimate
            count[:, :, frames] += weight
        return total / count


@typechecked
def conditioned_denoiser(
    denoise: Callable[[Tensor, float, slice], Tensor],
    shape: tuple[int, ...],
    condition: Condition | None = None,
    window: int | None = None,
    overlap: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    *,
    data_range: tuple[float, float] = (-1.0, 1.0),
) -> Callable[[Tensor, float], Tensor]:
    """The denoiser a package's sampler steps with: `denoise(x, sigma, frames)` over temporal
    windows of `window` frames (`overlap` default `window // 2`; None: the whole clip at once),
    then with `condition` (videos in [0, 1], mapped to the model's `data_range`) applied.
    `shape`: the sampled videos' `(b, c, f, h, w)`; `generator` draws the known part's noise."""
    if window is None:
        if overlap is not None:
            raise ValueError(f"overlap: expected no overlap without a window, got {overlap}")

        def whole(x: Tensor, sigma: float) -> Tensor:
            return denoise(x, sigma, slice(0, x.shape[2]))

        step: Callable[[Tensor, float], Tensor] = whole
    else:
        window = check_int("window", window)
        step = WindowedDenoiser(denoise, window, window // 2 if overlap is None else overlap)
    if condition is None:
        return step
    low, high = data_range
    rescaled = condition.rescaled(high - low, low)
    return ConditionedDenoiser(step, rescaled, shape, generator=generator, device=device)
