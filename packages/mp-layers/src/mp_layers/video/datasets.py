"""`VideoFolder` (clips on disk) and `collate_videos` (batches of dataset items)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mp_layers.typecheck import typechecked
from mp_layers.validation import check_int
from mp_layers.video._color import to_channels
from mp_layers.video.io import FRAME_SUFFIXES, VIDEO_SUFFIXES, count_frames, read_video


def _check_extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    if isinstance(extensions, str):  # a str is a sequence of str, so the type hint lets it pass
        raise TypeError(f"extensions: expected a tuple of suffixes, got the str {extensions!r}")
    lowered = tuple(str(e).lower() for e in extensions)
    known = VIDEO_SUFFIXES + FRAME_SUFFIXES
    if not lowered or any(e not in known for e in lowered):
        raise ValueError(f"extensions: expected suffixes from {known}, got {extensions!r}")
    return lowered


def _find_clips(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Video files with a suffix in `extensions`, plus, when `extensions` names frame suffixes,
    every folder that directly holds such frames (one clip per folder), in sorted path order."""
    videos = [e for e in extensions if e in VIDEO_SUFFIXES]
    frames = [e for e in extensions if e in FRAME_SUFFIXES]
    clips = set()
    for path in root.rglob("*"):
        if path.is_file() and path.suffix.lower() in videos:
            clips.add(path)
        elif path.is_file() and path.suffix.lower() in frames:
            clips.add(path.parent)
    return sorted(clips)


class VideoFolder(Dataset[dict[str, Any]]):
    """Video clips found recursively under `root`, as fixed-size training clips.

    Every file under `root` (any depth) whose suffix is in `extensions` is one clip, in sorted
    path order. Frame folders (for example frames extracted with ffmpeg) are clips too when
    `extensions` names frame suffixes (`extensions=VIDEO_SUFFIXES + FRAME_SUFFIXES`): every
    folder directly holding `.png`/`.jpg` files is one clip, its frames in natural name order
    (`read_video`), and `clip/` takes its caption from `clip.txt` beside it. Item `i` decodes frames `0, s, 2s, ...` (`s = frame_stride`) up to `num_frames`
    of them, resizes the shorter side to `image_size` and crops the centre square. A clip with
    fewer frames is padded by repeating its last frame (`pad_short=True`) or left out at
    construction (`pad_short=False`; counted in `num_short`). `random_flip` mirrors a whole clip
    left-right with probability 1/2 (one decision per clip, drawn from torch's global RNG).

    Items are dicts with the keys of every dataset here: `video` float32
    `(channels, num_frames, image_size, image_size)` in [0, 1] (`channels=1` is BT.601 luma);
    `text` the stripped contents of a caption sidecar (`clip.mp4` + `clip.txt`), or "" without
    one; `label` and `shape` are -1 (unknown).

    An empty folder (no matching files) raises `ValueError`. With `skip_undecodable=True`, files
    that cannot be opened are left out at construction with a warning and counted in
    `num_skipped`; a clip that still fails to decode later is replaced by the next one, again with
    a warning and a count (in the process that loaded it). Without it, a bad file raises
    `ValueError` naming it. Construction demuxes every file (no pixel decoding) when
    `skip_undecodable=True` or `pad_short=False`, and only lists files otherwise.
    """

    @typechecked
    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        image_size: int,
        num_frames: int,
        frame_stride: int = 1,
        random_flip: bool = False,
        extensions: Sequence[str] = VIDEO_SUFFIXES,
        pad_short: bool = True,
        skip_undecodable: bool = False,
        channels: int = 3,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root: expected an existing folder, got {self.root}")
        self.image_size = check_int("image_size", image_size)
        self.num_frames = check_int("num_frames", num_frames)
        self.frame_stride = check_int("frame_stride", frame_stride)
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"channels: expected 1 or 3, got {channels!r}")
        self.channels, self.random_flip = channels, random_flip
        self.pad_short, self.skip_undecodable = pad_short, skip_undecodable
        self.extensions = _check_extensions(extensions)
        self.num_skipped = 0
        self.num_short = 0
        files = _find_clips(self.root, self.extensions)
        if not files:
            raise ValueError(f"root: no video files with suffixes {self.extensions} in {self.root}")
        if skip_undecodable or not pad_short:
            files = self._probe(files)
        if not files:
            raise ValueError(
                f"root: no usable clips in {self.root} ({self.num_skipped} undecodable, "
                f"{self.num_short} shorter than {self.span} frames)"
            )
        self.files = files

    @property
    def span(self) -> int:
        """Frames a clip needs to give `num_frames` frames at `frame_stride`."""
        return (self.num_frames - 1) * self.frame_stride + 1

    def _skip(self, error: ValueError) -> None:
        self.num_skipped += 1
        warnings.warn(f"skipping undecodable video: {error}", stacklevel=3)

    def _probe(self, files: list[Path]) -> list[Path]:
        kept = []
        for file in files:
            try:
                length = count_frames(file)
            except ValueError as error:
                if not self.skip_undecodable:
                    raise
                self._skip(error)
                continue
            if not self.pad_short and length < self.span:
                self.num_short += 1
                continue
            kept.append(file)
        return kept

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, file: Path) -> dict[str, Any]:
        video = read_video(file, num_frames=self.span, image_size=self.image_size)
        video = video[:, :: self.frame_stride]
        if video.shape[1] < self.num_frames:  # repeat the last frame
            last = video[:, -1:].expand(-1, self.num_frames - video.shape[1], -1, -1)
            video = torch.cat([video, last], dim=1)
        if self.random_flip and bool(torch.rand(()) < 0.5):
            video = video.flip(-1)
        caption = file.with_suffix(".txt")
        text = caption.read_text(encoding="utf-8").strip() if caption.is_file() else ""
        video = to_channels(video, self.channels).contiguous()
        return {"video": video, "label": -1, "shape": -1, "text": text}

    def __getitem__(self, index: int) -> dict[str, Any]:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"index: expected an int, got {type(index).__name__}")
        if not 0 <= index < len(self):
            raise IndexError(f"index: expected 0 <= index < {len(self)}, got {index}")
        for offset in range(len(self)):
            file = self.files[(index + offset) % len(self)]
            try:
                return self._load(file)
            except ValueError as error:
                if not self.skip_undecodable:
                    raise
                self._skip(error)
        raise ValueError(f"no clip in {self.root} could be decoded")


@typechecked
def collate_videos(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch dataset items: tensors are stacked (`video` becomes `(B, C, F, H, W)`), ints become
    an int64 tensor `(B,)`, floats a float32 tensor, and strings (and anything else) stay lists."""
    if not items:
        raise ValueError("items: expected a non-empty sequence of dicts")
    if not all(isinstance(item, Mapping) for item in items):  # beartype samples only one item
        raise TypeError("items: expected every item to be a dict")
    keys = set(items[0])
    if any(set(item) != keys for item in items):
        raise ValueError(
            f"items: expected the same keys in every item, got {[sorted(i) for i in items]}"
        )
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if all(isinstance(v, torch.Tensor) for v in values):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise ValueError(
                    f"items: expected {key!r} tensors of one shape, got {sorted(shapes)}"
                )
            batch[key] = torch.stack(values)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            batch[key] = torch.tensor(values, dtype=torch.int64)
        elif all(isinstance(v, float) for v in values):
            batch[key] = torch.tensor(values, dtype=torch.float32)
        else:
            batch[key] = list(values)
    return batch
