"""Motion of the object in sampled clips: displacement per frame and deviation from a
constant-velocity path (bounces excluded), and the same figures for real `MovingShapes` clips."""

from __future__ import annotations

import functools
import math

import torch

from mp_layers.typecheck import typechecked
from mp_layers.validation import check_int
from mp_layers.video.objects import _MIN_SPECK, _check_videos, _default_side, _largest_objects
from mp_layers.video.shapes import MovingShapes


def _centroids(
    videos: torch.Tensor, min_speck: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centroid (x, y) in pixels `(b, f, 2)` of each frame's object, its presence `(b, f)`, and
    its distance (x, y) in pixels `(b, f, 2)` to the nearest left/right and top/bottom border."""
    objects, present = _largest_objects(videos, _default_side(videos), min_speck)
    weights = objects.double()
    height, width = objects.shape[-2:]
    area = weights.sum((-2, -1)).clamp_min(1)
    columns, rows = weights.sum(-2), weights.sum(-1)
    xs = torch.arange(width, dtype=torch.float64, device=objects.device)
    ys = torch.arange(height, dtype=torch.float64, device=objects.device)
    centres = torch.stack([(columns * xs).sum(-1) / area, (rows * ys).sum(-1) / area], -1)

    def gap(counts: torch.Tensor, coords: torch.Tensor, size: int) -> torch.Tensor:
        first = torch.where(counts > 0, coords, float(size)).amin(-1)
        last = torch.where(counts > 0, coords, -1.0).amax(-1)
        return torch.minimum(first, size - 1 - last)

    gaps = torch.stack([gap(columns, xs, width), gap(rows, ys, height)], -1)
    return centres, present, gaps


@typechecked
def motion_stats(videos: torch.Tensor, *, min_speck: int = _MIN_SPECK) -> dict[str, float]:
    """Motion of the object in `videos (b, c, f, h, w)`: `{"displacement", "path_deviation"}`.

    The position of a frame's object is the centroid (x, y), in pixels, of its largest component
    when that is not a speck (fewer than `min_speck` pixels); frames without one are skipped.

    - `displacement`: the mean Euclidean distance between the centroids of consecutive frames,
      over all clips and frame steps where both frames have an object. Real clips move
      `image_size / 16` pixels per frame on average.
    - `path_deviation`: the mean Euclidean norm of the second difference
      `c[t+1] - 2 c[t] + c[t-1]` of the centroids (0 on a constant-velocity path), over all clips
      and frame triples where all three frames have an object, excluding bounces: triples where
      x (or y) moves in opposite directions (strictly) before and after frame t while the
      object's bounding box at frame t is within `max(|dx[t-1]|, |dx[t]|) + 1` pixels of the
      left or right (top or bottom) border. Reversals away from the borders (jitter) count.
      Real clips are not
      0 here because the sprite is drawn at whole pixels (rounding gives second differences of
      up to 1 pixel per axis): compare with `real_motion_stats`.

    A figure is NaN when no step (or triple) qualifies.
    """
    videos = _check_videos(videos)
    min_speck = check_int("min_speck", min_speck)
    centres, present, gaps = _centroids(videos, min_speck)
    steps = centres.diff(dim=1)  # (b, f - 1, 2)
    step_ok = present[:, 1:] & present[:, :-1]
    distances = steps.norm(dim=-1)
    displacement = _masked_mean(distances, step_ok)
    bends = steps[:, 1:] - steps[:, :-1]  # (b, f - 2, 2)
    reach = torch.maximum(steps[:, 1:].abs(), steps[:, :-1].abs()) + 1
    bounces = ((steps[:, 1:] * steps[:, :-1] < 0) & (gaps[:, 1:-1] <= reach)).any(-1)
    bend_ok = step_ok[:, 1:] & step_ok[:, :-1] & ~bounces
    path_deviation = _masked_mean(bends.norm(dim=-1), bend_ok)
    return {"displacement": displacement, "path_deviation": path_deviation}


def _masked_mean(values: torch.Tensor, keep: torch.Tensor) -> float:
    count = int(keep.sum())
    if count == 0:
        return math.nan
    return float((values * keep).sum() / count)


@functools.lru_cache(maxsize=32)
def _real_motion_stats(image_size: int, num_frames: int, n: int) -> tuple[float, float]:
    dataset = MovingShapes(n, image_size=image_size, num_frames=num_frames, seed=0)
    videos = torch.stack([dataset[index]["video"] for index in range(n)])
    stats = motion_stats(videos)
    return stats["displacement"], stats["path_deviation"]


@typechecked
def real_motion_stats(image_size: int, num_frames: int, n: int = 64) -> dict[str, float]:
    """`motion_stats` of the first `n` real `MovingShapes` clips (seed 0, RGB) of this size and
    length, for comparison with samples (cached). E.g. 16 frames: displacement 1.09, 2.04 and
    4.01 px/frame and path deviation 0.94, 0.89 and 1.05 px at image sizes 16, 32 and 64."""
    image_size = check_int("image_size", image_size, minimum=8)
    num_frames = check_int("num_frames", num_frames)
    n = check_int("n", n)
    displacement, path_deviation = _real_motion_stats(image_size, num_frames, n)
    return {"displacement": displacement, "path_deviation": path_deviation}
