"""Tensor layouts of the temporal blocks: a video or a batch of frames, channel-first or -last.

Every temporal block accepts
- a video `(b, c, t, h, w)` (channel-last: `(b, t, h, w, c)`), or
- frames `(b·t, c, h, w)` (channel-last: `(b·t, h, w, c)`), as they flow through a 2-D U-Net,
  together with `batch_size=b` (or a `time_dim=t` fixed at construction),

computes on the video `(b, c, t, h, w)` and returns the layout it was given (with the block's
number of output frames). `Layout.of` reads the input once; `layout.restore` inverts it.

Temporal operations see the video as `(b, c, t, h·w)` (`time_series`), a 2-D image whose height is
time: a `(k, 1)` convolution over it is a temporal convolution, computed by oneDNN's 2-D kernels
(measured on 2 CPU cores, 64 channels x 8 frames x 64x64, forward and backward: 0.16 s, against
0.27 s for a `(k, 1, 1)` 3-D convolution and 0.23 s for the reference's 1-D convolution over
`(b·h·w, c, t)`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from mp_layers.validation import check_floating, check_int

__all__ = ["Layout", "TemporalBlock", "time_series", "video_from_series"]


def time_series(video: Tensor) -> Tensor:
    """`(b, c, t, h, w) -> (b, c, t, h·w)`, a view where the strides allow."""
    b, c, t, h, w = video.shape
    return video.reshape(b, c, t, h * w)


def video_from_series(series: Tensor, height: int, width: int) -> Tensor:
    """`(b, c, t, h·w) -> (b, c, t, h, w)`."""
    b, c, t, _ = series.shape
    return series.reshape(b, c, t, height, width)


@dataclass(frozen=True)
class Layout:
    """How a block's input was laid out: `frames` (4-D) or video (5-D), channel-last or not."""

    frames: bool
    channel_last: bool

    @staticmethod
    def of(
        block: nn.Module,
        x: Tensor,
        batch_size: int | None,
        *,
        channels: int,
        channel_last: bool,
        time_dim: int | None,
    ) -> tuple[Layout, Tensor]:
        """The layout of `x` and `x` as a video `(b, c, t, h, w)` (a view where possible)."""
        name = type(block).__name__
        check_floating("x", x)
        if x.ndim not in (4, 5):
            expected = (
                "(b, t, h, w, c) or (b·t, h, w, c)"
                if channel_last
                else ("(b, c, t, h, w) or (b·t, c, h, w)")
            )
            raise ValueError(f"{name}: expected a video or frames {expected}, got {tuple(x.shape)}")
        frames = x.ndim == 4
        if channel_last:
            x = x.movedim(-1, 1)  # (b, c, t, h, w) or (b·t, c, h, w), a view
        if x.shape[1] != channels:
            raise ValueError(
                f"{name}: expected {channels} channels (dim), got {x.shape[1]} in an input of "
                f"shape {tuple(x.shape)}" + (" (channel_last=True)" if channel_last else "")
            )
        if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
            raise ValueError(f"{name}: batch_size: expected an int >= 1, got {batch_size!r}")
        if not frames:
            if batch_size is not None and batch_size != x.shape[0]:
                raise ValueError(
                    f"{name}: batch_size={batch_size} given with a video of batch {x.shape[0]}"
                )
            return Layout(frames=False, channel_last=channel_last), x
        if batch_size is None:
            if time_dim is None:
                raise ValueError(
                    f"{name}: frames (b·t, c, h, w) need batch_size=b in forward (or time_dim at "
                    f"construction); got frames {tuple(x.shape)} and neither"
                )
            if x.shape[0] % time_dim:
                raise ValueError(
                    f"{name}: {x.shape[0]} frames are not a whole number of clips of "
                    f"time_dim={time_dim} frames"
                )
            batch_size = x.shape[0] // time_dim
        elif x.shape[0] % batch_size:
            raise ValueError(
                f"{name}: {x.shape[0]} frames do not split into batch_size={batch_size} clips"
            )
        b, (n, c, h, w) = batch_size, x.shape
        video = x.reshape(b, n // b, c, h, w).transpose(1, 2)  # a view, channels-last or not
        return Layout(frames=True, channel_last=channel_last), video

    def restore(self, video: Tensor) -> Tensor:
        """`video (b, c, t, h, w)` back in this layout (frames: a view where the strides allow,
        e.g. for channels-last frames)."""
        if self.frames:
            b, c, t, h, w = video.shape
            out = video.transpose(1, 2).reshape(b * t, c, h, w)
        else:
            out = video
        return out.movedim(1, -1) if self.channel_last else out


class TemporalBlock(nn.Module):
    """What every temporal block shares: its channels `dim`, `channel_last`, an optional fixed
    `time_dim`, and `to_video(x, batch_size)`, the input checked and as a video plus its `Layout`
    (a block's `forward` starts with it: its one input check)."""

    def __init__(self, dim: int, channel_last: bool, time_dim: int | None) -> None:
        super().__init__()
        self.dim = check_int("dim", dim)
        self.channel_last = channel_last
        self.time_dim = None if time_dim is None else check_int("time_dim", time_dim)

    def to_video(self, x: Tensor, batch_size: int | None) -> tuple[Layout, Tensor]:
        """`x` checked (`Layout.of`, then `check_frames`) and as a video `(b, c, t, h, w)`."""
        layout, video = Layout.of(
            self,
            x,
            batch_size,
            channels=self.dim,
            channel_last=self.channel_last,
            time_dim=self.time_dim,
        )
        self.check_frames(video.shape[2])
        return layout, video

    def check_frames(self, frames: int) -> None:
        """Refuse clips of `frames` frames that the block cannot take (none by default)."""
