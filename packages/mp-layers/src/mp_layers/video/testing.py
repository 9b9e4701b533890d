"""Real encoded videos whose frames say which frame they are, for exact seek and clip tests.

`write_indexed_video(path, num_frames, ...)` encodes an h264 mp4 (or any container PyAV writes)
whose frame `k` shows `k` in three horizontal bands of grey (base 16, 16 grey levels apart, so
lossy compression and resizing cannot change the digits). `frame_index(frame)` reads it back from
an RGB frame (uint8 `(h, w, 3)` or float `(3, h, w)` in [0, 1]) of any size, cropped only left
and right. Timestamps can be given per frame (variable frame rate, a non-zero start).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import torch

from mp_layers.typecheck import typechecked

try:
    import av
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "mp_layers.video needs the video extra: pip install 'mp-layers[video]'"
    ) from exc

__all__ = ["frame_index", "indexed_frame", "write_indexed_video", "write_video_folder"]

_BANDS = 3  # digits per frame: up to 16 ** 3 = 4096 frames


@typechecked
def indexed_frame(index: int, height: int, width: int) -> np.ndarray:
    """uint8 `(height, width, 3)`: band `b` (top to bottom) is grey `16 * digit_b + 8`, the
    `b`-th base-16 digit of `index` (least significant first)."""
    if not 0 <= index < 16**_BANDS:
        raise ValueError(f"index: expected 0 <= index < {16**_BANDS}, got {index}")
    frame = np.empty((height, width, 3), np.uint8)
    edges = np.linspace(0, height, _BANDS + 1).round().astype(int)
    for band in range(_BANDS):
        frame[edges[band] : edges[band + 1]] = 16 * ((index >> (4 * band)) & 15) + 8
    return frame


@typechecked
def frame_index(frame: np.ndarray | torch.Tensor) -> int:
    """The index `indexed_frame` wrote into `frame` (read from the middle rows of each band)."""
    if isinstance(frame, torch.Tensor):  # (3, h, w) float in [0, 1]
        frame = (frame.detach().float().mean(0) * 255.0).numpy()
    else:
        frame = np.asarray(frame, np.float64)
        frame = frame.mean(-1) if frame.ndim == 3 else frame
    height = frame.shape[0]
    edges = np.linspace(0, height, _BANDS + 1)
    index = 0
    for band in range(_BANDS):
        middle = (edges[band] + edges[band + 1]) / 2
        margin = max(1, int((edges[band + 1] - edges[band]) / 4))
        rows = frame[int(middle) - margin + 1 : int(middle) + margin]
        digit = int(np.clip(np.round((rows.mean() - 8) / 16), 0, 15))
        index += digit << (4 * band)
    return index


@typechecked
def write_indexed_video(
    path: str | os.PathLike[str],
    num_frames: int,
    *,
    width: int = 176,
    height: int = 144,
    fps: float | Fraction = 25,
    keyframe_interval: int = 12,
    pts: Sequence[int] | None = None,
    time_base: Fraction = Fraction(1, 1000),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
) -> None:
    """Encode `num_frames` `indexed_frame`s to `path` with a keyframe every `keyframe_interval`
    frames (x264's scene cuts off). `pts` (ascending, in `time_base` units) gives each frame's
    timestamp for variable-rate or late-starting videos; by default frames are `1 / fps` apart
    from 0. Odd sizes need `pix_fmt="yuv444p"` (4:2:0 halves the chroma planes)."""
    rate = Fraction(fps).limit_denominator(1001)
    options = {"g": str(keyframe_interval), "keyint_min": str(keyframe_interval)}
    options.update({"sc_threshold": "0", "crf": "12", "preset": "veryfast"})
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if pts is not None:
            if len(pts) != num_frames:
                raise ValueError(f"pts: expected {num_frames} timestamps, got {len(pts)}")
            stream.codec_context.time_base = time_base
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(indexed_frame(index, height, width), "rgb24")
            if pts is not None:
                frame.pts, frame.time_base = int(pts[index]), time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@typechecked
def write_video_folder(root: str | os.PathLike[str], *, captions: bool = True) -> list[str]:
    """A small folder of real videos as users have them, for CLI tests: `a.mp4` (96x54, 25
    fps, 40 frames, keyframe every 12), `sub/b.mp4` (33x41 odd size, 29.97 fps, 30 frames, one
    keyframe), `c.mp4` (64x48, variable frame rate starting at 0.5 s, 25 frames); captions for
    `a` and `b` when `captions`. Returns the video paths."""
    from pathlib import Path

    folder = Path(root)
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    write_indexed_video(folder / "a.mp4", 40, width=96, height=54, keyframe_interval=12)
    write_indexed_video(
        folder / "sub" / "b.mp4",
        30,
        width=33,
        height=41,
        pix_fmt="yuv444p",
        fps=Fraction(30000, 1001),
        keyframe_interval=250,
    )
    write_indexed_video(
        folder / "c.mp4",
        25,
        width=64,
        height=48,
        pts=[500 + 40 * i + 9 * (i % 2) for i in range(25)],
    )
    if captions:
        (folder / "a.txt").write_text("a grey clip with bands\n", encoding="utf-8")
        (folder / "sub" / "b.txt").write_text("an odd sized clip\n", encoding="utf-8")
    return [str(folder / name) for name in ("a.mp4", "sub/b.mp4", "c.mp4")]
