"""Segmenting sampled clips into objects: foreground masks, 4-connected components, their areas,
and the fraction of frames showing exactly one object (`object_rate`). Definitions and
calibration: `mp_layers.video.quality`."""

from __future__ import annotations

import functools

import torch

from mp_layers.typecheck import typechecked
from mp_layers.validation import check_float, check_floating, check_int
from mp_layers.video._color import palette_tensor
from mp_layers.video.shapes import SHAPE_NAMES, MovingShapes

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
