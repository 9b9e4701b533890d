"""Measures of generated or reconstructed clips against real ones, for data of any kind.

MovingShapes has its own measures (`quality`: colour, one object, shape); on a user's videos the
`train` commands report these instead, all on float RGB clips `(b, c, f, h, w)` in [0, 1] and
all with fixed definitions (no threshold that adapts to the sample):

- `mean_frame_difference`: motion, `mean |x[:, :, t+1] - x[:, :, t]|` over pixels, channels and
  frame pairs (0: a still video; per unit of intensity per frame).
- `colour_histogram_distance`: per-channel total variation distance between the intensity
  histograms (`bins` bins on [0, 1]) of two sets of clips, averaged over channels: 0 for
  identical colour distributions, 1 for disjoint ones.
- `psnr` and `ssim`: reconstruction quality, clip by clip (`ssim` on each frame with the usual
  11x11 Gaussian window, sigma 1.5, `C1 = (0.01)^2`, `C2 = (0.03)^2`; Wang et al. 2004, eq. 13).
- `real_data_report`: motion of the samples and of the real clips, and their colour histogram
  distance, with one printable line; `write_comparison_sheet`: real clips in the top row(s),
  samples below, as GIF and MP4.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from mp_layers.typecheck import typechecked
from mp_layers.validation import check_int

__all__ = [
    "colour_histogram_distance",
    "mean_frame_difference",
    "psnr",
    "real_data_report",
    "ssim",
    "write_comparison_sheet",
]


def _clips(name: str, videos: torch.Tensor) -> torch.Tensor:
    if videos.ndim != 5 or not videos.is_floating_point() or videos.shape[0] == 0:
        raise ValueError(
            f"{name}: expected float clips (b, c, f, h, w) in [0, 1] with b >= 1, got "
            f"{tuple(videos.shape)} {videos.dtype}"
        )
    return videos.detach().float().clamp(0, 1).cpu()


@typechecked
def mean_frame_difference(videos: torch.Tensor) -> float:
    """Motion of `videos` (b, c, f, h, w): the mean absolute difference of consecutive frames
    (NaN for one-frame clips)."""
    videos = _clips("videos", videos)
    if videos.shape[2] < 2:
        return math.nan
    return float((videos[:, :, 1:] - videos[:, :, :-1]).abs().mean())


@typechecked
def colour_histogram_distance(a: torch.Tensor, b: torch.Tensor, *, bins: int = 32) -> float:
    """`0.5 * sum |h_a - h_b|` of the normalised per-channel histograms of the clips `a` and `b`
    (same channels, any batch, frames and size), averaged over channels; in [0, 1]."""
    a, b = _clips("a", a), _clips("b", b)
    bins = check_int("bins", bins, minimum=2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b: expected the same channels, got {a.shape[1]} and {b.shape[1]}")
    distances = []
    for channel in range(a.shape[1]):
        ha = torch.histc(a[:, channel], bins=bins, min=0.0, max=1.0)
        hb = torch.histc(b[:, channel], bins=bins, min=0.0, max=1.0)
        distances.append(0.5 * float((ha / ha.sum() - hb / hb.sum()).abs().sum()))
    return sum(distances) / len(distances)


def _pair(reference: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    reference, other = _clips("reference", reference), _clips("reconstruction", other)
    if reference.shape != other.shape:
        raise ValueError(
            f"reconstruction: expected the shape of the reference {tuple(reference.shape)}, "
            f"got {tuple(other.shape)}"
        )
    return reference, other


@typechecked
def psnr(reference: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per clip, `10 log10(1 / MSE)` dB, shape `(b,)` (a perfect
    reconstruction gives `inf`)."""
    reference, reconstruction = _pair(reference, reconstruction)
    mse = (reference - reconstruction).square().flatten(1).mean(1)
    return 10 * torch.log10(1 / mse)


@typechecked
def ssim(reference: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Structural similarity per clip, shape `(b,)`: the mean SSIM map of every frame and
    channel (Gaussian window 11, sigma 1.5; frames smaller than the window use a window of
    their size)."""
    reference, reconstruction = _pair(reference, reconstruction)
    b, c, f, h, w = reference.shape
    size = min(11, h, w)
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    gauss = torch.exp(-(coords**2) / (2 * 1.5**2))
    gauss = gauss / gauss.sum()
    window = (gauss[:, None] * gauss[None, :])[None, None]

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window)

    x = reference.permute(0, 2, 1, 3, 4).reshape(b * f * c, 1, h, w)
    y = reconstruction.permute(0, 2, 1, 3, 4).reshape(b * f * c, 1, h, w)
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return value.reshape(b, -1).mean(1)


@typechecked
def real_data_report(
    samples: torch.Tensor, real: torch.Tensor, *, what: str = "samples"
) -> tuple[dict[str, float], str]:
    """`samples` (generated or reconstructed clips) against held-out `real` clips: figures
    `motion` and `real_motion` (`mean_frame_difference`) and `colour_histogram_distance`, and
    a line such as `samples vs 8 held-out real clips: motion 0.021 (real 0.018), colour
    histogram distance 0.12`."""
    figures = {
        "motion": mean_frame_difference(samples),
        "real_motion": mean_frame_difference(real),
        "colour_histogram_distance": colour_histogram_distance(samples, real),
    }
    line = (
        f"{what} vs {real.shape[0]} held-out real clips: motion {figures['motion']:.4f} "
        f"(real {figures['real_motion']:.4f}), colour histogram distance "
        f"{figures['colour_histogram_distance']:.3f}"
    )
    return figures, line


@typechecked
def write_comparison_sheet(
    samples: torch.Tensor,
    real: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    fps: float = 8,
    nrow: int | None = None,
) -> list[Path]:
    """Tile `real` clips (first rows) above `samples` (next rows) into one sheet and write it as
    `path` with the suffix `.gif` and `.mp4` (atomically). Clips are resized to the samples'
    size and frame count (the real clips' first frames) when they differ. Returns both paths."""
    from mp_layers.video.io import video_grid, write_video

    samples, real = _clips("samples", samples), _clips("real", real)
    frames, height, width = samples.shape[2:]
    if real.shape[1] != samples.shape[1]:
        raise ValueError(
            f"real: expected {samples.shape[1]} channels like the samples, got {real.shape[1]}"
        )
    real = real[:, :, :frames]
    if real.shape[2] < frames:  # shorter real clips repeat their last frame
        real = torch.cat([real, real[:, :, -1:].expand(-1, -1, frames - real.shape[2], -1, -1)], 2)
    if real.shape[-2:] != (height, width):
        real = F.interpolate(real, size=(frames, height, width), mode="trilinear")
    nrow = nrow or max(1, min(8, samples.shape[0]))
    rows = [video_grid(part, nrow=nrow) for part in (real, samples)]
    sheet = torch.cat(rows, dim=2)  # (c, f, H_real + H_samples, W)
    base = Path(path)
    written = []
    for suffix in (".gif", ".mp4"):
        target = base.with_suffix(suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_video(sheet, target, fps=fps)
        written.append(target)
    return written
