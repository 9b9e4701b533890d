"""Reading and writing video files: `read_video`, `write_video`, `video_grid`.

Decoding and encoding go through PyAV, whose wheels bundle FFmpeg (no system ffmpeg is needed);
still frames go through Pillow. Videos are float RGB in [0, 1], laid out `(C, F, H, W)`.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from einops import rearrange

from mp_layers.typecheck import typechecked
from mp_layers.validation import check_floating, check_int

try:
    import av
    import numpy as np
    from av.video.reformatter import VideoReformatter
    from PIL import Image
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "mp_layers.video needs the video extra: pip install 'mp-layers[video]'"
    ) from exc

VIDEO_SUFFIXES = (".gif", ".mp4", ".webm", ".avi")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
WRITE_SUFFIXES = (".gif", ".mp4")
# Errors a decoder can raise for a broken file; they are re-raised as ValueError naming the file.
_DECODE_ERRORS = (av.error.FFmpegError, OSError, ValueError, RuntimeError, EOFError)
_T = TypeVar("_T")


def _natural_key(name: str) -> list[int | str]:
    """Sort key that orders `frame2.png` before `frame10.png`."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES]
    if not files:
        raise ValueError(f"cannot read video {folder}: the folder has no {FRAME_SUFFIXES} frames")
    return sorted(files, key=lambda p: _natural_key(p.name))


def _decoding(path: Path | str, decode: Callable[[], _T]) -> _T:
    """Run `decode`, turning any decoder failure into a ValueError that names the file."""
    try:
        return decode()
    except _DECODE_ERRORS as exc:
        raise ValueError(f"cannot decode video {path}: {type(exc).__name__}: {exc}") from exc


def _read_image(file: Path) -> np.ndarray:
    with Image.open(file) as image:
        return np.asarray(image.convert("RGB"))


def _read_frames_folder(folder: Path, limit: int | None) -> np.ndarray:
    arrays = []
    for file in _frame_files(folder)[:limit]:
        arrays.append(_read_image(file))
    if len({a.shape for a in arrays}) > 1:
        raise ValueError(f"cannot read video {folder}: frames differ in size")
    return np.stack(arrays)


def _read_container(path: Path, limit: int | None) -> np.ndarray:
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("the file has no video stream")
        # One reformatter for the clip: `frame.to_ndarray(format=...)` builds a new swscale
        # context for every frame, which costs more than decoding a small frame.
        reformatter = VideoReformatter()
        arrays = []
        for frame in container.decode(container.streams.video[0]):
            arrays.append(reformatter.reformat(frame, format="rgb24").to_ndarray())
            if limit is not None and len(arrays) >= limit:
                break
    if not arrays:
        raise ValueError("no frames were decoded")
    return np.stack(arrays)


def _check_path(path: str | os.PathLike[str], suffixes: tuple[str, ...]) -> Path:
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"no such video file or frame folder: {file}")
    if file.is_file() and file.suffix.lower() not in suffixes:
        raise ValueError(f"cannot read video {file}: expected a suffix in {suffixes}")
    return file


@typechecked
def count_frames(path: str | os.PathLike[str]) -> int:
    """Number of frames in a video file or frame folder, counted without decoding pixels.

    Container files are demuxed packet by packet (cheap next to decoding); a file that cannot be
    opened or demuxed raises `ValueError` naming the file, like `read_video`.
    """
    file = _check_path(path, VIDEO_SUFFIXES)
    if file.is_dir():
        return len(_frame_files(file))

    def demux() -> int:
        with av.open(str(file)) as container:
            if not container.streams.video:
                raise ValueError("the file has no video stream")
            packets = container.demux(container.streams.video[0])
            count = sum(1 for packet in packets if packet.size > 0)
        if count == 0:
            raise ValueError("the video stream has no frames")
        return count

    return _decoding(file, demux)


@typechecked
def resize_center_crop(video: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize `(C, F, H, W)` so the shorter side is `image_size` (bilinear, antialiased), then
    crop the centre `image_size × image_size` square. Returns `(C, F, image_size, image_size)`."""
    video = check_floating("video", video)
    if video.ndim != 4:
        raise ValueError(f"video: expected shape (c, f, h, w), got {tuple(video.shape)}")
    size = check_int("image_size", image_size)
    height, width = video.shape[-2:]
    if min(height, width) != size:
        scale = size / min(height, width)
        new_hw = (max(size, round(height * scale)), max(size, round(width * scale)))
        frames = rearrange(video, "c f h w -> f c h w")
        frames = F.interpolate(frames, size=new_hw, mode="bilinear", antialias=True)
        video = rearrange(frames, "f c h w -> c f h w").clamp(0.0, 1.0)
        height, width = new_hw
    top, left = (height - size) // 2, (width - size) // 2
    return video[..., top : top + size, left : left + size]


@typechecked
def read_video(
    path: str | os.PathLike[str], *, num_frames: int | None = None, image_size: int | None = None
) -> torch.Tensor:
    """Read a video as a float32 RGB tensor `(3, F, H, W)` with values in [0, 1].

    `path` is a `.gif`, `.mp4`, `.webm` or `.avi` file, a `.png`/`.jpg` image (one frame), or a
    folder of `.png`/`.jpg` frames taken
    in natural order of their names (`f2.png` before `f10.png`). `num_frames` keeps only the first
    `num_frames` frames (decoding stops there); a shorter clip is returned whole, with fewer frames,
    so callers decide how to pad. `image_size` resizes the shorter side to `image_size`
    (antialiased) and crops the centre square, giving `(3, F, image_size, image_size)`.

    Raises `FileNotFoundError` for a missing path and `ValueError` naming the file (the decoder's
    exception chained as the cause) for a file that cannot be decoded or an unknown suffix.
    """
    file = _check_path(path, VIDEO_SUFFIXES + FRAME_SUFFIXES)
    limit = None if num_frames is None else check_int("num_frames", num_frames)
    if file.is_dir():
        frames = _read_frames_folder(file, limit)
    elif file.suffix.lower() in FRAME_SUFFIXES:  # one image: a one-frame video
        frames = _decoding(file, lambda: _read_image(file)[None])
    else:
        frames = _decoding(file, lambda: _read_container(file, limit))
    video = rearrange(torch.from_numpy(frames), "f h w c -> c f h w").float().div_(255.0)
    if image_size is not None:
        video = resize_center_crop(video, image_size)
    return video.contiguous()


def _check_video_to_write(video: object, suffix: str) -> torch.Tensor:
    video = check_floating("video", video)
    if video.ndim != 4 or video.shape[0] not in (1, 3) or 0 in video.shape:
        raise ValueError(
            f"video: expected shape (c, f, h, w) with c in (1, 3), got {tuple(video.shape)}"
        )
    if not bool(torch.isfinite(video).all()):
        raise ValueError("video: expected finite values, got NaN or inf")
    low, high = video.min().item(), video.max().item()
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"video: expected values in [0, 1], got [{low:.4g}, {high:.4g}]; clamp first"
        )
    if suffix == ".mp4" and (video.shape[-2] % 2 or video.shape[-1] % 2):
        raise ValueError(
            f"video: mp4 (yuv420p) needs an even height and width, got {tuple(video.shape[-2:])}; "
            "pad or crop the frames, or write a .gif"
        )
    return video


def _encode_gif(frames: np.ndarray, path: str, rate: Fraction) -> None:
    # One palette for the whole clip (Pillow's median cut over all frames), encoded by FFmpeg:
    # Pillow's own GIF writer merges identical consecutive frames, which would lose frames.
    count, height, width, _ = frames.shape
    montage = Image.fromarray(frames.reshape(count * height, width, 3))
    palette_image = montage.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    indices = np.asarray(palette_image).reshape(count, height, width)
    rgb = np.zeros((256, 3), np.uint8)
    used = np.asarray(palette_image.getpalette() or [], np.uint8).reshape(-1, 3)[:256]
    rgb[: len(used)] = used
    argb = np.concatenate([np.full((256, 1), 255, np.uint8), rgb], axis=1)
    with av.open(path, "w", format="gif") as container:
        stream = container.add_stream("gif", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "pal8"
        for index in indices:
            pal8: Any = (np.ascontiguousarray(index), argb)  # PyAV's stubs omit the pal8 pair
            frame = av.VideoFrame.from_ndarray(pal8, format="pal8")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _encode_mp4(frames: np.ndarray, path: str, rate: Fraction) -> None:
    _, height, width, _ = frames.shape
    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate, options={"crf": "15"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())


@typechecked
def write_video(video: torch.Tensor, path: str | os.PathLike[str], *, fps: float = 8) -> None:
    """Write a video `(C, F, H, W)` with values in [0, 1] (C = 3 for RGB, 1 for grey) to `path`.

    The suffix picks the format: `.gif` (one shared 256-colour palette, every frame kept) or
    `.mp4` (H.264, yuv420p, near-lossless CRF 15; needs even H and W, otherwise `ValueError`).
    Values outside [0, 1] raise `ValueError` rather than being clamped silently. The file is
    written to a temporary name in the same folder and renamed into place, so a crash never
    leaves a half-written video at `path`.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise ValueError(f"path: expected a suffix in {WRITE_SUFFIXES}, got {target.name!r}")
    if not target.parent.is_dir():
        raise ValueError(f"path: the folder {target.parent} does not exist")
    if isinstance(fps, bool) or not 0 < fps < math.inf:
        raise ValueError(f"fps: expected a positive number, got {fps!r}")
    video = _check_video_to_write(video, suffix).detach().to("cpu", torch.float32)
    video = video.expand(3, -1, -1, -1)
    frames = rearrange((video * 255.0).round().to(torch.uint8), "c f h w -> f h w c")
    frames_np = np.ascontiguousarray(frames.numpy())
    rate = Fraction(fps).limit_denominator(1001)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=suffix, dir=target.parent
    )
    os.close(handle)
    try:
        (_encode_gif if suffix == ".gif" else _encode_mp4)(frames_np, temporary, rate)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


@typechecked
def video_grid(
    videos: torch.Tensor, nrow: int, *, padding: int = 2, pad_value: float = 0.0
) -> torch.Tensor:
    """Tile a batch of videos `(B, C, F, H, W)` into one video `(C, F, H', W')` for sample sheets.

    `nrow` tiles go in each row (the last row is filled with `pad_value` tiles), and `padding`
    pixels of `pad_value` separate the tiles and frame the sheet: with `rows = ceil(B / nrow)`,
    `H' = rows * (H + padding) + padding` and `W' = nrow * (W + padding) + padding` (even when H,
    W and padding are even, as mp4 needs).
    """
    videos = check_floating("videos", videos)
    if videos.ndim != 5 or videos.shape[0] == 0:
        raise ValueError(
            f"videos: expected shape (b, c, f, h, w) with b >= 1, got {tuple(videos.shape)}"
        )
    nrow = check_int("nrow", nrow)
    padding = check_int("padding", padding, minimum=0)
    rows = math.ceil(videos.shape[0] / nrow)
    missing = rows * nrow - videos.shape[0]
    if missing:
        filler = videos.new_full((missing, *videos.shape[1:]), float(pad_value))
        videos = torch.cat([videos, filler])
    tiles = F.pad(videos, (0, padding, 0, padding), value=float(pad_value))
    grid = rearrange(tiles, "(r n) c f h w -> c f (r h) (n w)", n=nrow)
    return F.pad(grid, (padding, 0, padding, 0), value=float(pad_value))
