"""`MovingShapes`: the embedded synthetic video dataset (one coloured shape bouncing on black)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import Dataset

from mp_layers.typecheck import typechecked
from mp_layers.validation import check_int
from mp_layers.video._color import COLOR_NAMES, PALETTE, to_channels

SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle")
"""Names of the shapes; `shape` indexes this tuple."""
_SEED_MULTIPLIER = 2654435761  # odd (Knuth's golden-ratio hash), so a bijection modulo 2**32


def _reflect(position: torch.Tensor, span: float) -> torch.Tensor:
    """Fold an unbounded coordinate into [0, span] as a ball bouncing between two walls."""
    return span - (position.remainder(2 * span) - span).abs()


def _direction(velocity: torch.Tensor, positions: torch.Tensor) -> str:
    """Where the shape goes along its faster axis in most frame steps (bounces flip the sign), as
    a word; ties and single frames use the initial velocity. Image y grows downwards."""
    axis = 0 if abs(velocity[0]) >= abs(velocity[1]) else 1
    votes = positions[:, axis].diff().sign().sum().item()
    forward = votes > 0 if votes != 0 else velocity[axis].item() > 0
    return ("right", "left", "down", "up")[2 * axis + (0 if forward else 1)]


class MovingShapes(Dataset[dict[str, Any]]):
    """Clips of one coloured shape moving at constant velocity and bouncing off the borders.

    Clip `index` is generated on the fly from a generator seeded with `(seed, index)` only, so it is
    the same on every call, process and machine. Each clip has a black background and exactly one
    shape (`SHAPE_NAMES`: circle, square or triangle pointing up) whose side is
    `side = max(2, round(image_size / 4))` pixels, filled with one `PALETTE` colour (red, green,
    blue, yellow). The shape's top-left corner starts uniformly in `[0, image_size - side]²` and
    moves `speed ∈ [0.5, 1.5) · image_size / 16` pixels per frame in a uniform random direction,
    reflecting at the borders, so the shape is fully inside every frame. It is drawn with its
    corner at the nearest whole pixel, so every frame shows the same sprite, translated. Clip
    `(seed, index)` comes from torch's CPU generator seeded with
    `(index + 2654435761 · seed) mod 2**32`.

    Items are dicts: `video` float32 `(channels, num_frames, image_size, image_size)` in [0, 1];
    `label` int colour index (0-3) into `PALETTE`/`COLOR_NAMES`; `shape` int index into
    `SHAPE_NAMES`; `text` a caption such as "a red circle moving left": the direction word names
    the faster velocity axis and the way the shape moves along it in most frame steps (bounces
    reverse it; a tie goes to the initial velocity). `channels=1` gives the BT.601 luma of the RGB clip
    (grey levels 0.299, 0.587, 0.114, 0.886); the label still names the colour.
    """

    @typechecked
    def __init__(
        self,
        num_videos: int = 1024,
        *,
        image_size: int = 32,
        num_frames: int = 16,
        channels: int = 3,
        seed: int = 0,
    ) -> None:
        self.num_videos = check_int("num_videos", num_videos)
        self.image_size = check_int("image_size", image_size, minimum=8)
        self.num_frames = check_int("num_frames", num_frames)
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"channels: expected 1 or 3, got {channels!r}")
        self.channels = channels
        self.seed = check_int("seed", seed, minimum=0)
        if seed >= 2**32:
            raise ValueError(f"seed: expected an int < 2**32, got {seed}")
        if num_videos > 2**32:
            raise ValueError(f"num_videos: expected an int <= 2**32, got {num_videos}")
        self.side = max(2, round(image_size / 4))

    def __len__(self) -> int:
        return self.num_videos

    def _generator(self, index: int) -> torch.Generator:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"index: expected an int, got {type(index).__name__}")
        if not 0 <= index < self.num_videos:
            raise IndexError(f"index: expected 0 <= index < {self.num_videos}, got {index}")
        # torch's CPU generator (mt19937) keeps 32 bits of a seed, so (seed, index) is folded into
        # 32 bits: distinct indices of one seed always get distinct streams (a multiplicative hash
        # of the seed shifts them, so different seeds start far apart).
        return torch.Generator().manual_seed((index + _SEED_MULTIPLIER * self.seed) % 2**32)

    def describe(self, index: int) -> dict[str, Any]:
        """The clip's parameters: `label`, `shape`, `velocity` (vx, vy) in pixels per frame and
        `positions` `(num_frames, 2)`, the top-left corner (x, y) of the shape in every frame."""
        generator = self._generator(index)
        label = int(torch.randint(len(PALETTE), (1,), generator=generator))
        shape = int(torch.randint(len(SHAPE_NAMES), (1,), generator=generator))
        span = float(self.image_size - self.side)
        start = torch.rand(2, generator=generator, dtype=torch.float64) * span
        angle = float(torch.rand(1, generator=generator, dtype=torch.float64)) * 2 * math.pi
        speed = (0.5 + float(torch.rand(1, generator=generator))) * self.image_size / 16
        velocity = torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64) * speed
        time = torch.arange(self.num_frames, dtype=torch.float64)
        positions = _reflect(start + time[:, None] * velocity, span)
        return {"label": label, "shape": shape, "velocity": velocity, "positions": positions}

    def _mask(self, shape: int, positions: torch.Tensor) -> torch.Tensor:
        """Boolean `(F, H, W)` mask: pixel centres tested against the shape, whose corner is
        snapped to the nearest whole pixel so every frame shows the same sprite, translated."""
        centres = torch.arange(self.image_size, dtype=torch.float64) + 0.5
        corners = positions.round()
        u = centres[None, None, :] - corners[:, 0, None, None]  # x inside the shape's box
        v = centres[None, :, None] - corners[:, 1, None, None]  # y inside the shape's box
        side, half = self.side, self.side / 2
        box = (u >= 0) & (u < side) & (v >= 0) & (v < side)
        if SHAPE_NAMES[shape] == "circle":
            return box & ((u - half) ** 2 + (v - half) ** 2 < half**2)
        if SHAPE_NAMES[shape] == "triangle":
            return box & ((u - half).abs() <= v / 2)
        return box

    def __getitem__(self, index: int) -> dict[str, Any]:
        spec = self.describe(index)
        mask = self._mask(spec["shape"], spec["positions"]).float()
        colour = torch.tensor(PALETTE[spec["label"]])
        video = to_channels(colour[:, None, None, None] * mask[None], self.channels)
        direction = _direction(spec["velocity"], spec["positions"])
        text = f"a {COLOR_NAMES[spec['label']]} {SHAPE_NAMES[spec['shape']]} moving {direction}"
        label, shape = spec["label"], spec["shape"]
        return {"video": video.contiguous(), "label": label, "shape": shape, "text": text}
