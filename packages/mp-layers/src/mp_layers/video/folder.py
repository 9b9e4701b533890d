"""`VideoFolder`: training clips cut from anywhere in the videos of a folder.

Every video is probed once at construction (`probe_video`: timestamps and size, no pixels) and
kept as a few numpy arrays for the whole folder, so DataLoader workers share them copy-on-write
and their memory stays flat. Item `i` names clip `j` of video `v`; its frames are planned by
`ClipSpec` from `(seed, epoch, i)` alone and decoded by `decode_frames` (seek to the keyframe
before the clip, decode forward to its last frame, resize while converting).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from mp_layers.typecheck import typechecked
from mp_layers.validation import check_int
from mp_layers.video._color import to_channels
from mp_layers.video.clips import ClipSpec, fps_timeline, item_rng, split_timeline
from mp_layers.video.decode import cover_size, decode_frames
from mp_layers.video.io import FRAME_SUFFIXES, VIDEO_SUFFIXES
from mp_layers.video.probe import VideoProbe, probe_video

__all__ = ["CROPS", "VideoFolder", "check_clip_options"]

CROPS = ("center", "random")
# Appended to the error of an undecodable file: how to train on the rest.
SKIP_HINT = "skip_undecodable=True, flag --skip-undecodable, leaves such files out with a warning"


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
    every folder that directly holds such frames (one video per folder), in sorted path order."""
    videos = [e for e in extensions if e in VIDEO_SUFFIXES]
    frames = [e for e in extensions if e in FRAME_SUFFIXES]
    clips = set()
    for path in root.rglob("*"):
        if path.is_file() and path.suffix.lower() in videos:
            clips.add(path)
        elif path.is_file() and path.suffix.lower() in frames:
            clips.add(path.parent)
    return sorted(clips)


@typechecked
def check_clip_options(
    image_size: int | tuple[int, int],
    frame_stride: int,
    fps: float | None,
    crop: str,
) -> tuple[int, int]:
    """Check the clip arguments shared by `VideoFolder` and `VideoShards`; returns the clip's
    `(height, width)`."""
    if isinstance(image_size, tuple):
        if len(image_size) != 2:
            raise ValueError(f"image_size: expected an int or (height, width), got {image_size}")
        size = (check_int("image_size", image_size[0]), check_int("image_size", image_size[1]))
    else:
        size = (check_int("image_size", image_size),) * 2
    check_int("frame_stride", frame_stride)
    if fps is not None:
        if isinstance(fps, bool) or not 0 < fps < float("inf"):
            raise ValueError(f"fps: expected a positive number or None, got {fps!r}")
        if frame_stride != 1:
            raise ValueError(
                f"fps and frame_stride are exclusive: fps={fps} resamples by timestamps, "
                f"frame_stride={frame_stride} steps over frames; give one of them"
            )
    if crop not in CROPS:
        raise ValueError(f"crop: expected one of {CROPS}, got {crop!r}")
    return size


def read_caption(video: Path) -> str | None:
    """The caption of `video` from its sidecar: `clip.txt` (the stripped text), else `clip.json`
    (its "caption" or "text" value); None without a sidecar. A sidecar that is not UTF-8 (or
    not JSON) raises `ValueError` naming it."""
    import json

    for suffix in (".txt", ".json"):
        sidecar = video.with_suffix(suffix)
        if not sidecar.is_file():
            continue
        try:
            text = sidecar.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"caption {sidecar} is not UTF-8 text ({error})") from None
        if suffix == ".txt":
            return text.strip()
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"caption {sidecar} is not valid JSON ({error})") from None
        value = meta.get("caption", meta.get("text", "")) if isinstance(meta, dict) else ""
        return str(value or "").strip()
    return None


class ClipMaker:
    """Plans and decodes the clips of one video for `VideoFolder` and `VideoShards`: the clip
    settings those datasets share, checked once."""

    def __init__(
        self,
        *,
        image_size: int | tuple[int, int],
        num_frames: int,
        frame_stride: int,
        fps: float | None,
        clips_per_video: int | Literal["all"],
        sampling: str,
        crop: str,
        random_flip: bool,
        channels: int,
        split: str = "all",
        held_out_fraction: float = 0.1,
    ) -> None:
        self.size = check_clip_options(image_size, frame_stride, fps, crop)
        split_timeline(np.zeros(0), 1, split, held_out_fraction)  # checks both
        self.split, self.held_out_fraction = split, held_out_fraction
        step = 1 if fps is not None else frame_stride
        self.spec = ClipSpec(num_frames, step, clips_per_video, sampling)  # type: ignore[arg-type]
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"channels: expected 1 or 3, got {channels!r}")
        self.fps, self.frame_stride, self.crop = fps, frame_stride, crop
        self.random_flip, self.channels = random_flip, channels

    def timeline(self, probe: VideoProbe) -> np.ndarray:
        """The frame positions a clip steps through (see `mp_layers.video.clips`), of the
        `split` part of the video (`split_timeline`)."""
        if self.fps is None:
            timeline = np.arange(probe.num_frames, dtype=np.int64)
        else:
            timeline = fps_timeline(probe.seconds, self.fps)
        return split_timeline(timeline, self.spec.span, self.split, self.held_out_fraction)

    def plan(
        self,
        probe: VideoProbe,
        clip: int,
        count: int,
        start_rng: np.random.Generator,
        augment_rng: np.random.Generator,
    ) -> dict[str, Any]:
        """Clip `clip` of `count` of a video: `frame_indices` int64 `(num_frames,)`, `resize`
        (the size frames are scaled to), `crop` (top, left, height, width), `flip` and `fps`
        (of the clip as sampled). `start_rng` draws the start, `augment_rng` the crop and flip."""
        timeline = self.timeline(probe)
        start = self.spec.start(len(timeline), clip, count, start_rng)
        resize = cover_size(probe.height, probe.width, self.size)
        spare_h, spare_w = resize[0] - self.size[0], resize[1] - self.size[1]
        if self.crop == "random":
            top = int(augment_rng.integers(0, spare_h + 1))
            left = int(augment_rng.integers(0, spare_w + 1))
        else:
            top, left = spare_h // 2, spare_w // 2
        flip = bool(augment_rng.random() < 0.5) if self.random_flip else False
        return {
            "frame_indices": self.spec.positions(timeline, start),
            "resize": resize,
            "crop": (top, left, *self.size),
            "flip": flip,
            "fps": float(self.fps) if self.fps is not None else probe.fps / self.frame_stride,
        }

    def item(
        self, data: Path | bytes, probe: VideoProbe, plan: dict[str, Any], *, text: str, source: str
    ) -> dict[str, Any]:
        """Decode the clip `plan` of the video `data` (a file, frame folder or file bytes) into
        a dataset item (see `VideoFolder`); `source` names it in the item and in errors."""
        frames = decode_frames(
            data,
            probe,
            plan["frame_indices"],
            resize=plan["resize"],
            crop=plan["crop"],
            threads=1 if get_worker_info() is not None else 0,
            name=source,
        )
        video = torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(255.0)
        if plan["flip"]:
            video = video.flip(-1)
        return {
            "video": to_channels(video, self.channels).contiguous(),
            "label": -1,
            "shape": -1,
            "text": text,
            "source": source,
            "frame_indices": torch.from_numpy(plan["frame_indices"]),
            "fps": plan["fps"],
        }


class VideoFolder(Dataset[dict[str, Any]]):
    """Fixed-size training clips from the videos found recursively under `root`.

    Every file under `root` whose suffix is in `extensions` is a video, in sorted path order.
    Frame folders are videos too when `extensions` names frame suffixes (`extensions=
    VIDEO_SUFFIXES + FRAME_SUFFIXES`): every folder directly holding `.png`/`.jpg` frames, in
    natural name order, taken at `FRAME_FOLDER_FPS`; `clip/` takes its caption from `clip.txt`.

    Clips (see `mp_layers.video.clips`): `clips_per_video` clips per video (an int, or "all" for
    consecutive non-overlapping clips covering each video), placed by `sampling` ("random": a
    new start every epoch, "uniform": evenly spread, "first": from frame 0). A clip has
    `num_frames` frames, every `frame_stride`-th, or resampled to `fps` frames per second by
    timestamps (exclusive with `frame_stride`). `len()` is videos x clips per video. A video
    shorter than a clip repeats its last frame (`pad_short=True`) or is left out at construction
    (`pad_short=False`; counted in `num_short`).

    Frames are resized so they cover `image_size` (an int for square clips, or `(height,
    width)`; aspect kept: the short side fits) and cropped (`crop` "center" or "random");
    `random_flip` mirrors a whole clip left-right with probability 1/2. Every random choice is a
    pure function of `(seed, epoch, index)`: `set_epoch(epoch)` draws new starts and crops, and
    the `Trainer` passes the epoch to its DataLoader workers.

    Items are dicts: `video` float32 `(channels, num_frames, height, width)` in [0, 1]
    (`channels=1` is BT.601 luma); `text`, the caption (`read_caption`: a `.txt` or `.json`
    sidecar, read and checked at construction; one that is not UTF-8 raises `ValueError` naming
    it) or ""; `label` and `shape` -1 (unknown); `source`, the file;
    `frame_indices` int64 `(num_frames,)`, the positions of the clip's frames in the file's
    decoded order; `fps`, the clip's frame rate as sampled.

    `split="train"` or `"held_out"` keeps the start or the end of every video (a held-out split
    in time for folders of few videos: `clips.split_timeline`, `held_out_fraction` of each
    video, at least a clip's span where the video allows); `options` holds the constructor's
    keyword arguments, so `VideoFolder(folder.root, **{**folder.options, "split": ...})` makes
    the other part.

    Bad files (empty, no index, no video stream, undecodable) raise a `ValueError` naming the
    file at construction, where every file is probed. With `skip_undecodable=True` they are left
    out with a warning and counted in `num_skipped`; a clip that still fails to decode later is
    replaced by a clip of the next video, with a warning and a count (in the process that loaded
    it). An empty folder raises `ValueError`.
    """

    @typechecked
    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        image_size: int | tuple[int, int],
        num_frames: int,
        frame_stride: int = 1,
        fps: float | None = None,
        clips_per_video: int | Literal["all"] = 1,
        sampling: Literal["random", "uniform", "first"] = "random",
        crop: Literal["center", "random"] = "center",
        random_flip: bool = False,
        seed: int = 0,
        extensions: Sequence[str] = VIDEO_SUFFIXES,
        pad_short: bool = True,
        skip_undecodable: bool = False,
        channels: int = 3,
        split: Literal["all", "train", "held_out"] = "all",
        held_out_fraction: float = 0.1,
    ) -> None:
        self.options = {k: v for k, v in locals().items() if k not in ("self", "root", "__class__")}
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root: expected an existing folder, got {self.root}")
        self.maker = ClipMaker(
            image_size=image_size,
            num_frames=num_frames,
            frame_stride=frame_stride,
            fps=fps,
            clips_per_video=clips_per_video,
            sampling=sampling,
            crop=crop,
            random_flip=random_flip,
            channels=channels,
            split=split,
            held_out_fraction=held_out_fraction,
        )
        self.spec, self.size = self.maker.spec, self.maker.size
        self.image_size, self.num_frames, self.frame_stride = image_size, num_frames, frame_stride
        self.fps, self.channels, self.random_flip, self.seed = fps, channels, random_flip, seed
        self.pad_short, self.skip_undecodable = pad_short, skip_undecodable
        self.extensions = _check_extensions(extensions)
        self.epoch = 0
        self.num_skipped = 0
        self.num_short = 0
        files = _find_clips(self.root, self.extensions)
        if not files:
            raise ValueError(f"root: no video files with suffixes {self.extensions} in {self.root}")
        self._index(files)

    # -- construction: probe every file once, keep numpy arrays ------------------------------

    def _skip(self, error: ValueError) -> None:
        self.num_skipped += 1
        warnings.warn(f"skipping undecodable video: {error}", stacklevel=3)

    def _timeline_length(self, probe: VideoProbe) -> int:
        return len(self.maker.timeline(probe))

    def _index(self, files: list[Path]) -> None:
        kept, probes = [], []
        for file in files:
            try:
                probe = probe_video(file)
            except ValueError as error:
                if not self.skip_undecodable:
                    raise ValueError(f"{error} ({SKIP_HINT})") from error
                self._skip(error)
                continue
            if not self.pad_short and self._timeline_length(probe) < self.spec.span:
                self.num_short += 1
                continue
            kept.append(str(file))
            probes.append(probe)
        if not kept:
            raise ValueError(
                f"root: no usable videos in {self.root} ({self.num_skipped} undecodable, "
                f"{self.num_short} shorter than a clip of {self.spec.span} frames)"
            )
        self._paths = np.array(kept)
        self._captions = np.array([read_caption(Path(p)) or "" for p in kept])
        self._pts = np.concatenate([p.pts for p in probes])
        self._pts_offsets = np.cumsum([0] + [p.num_frames for p in probes]).astype(np.int64)
        self._time_base = np.array(
            [(p.time_base.numerator, p.time_base.denominator) for p in probes], dtype=np.int64
        )
        self._sizes = np.array([(p.height, p.width) for p in probes], dtype=np.int64)
        self._seekable = np.array([p.seekable for p in probes], dtype=bool)
        self._lengths = np.array([self._timeline_length(p) for p in probes], dtype=np.int64)
        counts = [self.spec.count(int(n)) for n in self._lengths]
        self._clip_offsets = np.cumsum([0, *counts]).astype(np.int64)

    # -- the dataset ---------------------------------------------------------------------------

    @property
    def files(self) -> list[Path]:
        """The videos used, in order."""
        return [Path(p) for p in self._paths]

    @property
    def has_captions(self) -> bool:
        """Whether any video has a non-empty caption sidecar."""
        return bool((np.char.str_len(self._captions.astype(str)) > 0).any())

    @property
    def span(self) -> int:
        """Timeline steps a clip needs (frames at `frame_stride`, or steps at `fps`)."""
        return self.spec.span

    def __len__(self) -> int:
        return int(self._clip_offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        """Use the random starts and crops of `epoch` from now on."""
        self.epoch = check_int("epoch", epoch, minimum=0)

    def probe(self, video: int) -> VideoProbe:
        """The probe of video `video` (0 <= video < len(files))."""
        low, high = self._pts_offsets[video], self._pts_offsets[video + 1]
        numerator, denominator = self._time_base[video]
        height, width = self._sizes[video]
        return VideoProbe(
            self._pts[low:high],
            Fraction(int(numerator), int(denominator)),
            int(width),
            int(height),
            bool(self._seekable[video]),
        )

    def locate(self, index: int) -> tuple[int, int]:
        """`(video, clip)` of item `index`."""
        video = int(np.searchsorted(self._clip_offsets, index, side="right")) - 1
        return video, index - int(self._clip_offsets[video])

    def plan(self, index: int, epoch: int | None = None) -> dict[str, Any]:
        """What item `index` of `epoch` (default: the current one) holds, without decoding
        (`ClipMaker.plan`: `frame_indices`, `resize`, `crop`, `flip`, `fps`) plus `video`."""
        epoch = self.epoch if epoch is None else epoch
        video, clip = self.locate(index)
        count = int(self._clip_offsets[video + 1] - self._clip_offsets[video])
        whole = self.spec.clips_per_video == "all"  # one random shift for all clips of a video
        start_rng = item_rng(self.seed, epoch, video if whole else index, 1 if whole else 0)
        plan = self.maker.plan(
            self.probe(video), clip, count, start_rng, item_rng(self.seed, epoch, index, 2)
        )
        return {"video": video, **plan}

    def _load(self, index: int) -> dict[str, Any]:
        plan = self.plan(index)
        file = Path(self._paths[plan["video"]])
        text = str(self._captions[plan["video"]])
        return self.maker.item(file, self.probe(plan["video"]), plan, text=text, source=str(file))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index: expected an int, got {type(index).__name__}")
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index: expected 0 <= index < {len(self)}, got {index}")
        for _ in range(len(self._paths)):
            try:
                return self._load(index)
            except ValueError as error:
                if not self.skip_undecodable:
                    raise
                self._skip(error)
                video, _ = self.locate(index)  # replace by the next video's first clip
                index = int(self._clip_offsets[(video + 1) % len(self._paths)])
        raise ValueError(f"no clip in {self.root} could be decoded")
