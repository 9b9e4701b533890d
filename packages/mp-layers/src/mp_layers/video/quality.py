"""Do sampled clips look like `MovingShapes` data? Object, shape and motion measures.

Colour accuracy (`palette_color_accuracy`) cannot see that a generated clip shows two fragments of
the shape, speckles, or a smear. The measures here segment each frame of a batch of clips
`videos (b, c, f, h, w)` (c = 3 RGB or 1 luma, values in [0, 1]) into connected components and
check what real `MovingShapes` clips always show: exactly one object, of the sprite's size and
shape, moving at constant velocity and bouncing off the borders.

All measures are pure torch, vectorised over clips and frames (connected components by iterative
label propagation over 4-neighbours, no loop over pixels). Definitions:

- foreground (`object_masks`): a pixel nearer (Euclidean, in RGB or luma) to one of the four
  `PALETTE` colours than to black, the same nearest-reference rule as `predict_palette_color`.
- components (`connected_components`, `component_areas`): 4-connected foreground regions.
- specks: components of fewer than `min_speck` pixels; they are ignored by every measure here.
- the object of a frame: its largest component, when that is not a speck.

Calibration on real clips (`MovingShapes`, seed 0, 256 clips of 16 frames; RGB and luma agree):

| image size | sprite side | `object_rate` | `shape_accuracy` | displacement | path deviation |
|---|---|---|---|---|---|
| 8 | 2 | 1.000 | 0.305 (circle = square) | 0.58 px/frame | 0.97 px |
| 16 | 4 | 1.000 | 1.000 | 1.07 px/frame | 0.93 px |
| 32 | 8 | 1.000 | 1.000 | 1.97 px/frame | 0.88 px |
| 64 | 16 | 1.000 | 1.000 | 3.87 px/frame | 1.01 px |

(mean true speed: 0.50, 0.99, 1.98, 3.97 px/frame). Real clips are drawn exactly, so their shapes
are classified exactly from side 4 up (at side 2 the circle and the square are the same 2x2
block). What matters for samples is robustness: with 5% of the pixels along the sprite's edge
flipped, shape accuracy is 0.76 at side 4, 0.70 at side 5, 0.95 at side 6, 0.96 at side 8 and
1.00 at side 16; with Gaussian noise (sigma 0.2) 0.97, 0.93, 1.00, 1.00, 1.00. At side 4 the
circle is the 4x4 square less its corners (12 pixels) and the triangle has 8 pixels, so one wrong
pixel can change the class: `SHAPE_MIN_SIDE` (6) is the smallest side at which
`sample_quality_report` reports shape accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mp_layers.typecheck import typechecked
from mp_layers.validation import check_int
from mp_layers.video._color import PALETTE
from mp_layers.video.metrics import palette_color_accuracy
from mp_layers.video.motion import motion_stats, real_motion_stats
from mp_layers.video.objects import (
    _MIN_SPECK,
    SHAPE_MIN_SIDE,
    _check_side,
    _check_videos,
    _largest_objects,
    _reference_masks,
    component_areas,
    connected_components,
    object_masks,
    object_rate,
)
from mp_layers.video.shapes import SHAPE_NAMES

__all__ = [
    "SHAPE_MIN_SIDE",
    "component_areas",
    "connected_components",
    "motion_stats",
    "object_masks",
    "object_rate",
    "predict_shape",
    "real_motion_stats",
    "sample_quality_report",
    "shape_accuracy",
]


def _shape_features(objects: torch.Tensor, min_run: int) -> torch.Tensor:
    """`(..., h, w)` bool object masks → `(..., 2)` features of the object's core box, the
    bounding box of the rows and columns holding at least `min_run` of its pixels (so that stray
    one-pixel protrusions do not stretch it): the fill ratio of the core box (object pixels inside
    it / its area) and the share of those pixels in its upper half (the middle row of an
    odd-height box counts half). Objects without a core give (0, 0)."""
    objects = objects.float()
    height, width = objects.shape[-2:]
    rows = torch.arange(height, dtype=torch.float32, device=objects.device)
    cols = torch.arange(width, dtype=torch.float32, device=objects.device)
    big = float(height + width)

    def extent(counts: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inside = counts >= min_run
        first = torch.where(inside, coords, big).amin(-1)
        last = torch.where(inside, coords, -big).amax(-1)
        return first, last

    top, bottom = extent(objects.sum(-1), rows)
    left, right = extent(objects.sum(-2), cols)
    in_rows = (rows >= top[..., None]) & (rows <= bottom[..., None])
    in_cols = (cols >= left[..., None]) & (cols <= right[..., None])
    core = objects * in_rows[..., :, None] * in_cols[..., None, :]
    row_counts = core.sum(-1)
    area = row_counts.sum(-1)
    box = (bottom - top + 1).clamp_min(1) * (right - left + 1).clamp_min(1)
    middle = (top + bottom + 1) / 2  # in pixel-edge coordinates
    upper = (row_counts * (middle[..., None] - rows).clamp(0, 1)).sum(-1)
    features = torch.stack([area / box, upper / area.clamp_min(1)], -1)
    return torch.where(area[..., None] > 0, features, 0.0)


_MIN_RUN = 2  # from SHAPE_MIN_SIDE up, rows/columns of fewer pixels are left out of the core box
_FEATURE_SCALE = (1.0, 2.0)  # the upper-half share varies half as much as the fill ratio


@typechecked
def predict_shape(
    videos: torch.Tensor, *, sprite_side: int | None = None, min_speck: int = _MIN_SPECK
) -> torch.Tensor:
    """The shape of each clip's object, `videos (b, c, f, h, w)` → `(b,)` int64 index into
    `SHAPE_NAMES` (circle, square, triangle), -1 when no frame has an object.

    In every frame with an object (its largest component, not a speck), two scale-free features
    of the object are computed in its core box, the bounding box of the rows and columns holding
    at least 2 of its pixels (1 below a sprite side of `SHAPE_MIN_SIDE`, where the triangle's rows
    are too short), so that stray one-pixel protrusions do not stretch it: the fill ratio of the
    core box (square 1, circle ~0.8, triangle ~0.5-0.67) and the share of the object's pixels in
    the upper half of the box (square and circle 0.5, the upward triangle ~0.25-0.375). The frame
    votes for the shape whose exact sprite of side `sprite_side` (default
    `max(2, round(w / 4))`, drawn by `MovingShapes`'s own code, through the same features) is
    nearest (Euclidean, the upper-half share weighted 2); the clip's shape is the majority vote
    over its frames (ties to the lower index).
    """
    videos = _check_videos(videos)
    side = _check_side(sprite_side, videos)
    min_speck = check_int("min_speck", min_speck)
    objects, present = _largest_objects(videos, side, min_speck)
    scale = torch.tensor(_FEATURE_SCALE, device=videos.device)
    min_run = _MIN_RUN if side >= SHAPE_MIN_SIDE else 1
    features = _shape_features(objects, min_run) * scale  # (b, f, 2)
    templates = torch.stack(_reference_masks(side)).to(videos.device)
    references = _shape_features(templates, min_run) * scale
    votes = (features[..., None, :] - references).square().sum(-1).argmin(-1)  # (b, f)
    one_hot = torch.nn.functional.one_hot(votes, len(SHAPE_NAMES)) * present[..., None]
    tally = one_hot.sum(1)  # (b, 3)
    return torch.where(present.any(1), tally.argmax(1), -1)


def _check_indices(name: str, values: object, batch: int, count: int, what: str) -> torch.Tensor:
    tensor = torch.as_tensor(values)
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer {what} indices, got dtype {tensor.dtype}")
    if tensor.shape != (batch,):
        raise ValueError(f"{name}: expected shape ({batch},), got {tuple(tensor.shape)}")
    if bool(((tensor < 0) | (tensor >= count)).any()):
        raise ValueError(
            f"{name}: expected {what} indices in [0, {count - 1}], got {tensor.tolist()}"
        )
    return tensor


@typechecked
def shape_accuracy(
    videos: torch.Tensor,
    shapes: torch.Tensor | Sequence[int],
    *,
    sprite_side: int | None = None,
    min_speck: int = _MIN_SPECK,
) -> float:
    """Fraction of clips `(b, c, f, h, w)` whose `predict_shape` equals the requested shape index
    in `shapes (b,)` (into `SHAPE_NAMES`); a clip without an object is wrong. Real `MovingShapes`
    clips score 1.0 at image sizes 16, 32 and 64; for samples it is meaningful from a sprite side
    of `SHAPE_MIN_SIDE` up."""
    videos = _check_videos(videos)
    shapes = _check_indices("shapes", shapes, videos.shape[0], len(SHAPE_NAMES), "shape")
    predicted = predict_shape(videos, sprite_side=sprite_side, min_speck=min_speck)
    return (predicted == shapes.to(predicted.device)).double().mean().item()


def _percent(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _pixels(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


@typechecked
def sample_quality_report(
    videos: torch.Tensor,
    *,
    labels: torch.Tensor | Sequence[int] | None = None,
    shapes: torch.Tensor | Sequence[int] | None = None,
    image_size: int | None = None,
) -> tuple[dict[str, float | None], str]:
    """All the measures for a batch of sampled clips `(b, c, f, h, w)`, and one printable line.

    Figures (None when not computed, NaN when no frame qualified):
    `colour` (`palette_color_accuracy` against `labels`, when given); `object_rate`
    (`object_rate`); `shape` (`shape_accuracy` against `shapes`, when given and the sprite side
    is at least `SHAPE_MIN_SIDE`); `displacement` and `path_deviation` (`motion_stats`) and
    `real_displacement` and `real_path_deviation` (`real_motion_stats` of 64 real clips of the
    same image size and frame count; None when the size is below 8, the dataset's minimum).
    `image_size` (default: the clips' width) sets the sprite side `max(2, round(image_size / 4))`
    and the size of the real clips. The line reads e.g. `quality: colour 100.0% | one object
    41.0% of frames | shape 78.1% | motion 1.02 px/frame (real 1.05), path dev 0.31 px (real
    0.12)`; parts without a figure are left out, NaN prints as n/a.
    """
    videos = _check_videos(videos)
    size = videos.shape[-1] if image_size is None else check_int("image_size", image_size)
    side = max(2, round(size / 4))
    figures: dict[str, float | None] = {"colour": None, "shape": None}
    parts = ["quality:"]
    if labels is not None:
        figures["colour"] = palette_color_accuracy(
            videos, _check_indices("labels", labels, videos.shape[0], len(PALETTE), "colour")
        )
        parts.append(f"colour {_percent(figures['colour'])} |")
    figures["object_rate"] = object_rate(videos, sprite_side=side)
    parts.append(f"one object {_percent(figures['object_rate'])} of frames |")
    if shapes is not None:
        shapes = _check_indices("shapes", shapes, videos.shape[0], len(SHAPE_NAMES), "shape")
        if side >= SHAPE_MIN_SIDE:
            figures["shape"] = shape_accuracy(videos, shapes, sprite_side=side)
            parts.append(f"shape {_percent(figures['shape'])} |")
        else:
            parts.append(f"shape n/a (sprite side {side} < {SHAPE_MIN_SIDE}) |")
    stats = motion_stats(videos)
    figures.update(stats)
    real: dict[str, float | None] = {"displacement": None, "path_deviation": None}
    if size >= 8:
        real.update(real_motion_stats(size, videos.shape[2]))
    figures["real_displacement"] = real["displacement"]
    figures["real_path_deviation"] = real["path_deviation"]
    parts.append(
        f"motion {_pixels(stats['displacement'])} px/frame (real {_pixels(real['displacement'])}),"
        f" path dev {_pixels(stats['path_deviation'])} px"
        f" (real {_pixels(real['path_deviation'])})"
    )
    return figures, " ".join(parts)
