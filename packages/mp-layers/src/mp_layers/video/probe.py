"""Probe a video once: its frames' timestamps, size and frame rate, without decoding pixels.

`probe_video(path)` demuxes the file packet by packet (cheap next to decoding) and returns a
`VideoProbe`: the presentation timestamps of every frame in the order a decoder returns them
(sorted), the stream's time base, the frame size and the average frame rate. Seeking and clip
sampling work on these arrays only, so a dataset of thousands of files keeps one small numpy
array per file rather than per-frame Python objects.

Frame folders (`.png`/`.jpg` frames) have no timestamps: their frame `k` has timestamp `k` in
a time base of `1 / FRAME_FOLDER_FPS` seconds.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from mp_layers.typecheck import typechecked
from mp_layers.video.io import VIDEO_SUFFIXES, _check_path, _decoding, _frame_files

try:
    import av
    from PIL import Image
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "mp_layers.video needs the video extra: pip install 'mp-layers[video]'"
    ) from exc

__all__ = ["FRAME_FOLDER_FPS", "VideoProbe", "open_container", "probe_video"]

FRAME_FOLDER_FPS = 25.0


@typechecked
@dataclass(frozen=True)
class VideoProbe:
    """What a decoder needs to know about one video before decoding any of it.

    Attributes:
        pts: int64 `(num_frames,)`, the presentation timestamps of the frames in decoded order
            (ascending), in units of `time_base`. Frame `k` of the video is the frame with
            timestamp `pts[k]`.
        time_base: seconds per timestamp unit.
        width, height: the frame size in pixels.
        seekable: whether the decoder can seek (False for GIFs and frame folders: they are read
            from their first frame).
    """

    pts: np.ndarray
    time_base: Fraction
    width: int
    height: int
    seekable: bool

    @property
    def num_frames(self) -> int:
        return len(self.pts)

    @property
    def seconds(self) -> np.ndarray:
        """float64 `(num_frames,)`: each frame's time in seconds after the first frame."""
        return (self.pts - self.pts[0]).astype(np.float64) * float(self.time_base)

    @property
    def fps(self) -> float:
        """The average frame rate: frames per second over the span of the timestamps (a
        one-frame video reports `FRAME_FOLDER_FPS`)."""
        span = float(self.seconds[-1])
        return (self.num_frames - 1) / span if span > 0 else FRAME_FOLDER_FPS


def _probe_folder(folder: Path) -> VideoProbe:
    files = _frame_files(folder)
    with Image.open(files[0]) as image:
        width, height = image.size
    pts = np.arange(len(files), dtype=np.int64)
    return VideoProbe(pts, Fraction(1) / Fraction(FRAME_FOLDER_FPS), width, height, False)


@typechecked
def open_container(source: Path | bytes) -> av.container.InputContainer:
    """A PyAV input container over a file or the bytes of one (a shard member)."""
    return av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), mode="r")


def _probe_container(source: Path | bytes) -> VideoProbe:
    with open_container(source) as container:
        if not container.streams.video:
            raise ValueError("the file has no video stream")
        stream = container.streams.video[0]
        if stream.time_base is None:
            raise ValueError("the video stream has no time base")
        stamps = [
            packet.pts for packet in container.demux(stream) if packet.size > 0
        ]  # flushing packets are empty
        width, height = stream.codec_context.width, stream.codec_context.height
        time_base = Fraction(stream.time_base)
        seekable = container.format.name not in ("gif",)
    if not stamps:
        raise ValueError("the video stream has no frames")
    if any(stamp is None for stamp in stamps):
        # Streams without timestamps (rare: raw streams) are counted in decode order.
        pts = np.arange(len(stamps), dtype=np.int64)
        seekable = False
    else:
        pts = np.sort(np.asarray(stamps, dtype=np.int64))
        if len(np.unique(pts)) != len(pts):
            raise ValueError("two frames have the same timestamp")
    if width <= 0 or height <= 0:
        raise ValueError(f"the video stream has no frame size ({width}x{height})")
    return VideoProbe(pts, time_base, int(width), int(height), seekable)


@typechecked
def probe_video(source: str | os.PathLike[str] | bytes, *, name: str | None = None) -> VideoProbe:
    """Probe a video file, frame folder or the bytes of a video file (see the module
    docstring). A video that cannot be opened or demuxed, or has no video stream or no frames,
    raises `ValueError` naming it (`name` names bytes; default "<bytes>")."""
    if isinstance(source, bytes):
        return _decoding(name or "<bytes>", lambda: _probe_container(source))
    file = _check_path(source, VIDEO_SUFFIXES)
    if file.is_dir():
        return _probe_folder(file)
    return _decoding(file, lambda: _probe_container(file))
