"""Decode chosen frames of a video: seek to the keyframe before them, decode forward only to the
last one, and convert (and resize, in the same swscale pass) only the frames kept.

`decode_frames(path, probe, indices, resize=..., crop=...)` returns uint8 `(len(indices), h, w,
3)` RGB. Frames are named by their position in decoded order (`probe.pts[k]` is frame `k`), so
any frame can be checked against a plain decode from the start.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mp_layers.typecheck import typechecked
from mp_layers.video.io import _decoding, _frame_files
from mp_layers.video.probe import VideoProbe, open_container

try:
    import av
    from av.video.reformatter import Interpolation, VideoReformatter
    from PIL import Image
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "mp_layers.video needs the video extra: pip install 'mp-layers[video]'"
    ) from exc

__all__ = ["cover_size", "decode_frames"]


@typechecked
def cover_size(height: int, width: int, size: tuple[int, int]) -> tuple[int, int]:
    """The smallest `(h, w)` with the aspect of `height x width` that covers `size = (H, W)`:
    scale by `max(H / height, W / width)`, so one side fits exactly and the other is cropped
    (for a square `size` the shorter side becomes `size`)."""
    scale = max(size[0] / height, size[1] / width)
    return max(size[0], round(height * scale)), max(size[1], round(width * scale))


def _crop(array: np.ndarray, crop: tuple[int, int, int, int] | None) -> np.ndarray:
    if crop is None:
        return array
    top, left, h, w = crop
    return array[top : top + h, left : left + w]


def _convert(
    frame: av.VideoFrame,
    reformatter: VideoReformatter,
    resize: tuple[int, int] | None,
    crop: tuple[int, int, int, int] | None,
) -> np.ndarray:
    height, width = resize if resize is not None else (frame.height, frame.width)
    rgb = reformatter.reformat(
        frame, width=width, height=height, format="rgb24", interpolation=Interpolation.AREA
    )
    return _crop(rgb.to_ndarray(), crop)


def _decode_container(
    source: Path | bytes,
    probe: VideoProbe,
    wanted: np.ndarray,
    resize: tuple[int, int] | None,
    crop: tuple[int, int, int, int] | None,
    threads: int,
) -> dict[int, np.ndarray]:
    """Frames `wanted` (sorted, unique) of `file` by position; seek first when the format can."""
    found: dict[int, np.ndarray] = {}
    last = int(wanted[-1])
    keep = set(wanted.tolist())
    with open_container(source) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = threads
        if threads != 1:
            stream.thread_type = "AUTO"  # frame and slice threads
        reformatter = VideoReformatter()
        for attempt in ("seek", "start") if probe.seekable else ("start",):
            if attempt == "seek":
                container.seek(int(probe.pts[wanted[0]]), stream=stream, backward=True)
            elif probe.seekable:  # the seek landed after the first frame wanted: start over
                container.seek(int(probe.pts[0]), stream=stream, backward=True)
            position = -1
            for frame in container.decode(stream):
                if frame.pts is None or not probe.seekable:
                    position += 1  # no timestamps to go by: count from the first frame
                else:
                    position = int(np.searchsorted(probe.pts, frame.pts))
                    if position >= len(probe.pts) or probe.pts[position] != frame.pts:
                        continue  # a frame the probe did not see (before the first packet)
                if position in keep and position not in found:
                    found[position] = _convert(frame, reformatter, resize, crop)
                if position >= last:
                    break
            if len(found) == len(keep):
                break
    return found


@typechecked
def decode_frames(
    source: str | os.PathLike[str] | bytes,
    probe: VideoProbe,
    indices: np.ndarray,
    *,
    resize: tuple[int, int] | None = None,
    crop: tuple[int, int, int, int] | None = None,
    threads: int = 0,
    name: str | None = None,
) -> np.ndarray:
    """The frames `indices` of a video as uint8 RGB `(len(indices), h, w, 3)`.

    Args:
        source: a video file, frame folder or the bytes of a video file, probed as `probe`
            (`probe_video(source)`).
        indices: int `(n,)` frame positions in decoded order, any order, repeats allowed.
        resize: `(height, width)` to scale every kept frame to (swscale's area filter, during
            the colour conversion); None keeps the decoded size.
        crop: `(top, left, height, width)` cut out of the (resized) frame; None keeps it whole.
        threads: decoder threads (0: FFmpeg picks; 1 in DataLoader workers, which already run in
            parallel).
        name: what errors call the video (default: the path, or "<bytes>").

    Seeks to the keyframe at or before the first frame wanted and decodes forward to the last
    one; if the seek lands late (a damaged index), decodes again from the start. A frame that
    still cannot be decoded raises `ValueError` naming the file and the frame.
    """
    file: Path | bytes = source if isinstance(source, bytes) else Path(source)
    label = name or (str(file) if isinstance(file, Path) else "<bytes>")
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or len(indices) == 0:
        raise ValueError(f"indices: expected a non-empty 1-d array, got shape {indices.shape}")
    if indices.min() < 0 or indices.max() >= probe.num_frames:
        raise ValueError(
            f"indices: expected frame positions in [0, {probe.num_frames}), got "
            f"[{indices.min()}, {indices.max()}] for {label}"
        )
    wanted = np.unique(indices)
    if isinstance(file, Path) and file.is_dir():
        frames = _frame_files(file)
        found = {}
        for position in wanted.tolist():
            with Image.open(frames[position]) as image:
                rgb = image.convert("RGB")
                if resize is not None:
                    rgb = rgb.resize((resize[1], resize[0]), Image.Resampling.BOX)
                found[position] = _crop(np.asarray(rgb), crop)
    else:
        found = _decoding(
            label, lambda: _decode_container(file, probe, wanted, resize, crop, threads)
        )
    missing = [p for p in wanted.tolist() if p not in found]
    if missing:
        raise ValueError(
            f"cannot decode video {label}: frames {missing[:5]} of {probe.num_frames} were not "
            "returned by the decoder (a truncated file?)"
        )
    return np.stack([found[p] for p in indices.tolist()])
