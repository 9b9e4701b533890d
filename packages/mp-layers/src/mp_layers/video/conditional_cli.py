"""The `sample` flags of conditional sampling and long videos, shared by the model packages'
command lines: continue a video file, interpolate it, upsample it, start from an image, or make
more frames than the model was trained on; and the mark that shows the given frames in the
written sheet.

    --init-video FILE --extend N      continue FILE to N frames (windows knowing --overlap frames)
    --interpolate K --init-video FILE K - 1 new frames between consecutive frames of FILE
    --upsample-from FILE              FILE, --upsample-factor times larger (default 2)
    --first-frame IMAGE               a clip that starts from IMAGE (image to video)
    --frames N                        N frames; beyond the training length: temporal windows
    --cond-method replace|guidance    how given frames condition the rest (default: guidance)
    --reconstruction-weight W         w_r of reconstruction guidance (default 10)
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mp_layers.conditioning import ConditionalSampling, known_frames
from mp_layers.typecheck import typechecked
from mp_layers.video.io import read_video

__all__ = [
    "ConditionalRequest",
    "add_conditioning_arguments",
    "conditional_request",
    "mark_known_frames",
    "sample_conditional",
]

MODES = ("extend", "interpolate", "upsample", "first_frame")


@typechecked
def add_conditioning_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the flags of the module docstring (not `--frames`, which each package has)."""
    group = parser.add_argument_group("conditioning and long videos")
    add = group.add_argument
    add("--init-video", default=None, help="a video file to --extend or --interpolate")
    add("--extend", type=int, default=None, help="continue --init-video to this many frames")
    add("--interpolate", type=int, default=None, help="K: K - 1 new frames between given ones")
    add("--upsample-from", default=None, help="a low-resolution video file to upsample")
    add("--upsample-factor", type=int, default=2, help="how many times larger (--upsample-from)")
    add("--first-frame", default=None, help="an image (.png/.jpg) the clips start from")
    add("--overlap", type=int, default=None, help="frames shared by consecutive windows")
    add("--cond-method", choices=("replace", "guidance"), default="guidance",
        help="replacement, or reconstruction guidance (Ho et al. 2022)")  # fmt: skip
    add("--reconstruction-weight", type=float, default=10.0, help="w_r of the guidance")
    return parser


@typechecked
@dataclass(frozen=True)
class ConditionalRequest:
    """What the flags ask for: `mode` (one of `MODES`, or None for a plain or long sample) and
    the given video `(1, c, f, h, w)` in [0, 1] at the size the model samples."""

    mode: str | None
    video: Tensor | None


@typechecked
def conditional_request(args: argparse.Namespace, image_size: int) -> ConditionalRequest:
    """Check the conditioning flags and read their files (resized and centre-cropped to
    `image_size`, or `image_size / --upsample-factor` for `--upsample-from`). At most one use
    at a time; each error names the flag."""
    asked = {
        "extend": args.extend is not None,
        "interpolate": args.interpolate is not None,
        "upsample": args.upsample_from is not None,
        "first_frame": args.first_frame is not None,
    }
    chosen = [mode for mode, on in asked.items() if on]
    if len(chosen) > 1:
        flags = ", ".join(f"--{mode.replace('_', '-')}" for mode in chosen)
        raise ValueError(f"expected one of --extend, --interpolate, --upsample-from, "
                         f"--first-frame, got {flags}")  # fmt: skip
    mode = chosen[0] if chosen else None
    if mode in ("extend", "interpolate") and args.init_video is None:
        raise ValueError(f"--{mode}: expected --init-video FILE, the video to {mode}")
    if args.init_video is not None and mode not in ("extend", "interpolate"):
        raise ValueError("--init-video: expected --extend N or --interpolate K with it")
    if args.reconstruction_weight < 0:
        raise ValueError(
            f"--reconstruction-weight: expected a number >= 0, got {args.reconstruction_weight}"
        )
    if mode is None:
        return ConditionalRequest(None, None)
    if mode == "upsample":
        factor = args.upsample_factor
        if factor < 2 or image_size % factor:
            raise ValueError(
                f"--upsample-factor: expected an int >= 2 dividing the model's size {image_size}"
                f", got {factor}"
            )
        video = read_video(args.upsample_from, image_size=image_size // factor)
    else:
        path = args.first_frame if mode == "first_frame" else args.init_video
        video = read_video(path, image_size=image_size)
        if mode == "first_frame":
            video = video[:, :1]
    return ConditionalRequest(mode, video[None])


@typechecked
def sample_conditional(
    model: ConditionalSampling,
    request: ConditionalRequest,
    args: argparse.Namespace,
    *,
    batch_size: int,
    frames: int,
    **sample_kwargs: Any,
) -> tuple[Tensor, list[bool]]:
    """Sample `batch_size` videos as `request` asks, with the package's `sample_kwargs`
    (labels or text, guidance, steps, generator); returns them `(b, c, f, h, w)` in [0, 1] and
    which frames were given."""
    method = {"method": args.cond_method, "weight": args.reconstruction_weight}
    video = None if request.video is None else request.video.expand(batch_size, -1, -1, -1, -1)
    if request.mode is None:
        videos = model.sample_long(batch_size, frames, overlap=args.overlap, **sample_kwargs)
        return videos, [False] * videos.shape[2]
    assert video is not None
    given = video.shape[2]
    if request.mode == "extend":
        if args.overlap is None:
            raise ValueError("--extend: expected --overlap K, the frames each window knows")
        if args.extend <= given:
            raise ValueError(f"--extend: expected more than the video's {given} frames, got "
                             f"{args.extend}")  # fmt: skip
        videos = model.extend_video(video, args.extend, overlap=args.overlap, **method,
                                    **sample_kwargs)  # fmt: skip
        return videos, [i < given for i in range(videos.shape[2])]
    if request.mode == "interpolate":
        every = args.interpolate
        if every < 2:
            raise ValueError(f"--interpolate: expected an int >= 2, got {every}")
        videos = model.interpolate_video(video, every, overlap=args.overlap, **method,
                                         **sample_kwargs)  # fmt: skip
        return videos, [i % every == 0 for i in range(videos.shape[2])]
    if request.mode == "upsample":
        videos = model.upsample_video(video, args.upsample_factor, overlap=args.overlap,
                                      weight=args.reconstruction_weight, **sample_kwargs)  # fmt: skip
        return videos, [False] * videos.shape[2]
    condition = known_frames(video, [0], frames, **method)  # first frame
    videos = model.sample_long(batch_size, frames, overlap=args.overlap, condition=condition,
                               **sample_kwargs)  # fmt: skip
    return videos, [i == 0 for i in range(videos.shape[2])]


@typechecked
def mark_known_frames(
    videos: Tensor, known: list[bool], *, colour: tuple[float, float, float] = (1.0, 0.2, 0.2)
) -> Tensor:
    """`videos (b, 3, f, h, w)` with a 1-pixel border of `colour` on the frames that were
    given (`known[i]`), so a sheet shows which frames the model made."""
    if len(known) != videos.shape[2]:
        raise ValueError(f"known: expected {videos.shape[2]} entries, got {len(known)}")
    marked = videos.clone()
    frames = [i for i, given in enumerate(known) if given]
    if not frames or videos.shape[1] != 3:
        return marked
    paint = torch.tensor(colour, dtype=videos.dtype, device=videos.device).view(1, 3, 1)
    for i in frames:
        for border in (
            marked[:, :, i, 0, :],
            marked[:, :, i, -1, :],
            marked[:, :, i, :, 0],
            marked[:, :, i, :, -1],
        ):
            border[:] = paint
    return marked
