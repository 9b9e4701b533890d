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

import functools
import math
from collections.abc import Sequence

import torch

from mp_layers.typecheck import typechecked
from mp_layers.validation import check_float, check_floating, check_int
from mp_layers.video._color import PALETTE, palette_tensor
from mp_layers.video.metrics import palette_color_accuracy
from mp_layers.video.shapes import SHAPE_NAMES, MovingShapes

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

SHAPE_MIN_SIDE = 6
"""Smallest sprite side (pixels) at which `sample_quality_report` reports shape accuracy: below it
(image size < 24) a circle, square and triangle differ by a few pixels only (side 4: 12, 16 and 8
pixels), so a single wrong pixel of a sample can change the class."""

_MIN_SPECK = 3


def _check_videos(videos: object) -> torch.Tensor:
    videos = check_floating("videos", videos)
    if videos.ndim != 5 or videos.shape[1] not in (1, 3) or videos.shape[0] == 0:
        raise ValueError(
            "videos: expected shape (b, c, f, h, w) with b >= 1 and c in (1, 3), "
            f"got {tuple(videos.shape)}"
        )
    if min(videos.shape[2:]) == 0:
        raise ValueError(
            f"videos: expected at least one frame of at least 1x1 pixels, got {tuple(videos.shape)}"
        )
    return videos


def _default_side(videos: torch.Tensor) -> int:
    return max(2, round(videos.shape[-1] / 4))


@functools.lru_cache(maxsize=64)
def _reference_masks(side: int) -> tuple[torch.Tensor, ...]:
    """The exact `MovingShapes` sprites `(side, side)` bool, one per `SHAPE_NAMES` entry, drawn by
    `MovingShapes._mask` itself (corner at the origin of a `4 * side` image)."""
    dataset = MovingShapes(1, image_size=4 * side)
    origin = torch.zeros(1, 2, dtype=torch.float64)
    return tuple(dataset._mask(shape, origin)[0, :side, :side] for shape in range(len(SHAPE_NAMES)))


def _reference_areas(side: int) -> list[int]:
    return [int(mask.sum()) for mask in _reference_masks(side)]


def _speck_limit(min_speck: int, side: int) -> int:
    """Components smaller than this are specks: `min_speck`, but never more than the smallest
    real sprite (the side-2 triangle has 2 pixels)."""
    return min(min_speck, min(_reference_areas(side)))


@typechecked
def object_masks(videos: torch.Tensor) -> torch.Tensor:
    """Foreground of every frame: `videos (b, c, f, h, w)` → `(b, f, h, w)` bool.

    A pixel is foreground when it is strictly nearer (Euclidean distance over channels) to one of
    the four `PALETTE` colours than to black, the rule `predict_palette_color` uses: with c = 3
    the references are the RGB colours, with c = 1 their BT.601 luma (0.299, 0.587, 0.114,
    0.886), so a grey pixel is foreground above half the darkest luma (0.057, for blue), and an
    RGB pixel is foreground when e.g. its red exceeds 0.5 with the other channels at 0. No fixed
    brightness threshold is used: one threshold cannot suit both RGB and the dark luma of blue.
    Non-finite values count as black; values outside [0, 1] are allowed.
    """
    videos = _check_videos(videos)
    pixels = videos.detach().float().nan_to_num(0.0, 0.0, 0.0)
    references = palette_tensor(videos.shape[1]).to(pixels.device)  # (4, c)
    # |p - r|^2 < |p|^2  <=>  2 p.r - |r|^2 > 0, for some palette colour r.
    scores = torch.einsum("bcfhw,kc->bfhwk", pixels, 2 * references)
    return (scores - references.square().sum(-1)).amax(-1) > 0


@typechecked
def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """Label the 4-connected components of a boolean `mask (..., h, w)` → `(..., h, w)` int64.

    Background is 0; every pixel of a component gets the same positive label, distinct components
    (of one `(h, w)` image) get distinct labels, and labels need not be consecutive (a component's
    label is 1 + the largest flat index `y * w + x` of its pixels). Computed by label propagation
    over the foreground pixels only: each starts with its own label, then repeatedly takes the
    maximum over itself and its four neighbours and jumps to the label of the pixel its label
    names (which lies in the same component), until nothing changes; no loop over pixels.
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"mask: expected a bool tensor, got dtype {mask.dtype}")
    if mask.ndim < 2:
        raise ValueError(f"mask: expected shape (..., h, w), got {tuple(mask.shape)}")
    height, width = mask.shape[-2:]
    flat = mask.reshape(-1)
    pixels = flat.nonzero().squeeze(1)  # global flat indices of the foreground, ascending
    count = len(pixels)
    out = torch.zeros(flat.shape, dtype=torch.int64, device=mask.device)
    if count == 0:
        return out.view(mask.shape)
    own = torch.arange(count, device=mask.device)
    lookup = torch.full(flat.shape, -1, dtype=torch.int64, device=mask.device)
    lookup[pixels] = own
    row = (pixels // width) % height
    col = pixels % width
    neighbours = []
    sides = [(row > 0, -width), (row < height - 1, width), (col > 0, -1), (col < width - 1, 1)]
    for inside, step in sides:
        found = lookup[torch.where(inside, pixels + step, pixels)]
        neighbours.append(torch.where(inside & (found >= 0), found, own))
    # Labels are indices into `pixels` (ascending in flat order, so the maximum is the pixel of
    # largest flat index); each names a pixel of the same component whose label is >= it.
    labels = own
    while True:
        spread = labels
        for neighbour in neighbours:
            spread = torch.maximum(spread, labels[neighbour])
        spread = spread[spread]  # pointer jump
        if torch.equal(spread, labels):
            break
        labels = spread
    out[pixels] = pixels[labels] % (height * width) + 1
    return out.view(mask.shape)


@typechecked
def component_areas(labels: torch.Tensor) -> torch.Tensor:
    """Pixel counts of the components of `labels (..., h, w)` (from `connected_components`) →
    `(..., h * w + 1)` int64: entry `k` is the area of the component labelled `k` in that image
    (0 where no component has that label; entry 0, the background, is always 0)."""
    if labels.dtype != torch.int64 or labels.ndim < 2:
        raise TypeError(
            f"labels: expected an int64 tensor (..., h, w), got dtype {labels.dtype} "
            f"and shape {tuple(labels.shape)}"
        )
    size = labels.shape[-2] * labels.shape[-1] + 1
    flat = labels.reshape(-1, size - 1)
    offsets = torch.arange(flat.shape[0], device=labels.device)[:, None] * size
    counts = torch.bincount((flat + offsets).flatten(), minlength=flat.shape[0] * size)
    counts = counts.view(flat.shape[0], size)
    counts[:, 0] = 0
    return counts.view(*labels.shape[:-2], size)


def _check_side(sprite_side: object, videos: torch.Tensor) -> int:
    if sprite_side is None:
        return _default_side(videos)
    return check_int("sprite_side", sprite_side, minimum=2)


@typechecked
def object_rate(
    videos: torch.Tensor,
    *,
    sprite_side: int | None = None,
    min_speck: int = _MIN_SPECK,
    area_range: tuple[float, float] = (0.4, 2.5),
) -> float:
    """Fraction of all frames of `videos (b, c, f, h, w)` that show exactly one object of
    plausible size.

    Components (`connected_components` of `object_masks`) smaller than `min_speck` pixels are
    specks and ignored (`min_speck` is lowered to the smallest real sprite's area when that is
    smaller: the side-2 triangle has 2 pixels). A frame counts when exactly one component remains
    and its area lies in `[area_range[0] * A, area_range[1] * A]`, where `A` is the mean pixel
    area of the three `MovingShapes` sprites of side `sprite_side` (default
    `max(2, round(w / 4))`, the dataset's rule), rasterised exactly by `MovingShapes`'s own
    drawing code: e.g. side 8 → circle 52, square 64, triangle 32, `A` = 49.3, so areas in
    [19.7, 123.3] pass. One mean for all shapes keeps the measure shape-agnostic; every real
    sprite lies within 0.66-1.32 `A` at every side.
    """
    videos = _check_videos(videos)
    side = _check_side(sprite_side, videos)
    min_speck = check_int("min_speck", min_speck)
    low, high = _check_area_range(area_range)
    mean_area = sum(_reference_areas(side)) / len(SHAPE_NAMES)
    areas = component_areas(connected_components(object_masks(videos)))
    kept = areas >= _speck_limit(min_speck, side)
    area = (areas * kept).amax(-1).double()
    good = (kept.sum(-1) == 1) & (area >= low * mean_area) & (area <= high * mean_area)
    return good.double().mean().item()


def _check_area_range(area_range: tuple[float, float]) -> tuple[float, float]:
    low = check_float("area_range[0]", area_range[0], low=0.0)
    high = check_float("area_range[1]", area_range[1], low=0.0)
    if low > high:
        raise ValueError(f"area_range: expected low <= high, got {area_range!r}")
    return low, high


def _largest_objects(
    videos: torch.Tensor, side: int, min_speck: int = _MIN_SPECK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame: the mask `(b, f, h, w)` of the largest component, and whether it is an object
    `(b, f)` (it exists and is not a speck). Ties go to the larger label."""
    labels = connected_components(object_masks(videos))
    areas = component_areas(labels)
    best_area, _ = areas.max(-1)
    # The last maximum (flip) so that ties are decided by label, deterministically.
    best = areas.shape[-1] - 1 - areas.flip(-1).argmax(-1)
    present = best_area >= _speck_limit(min_speck, side)
    return (labels == best[..., None, None]) & present[..., None, None], present


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
