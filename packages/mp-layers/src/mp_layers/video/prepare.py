"""`prepare_videos`: transcode a folder of videos for fast training (`mp-layers prepare-videos`).

Each video is decoded once and re-encoded as h264 with its short side scaled to `short_side`
(never enlarged; even sizes, as yuv420p needs) and a keyframe every `keyframe_interval`
seconds, keeping every frame's timestamp (variable frame rates stay variable; the first frame
starts at 0). Seeking a clip then decodes at most one second of small frames. Captions
(`.txt` sidecars) are kept and a `.json` sidecar records the source, frame count, size and
frame rate. Outputs go to a mirror of the source folder, or, with `shard_size`, into WebDataset
tar shards of `shard_size` videos (`00000.tar`, ... with `KEY.mp4`, `KEY.txt`, `KEY.json`:
video2dataset's layout, read by `VideoShards`).

Resumable: an output that exists is skipped (outputs are written to a temporary name and
renamed, so a crash leaves no half-written file). A file that fails is reported and counted,
never fatal.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from mp_layers.typecheck import typechecked
from mp_layers.validation import check_int
from mp_layers.video.folder import read_caption
from mp_layers.video.io import VIDEO_SUFFIXES, _decoding

try:
    import av
    import webdataset as wds
    from av.video.reformatter import Interpolation, VideoReformatter
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "mp_layers.video needs the video extra: pip install 'mp-layers[video]'"
    ) from exc

__all__ = ["PrepareSummary", "prepare_videos", "transcode_video"]


@typechecked
@dataclass
class PrepareSummary:
    """What `prepare_videos` did: outputs written, outputs already there, failures by file."""

    written: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"written": self.written, "existing": self.existing, "failed": self.failed}


def _even_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    scale = 1.0 if short_side is None else min(1.0, short_side / min(height, width))
    return max(2, round(height * scale / 2) * 2), max(2, round(width * scale / 2) * 2)


def _encode(
    source: Path, short_side: int | None, keyframe_interval: float, crf: int
) -> tuple[bytes, dict[str, Any]]:
    with av.open(str(source), mode="r") as container:
        if not container.streams.video:
            raise ValueError("the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = Fraction(stream.average_rate or stream.guessed_rate or 25)
        height, width = _even_size(
            stream.codec_context.height, stream.codec_context.width, short_side
        )
        gop = max(1, round(float(rate) * keyframe_interval))
        buffer = io.BytesIO()
        reformatter = VideoReformatter()
        frames, first = 0, None
        with av.open(buffer, "w", format="mp4") as output:
            encoder = output.add_stream(
                "libx264",
                rate=rate,
                options={
                    "crf": str(crf),
                    "g": str(gop),
                    "keyint_min": str(gop),
                    "sc_threshold": "0",
                    "preset": "fast",
                },
            )
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            time_base = stream.time_base or Fraction(1, 1000)
            encoder.codec_context.time_base = time_base
            for frame in container.decode(stream):
                if frame.pts is not None:
                    first = frame.pts if first is None else first
                scaled = reformatter.reformat(
                    frame,
                    width=width,
                    height=height,
                    format="yuv420p",
                    interpolation=Interpolation.AREA,
                )
                scaled.pts = None if frame.pts is None else frame.pts - first
                scaled.time_base = time_base
                output.mux(encoder.encode(scaled))
                frames += 1
            output.mux(encoder.encode())
    if frames == 0:
        raise ValueError("no frames were decoded")
    meta = {
        "source": str(source),
        "frames": frames,
        "height": height,
        "width": width,
        "fps": float(rate),
    }
    return buffer.getvalue(), meta


@typechecked
def transcode_video(
    source: str | os.PathLike[str],
    *,
    short_side: int | None = 128,
    keyframe_interval: float = 1.0,
    crf: int = 18,
) -> tuple[bytes, dict[str, Any]]:
    """Transcode one video (see the module docstring); returns the mp4's bytes and its metadata
    (`source`, `frames`, `height`, `width`, `fps`). A file that cannot be decoded raises
    `ValueError` naming it."""
    if short_side is not None:
        check_int("short_side", short_side, minimum=2)
    if not keyframe_interval > 0:
        raise ValueError(f"keyframe_interval: expected seconds > 0, got {keyframe_interval!r}")
    file = Path(source)
    return _decoding(file, lambda: _encode(file, short_side, keyframe_interval, crf))


def _atomic_bytes(target: Path, write: Any) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        write(temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it private
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _write_bytes(target: Path, data: bytes) -> None:
    _atomic_bytes(target, lambda path: Path(path).write_bytes(data))


def _key(relative: Path) -> str:
    """A WebDataset key (no dots: webdataset splits a member's name at its first dot)."""
    return relative.with_suffix("").as_posix().replace("/", "__").replace(".", "_")


def _progress(items: list[Any], show: bool, desc: str) -> Iterator[Any]:
    if not show:
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, desc=desc, unit="video", file=sys.stderr)


@typechecked
def prepare_videos(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    short_side: int | None = 128,
    keyframe_interval: float = 1.0,
    shard_size: int | None = None,
    crf: int = 18,
    progress: bool = True,
) -> PrepareSummary:
    """Transcode every video under `source` into `out` (see the module docstring). Returns a
    `PrepareSummary`; failures are also printed to stderr, one line each."""
    root, target = Path(source), Path(out)
    if not root.is_dir():
        raise ValueError(f"source: expected an existing folder, got {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise ValueError(f"source: no video files with suffixes {VIDEO_SUFFIXES} in {root}")
    target.mkdir(parents=True, exist_ok=True)
    summary = PrepareSummary()

    def convert(file: Path) -> tuple[bytes, dict[str, Any], str | None] | None:
        try:
            data, meta = transcode_video(
                file, short_side=short_side, keyframe_interval=keyframe_interval, crf=crf
            )
            return data, meta, read_caption(file)
        except ValueError as error:
            summary.failed[str(file)] = str(error)
            print(f"prepare-videos: skipped {file}: {error}", file=sys.stderr)
            return None

    if shard_size is None:
        for file in _progress(files, progress, "prepare-videos"):
            relative = file.relative_to(root)
            video = (target / relative).with_suffix(".mp4")
            if video.exists():
                summary.existing.append(str(video))
                continue
            converted = convert(file)
            if converted is None:
                continue
            data, meta, caption = converted
            if caption is not None:
                _write_bytes(video.with_suffix(".txt"), caption.encode("utf-8"))
            _write_bytes(video.with_suffix(".json"), json.dumps(meta).encode())
            _write_bytes(video, data)  # last: the video marks the output done
            summary.written.append(str(video))
        return summary
    check_int("shard_size", shard_size)
    groups = [files[i : i + shard_size] for i in range(0, len(files), shard_size)]
    for number, group in enumerate(_progress(groups, progress, "prepare-videos shards")):
        shard = target / f"{number:05d}.tar"
        if shard.exists():
            summary.existing.append(str(shard))
            continue
        samples = []
        for file in group:
            converted = convert(file)
            if converted is not None:
                data, meta, caption = converted
                sample = {
                    "__key__": _key(file.relative_to(root)),
                    "mp4": data,
                    "json": json.dumps(meta).encode(),
                }
                if caption is not None:
                    sample["txt"] = caption.encode("utf-8")
                samples.append(sample)
        if not samples:
            continue

        def write_shard(path: str, samples: list[dict[str, Any]] = samples) -> None:
            with open(path, "wb") as handle, wds.TarWriter(handle) as writer:
                for sample in samples:
                    writer.write(sample)

        _atomic_bytes(shard, write_shard)
        summary.written.append(str(shard))
    return summary
