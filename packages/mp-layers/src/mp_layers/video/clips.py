"""Where the clips of a video are: the frame positions of clip `j` of a video, as pure functions
of the video's frame times, the clip settings and `(seed, epoch, index)`.

A video's *timeline* is the sequence of frames a clip steps through: every frame (`fps=None`,
taken every `frame_stride`-th), or the frames shown at times `0, 1/fps, 2/fps, ...` (`fps`
given: a 25 and a 30 fps file then give clips of the same speed; a variable-frame-rate file is
resampled by its timestamps). A clip of `num_frames` frames covers `span` timeline steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mp_layers.typecheck import typechecked
from mp_layers.validation import check_int

__all__ = ["SAMPLINGS", "ClipSpec", "fps_timeline", "item_rng"]

Sampling = Literal["random", "uniform", "first"]
SAMPLINGS: tuple[str, ...] = ("random", "uniform", "first")


@typechecked
def fps_timeline(seconds: np.ndarray, fps: float) -> np.ndarray:
    """int64 positions of the frames shown at times `0, 1/fps, 2/fps, ...` (each the last frame
    that started at or before that time), up to the last frame's start time.

    `seconds` is float `(n,)`, ascending, the frames' start times with `seconds[0] == 0`."""
    count = math.floor(float(seconds[-1]) * fps + 1e-6) + 1
    times = np.arange(count, dtype=np.float64) / fps
    positions = np.searchsorted(seconds, times + 1e-9, side="right") - 1
    return positions.astype(np.int64)


SPLITS = ("all", "train", "held_out")


def split_timeline(timeline: np.ndarray, span: int, part: str, fraction: float) -> np.ndarray:
    """The `part` of a video's `timeline` for a held-out split in time: "train" is the start,
    "held_out" the end, holding `max(ceil(fraction * n), span)` of the `n` steps (one clip's
    `span` when the video allows) but never more than half; "all" is the whole timeline. A
    one-step timeline cannot be split: both parts are that step."""
    if part not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {part!r}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held_out_fraction: expected a float in (0, 1), got {fraction!r}")
    n = len(timeline)
    if part == "all" or n < 2:
        return timeline
    held = max(1, min(max(math.ceil(fraction * n), span), n // 2))
    return timeline[: n - held] if part == "train" else timeline[n - held :]


@typechecked
def item_rng(seed: int, epoch: int, index: int, stream: int = 0) -> np.random.Generator:
    """The random stream of one item: a pure function of `(seed, epoch, index, stream)`, so
    DataLoader workers never repeat each other and a resumed run draws what an uninterrupted one
    would."""
    return np.random.default_rng([stream, seed, epoch, index])


@typechecked
@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut from a timeline of `length` steps.

    Attributes:
        num_frames: frames per clip.
        step: timeline steps between a clip's frames (`frame_stride`, or 1 with `fps`).
        clips_per_video: clips per video, or "all" for consecutive non-overlapping clips covering
            each video (at least one).
        sampling: where each clip starts: "random" (a new start each epoch; with several clips
            per video, clip `j` starts in the `j`-th of equal parts of the possible starts, so the
            clips spread over the video), "uniform" (starts evenly spread, fixed; one clip starts
            in the middle), "first" (from the first frame; one clip per video).
    """

    num_frames: int
    step: int
    clips_per_video: int | Literal["all"]
    sampling: Sampling

    def __post_init__(self) -> None:
        check_int("num_frames", self.num_frames)
        check_int("step", self.step)
        if self.clips_per_video != "all":
            check_int("clips_per_video", self.clips_per_video)
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling: expected one of {SAMPLINGS}, got {self.sampling!r}")
        if self.sampling == "first" and self.clips_per_video not in (1, "all"):
            raise ValueError(
                f"sampling='first' gives one clip per video (or 'all'); got clips_per_video="
                f"{self.clips_per_video!r}: use sampling='uniform' or 'random'"
            )

    @property
    def span(self) -> int:
        """Timeline steps one clip covers."""
        return (self.num_frames - 1) * self.step + 1

    def count(self, length: int) -> int:
        """Clips of a video whose timeline has `length` steps."""
        if self.clips_per_video == "all":
            return max(1, length // self.span)
        return self.clips_per_video

    def start(self, length: int, clip: int, count: int, rng: np.random.Generator) -> int:
        """The first timeline step of clip `clip` of `count` (`rng` draws the random starts;
        a shared shift for "all")."""
        room = max(0, length - self.span)  # the last possible start
        if self.clips_per_video == "all":
            spare = max(0, length - count * self.span)
            shift = int(rng.integers(0, spare + 1)) if self.sampling == "random" else 0
            return shift + clip * self.span
        if self.sampling == "first":
            return 0
        if self.sampling == "uniform":
            return room // 2 if count == 1 else round(clip * room / (count - 1))
        low, high = clip * (room + 1) // count, (clip + 1) * (room + 1) // count
        if high <= low:  # more clips than starts: any start
            low, high = 0, room + 1
        return int(rng.integers(low, high))

    def positions(self, timeline: np.ndarray, start: int) -> np.ndarray:
        """The frame positions of the clip starting at `start`: int64 `(num_frames,)`. A clip
        running past the end repeats the last frame."""
        steps = start + self.step * np.arange(self.num_frames)
        return timeline[np.minimum(steps, len(timeline) - 1)].astype(np.int64)
