"""Temporal blocks inserted into a 2-D U-Net (Lumiere, arXiv 2401.12945, section 3.1).

Each block takes a video `(b, c, t, h, w)` or frames `(b·t, c, h, w)` with `batch_size=b`,
channel-first or (with `channel_last=True`) channel-last; see `lumiere.layout`.

- `ConvolutionInflationBlock`: `x + W_out silu(norm(conv1d_t(silu(norm(conv2d_hw(x))))))`, a
  factorised space-time convolution whose output projection `W_out` starts at zero, so the block is
  an exact identity at initialisation.
- `AttentionInflationBlock`: attention over the frames of every pixel (x-transformers `Attention`
  with a rotary position embedding over frames), then a zero-initialised projection: identity at
  init, and not equivariant to permutations of the frames.
- `TemporalDownsample` / `TemporalUpsample`: learned stride-2 convolutions over time initialised
  to linear interpolation, with replicated edge frames so that a constant clip stays constant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from x_transformers.x_transformers import (
    Attention,
    RMSNorm,
    RotaryEmbedding,
)

from lumiere.layout import TemporalBlock, time_series, video_from_series
from mp_layers.functional import pixel_norm
from mp_layers.typecheck import typechecked
from mp_layers.validation import check_int

__all__ = [
    "AttentionInflationBlock",
    "ChannelRMSNorm",
    "ConvolutionInflationBlock",
    "TemporalDownsample",
    "TemporalUpsample",
]


def check_odd(name: str, value: int) -> int:
    """An odd kernel size (`same` padding keeps frames and pixels aligned)."""
    check_int(name, value)
    if value % 2 == 0:
        raise ValueError(f"{name}: expected an odd kernel size, got {value}")
    return value


class ChannelRMSNorm(nn.Module):
    """RMS normalisation over the channels of `(b, c, ...)`: `x / rms_c(x) * gamma`, `gamma (c,)`
    initialised to 1. (The reference's `ChanFirstRMSNorm` normalised over the last axis, width or
    time, instead of the channels.)"""

    @typechecked
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(check_int("dim", dim)))

    def forward(self, x: Tensor) -> Tensor:
        gamma = self.gamma.view(-1, *([1] * (x.ndim - 2)))
        return pixel_norm(x, dim=1) * gamma


def frames_of(video: Tensor) -> Tensor:
    """`(b, c, t, h, w) -> (b·t, c, h, w)`."""
    return rearrange(video, "b c t h w -> (b t) c h w")


def video_of(frames: Tensor, batch_size: int) -> Tensor:
    """`(b·t, c, h, w) -> (b, c, t, h, w)`, a view."""
    n, c, h, w = frames.shape
    return frames.view(batch_size, n // batch_size, c, h, w).transpose(1, 2)


def rotary_dim(dim_head: int) -> int:
    """Rotate half of each head (at least 16 dims), an even number, at most the whole head."""
    return max(2, min(dim_head, max(dim_head // 2, 16)) // 2 * 2)


class ConvolutionInflationBlock(TemporalBlock):
    """Factorised space-time convolution with a residual, identity at init: `(…, dim, …)` → same.

    `out = x + P(silu(N2(T(silu(N1(S(x)))))))` with `S` a `conv2d_kernel_size` convolution over
    each frame, `T` a `conv1d_kernel_size` convolution over the frames of each pixel, `N1`, `N2`
    RMS norms over channels and `P` a 1x1 projection whose weight and bias start at zero.
    """

    @typechecked
    def __init__(
        self,
        *,
        dim: int,
        conv2d_kernel_size: int = 3,
        conv1d_kernel_size: int = 3,
        channel_last: bool = False,
        time_dim: int | None = None,
    ) -> None:
        super().__init__(dim, channel_last, time_dim)
        k2 = check_odd("conv2d_kernel_size", conv2d_kernel_size)
        k1 = check_odd("conv1d_kernel_size", conv1d_kernel_size)
        self.spatial_conv = nn.Conv2d(dim, dim, k2, padding=k2 // 2)
        self.spatial_norm = ChannelRMSNorm(dim)
        # over (b, c, t, h·w): a (k1, 1) kernel convolves over time (lumiere.layout)
        self.temporal_conv = nn.Conv2d(dim, dim, (k1, 1), padding=(k1 // 2, 0))
        self.temporal_norm = ChannelRMSNorm(dim)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)  # type: ignore[arg-type]

    def forward(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        layout, video = self.to_video(x, batch_size)
        b, _, _, height, width = video.shape
        frames = x if layout.frames and not layout.channel_last else frames_of(video)
        h = F.silu(self.spatial_norm(self.spatial_conv(frames)))
        h = F.silu(self.temporal_norm(self.temporal_conv(time_series(video_of(h, b)))))
        update = video_from_series(self.proj_out(h), height, width)
        return layout.restore(video + update)


class AttentionInflationBlock(TemporalBlock):
    """Attention over frames with a residual, identity at init: `(…, dim, …)` → same.

    The video becomes `b·h·w` sequences of `t` tokens; `depth` layers of x-transformers
    `Attention(dim, **attn_kwargs)` (after an `RMSNorm` when `prenorm`, with a residual when
    `residual_attn`) attend over them with a rotary position embedding over the frame index, then a
    zero-initialised `Linear(dim, dim)` projects and the input is added back.
    """

    @typechecked
    def __init__(
        self,
        *,
        dim: int,
        depth: int = 1,
        prenorm: bool = True,
        residual_attn: bool = True,
        time_dim: int | None = None,
        channel_last: bool = False,
        **attn_kwargs: object,
    ) -> None:
        super().__init__(dim, channel_last, time_dim)
        check_int("depth", depth)
        self.residual_attn = residual_attn
        dim_head = attn_kwargs.get("dim_head", 64)
        if not isinstance(dim_head, int) or isinstance(dim_head, bool) or dim_head < 1:
            raise TypeError(f"dim_head: expected an int >= 1, got {dim_head!r}")
        self.norms = nn.ModuleList(RMSNorm(dim) if prenorm else nn.Identity() for _ in range(depth))
        self.attentions = nn.ModuleList(Attention(dim, **attn_kwargs) for _ in range(depth))
        self.rotary = RotaryEmbedding(rotary_dim(dim_head))
        self.proj_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        layout, video = self.to_video(x, batch_size)
        b, _, t, h, w = video.shape
        tokens = rearrange(video, "b c t h w -> (b h w) t c")
        rotary = self.rotary.forward_from_seq_len(t)  # (freqs (1, t, d), scale)
        for norm, attention in zip(self.norms, self.attentions, strict=True):
            out = attention(norm(tokens), rotary_pos_emb=rotary)
            tokens = tokens + out if self.residual_attn else out
        update = rearrange(self.proj_out(tokens), "(b h w) t c -> b c t h w", b=b, h=h, w=w)
        return layout.restore(video + update)


def _set_interpolation_kernel(conv: nn.Conv2d | nn.ConvTranspose2d, taps: list[float]) -> None:
    """Zero `conv`, then put `taps` on its per-channel diagonal (channel i reads only channel i)."""
    with torch.no_grad():
        conv.weight.zero_()
        if conv.bias is not None:
            conv.bias.zero_()
        index = torch.arange(conv.weight.shape[0])
        conv.weight[index, index, :, 0] = torch.tensor(taps)


class TemporalDownsample(TemporalBlock):
    """Halve the frames: `(…, dim, t, …)` → `(…, dim, ceil(t / 2), …)`, t >= 2.

    A learned stride-2 convolution over time, kernel 3, initialised to the linear-interpolation
    filter `[1/4, 1/2, 1/4]` per channel over edge-replicated frames: output frame `i` starts as
    `x[2i-1]/4 + x[2i]/2 + x[2i+1]/4`, and a constant clip stays constant, edges included. (The
    reference's `[1/2, 1, 1/2]` over zero padding doubled every magnitude and gave 1.5x at the first
    frame.)
    """

    @typechecked
    def __init__(self, dim: int, channel_last: bool = False, time_dim: int | None = None) -> None:
        super().__init__(dim, channel_last, time_dim)
        self.conv = nn.Conv2d(dim, dim, (3, 1), stride=(2, 1))  # over (b, c, t, h·w)
        _set_interpolation_kernel(self.conv, [0.25, 0.5, 0.25])

    def check_frames(self, frames: int) -> None:
        if frames < 2:
            raise ValueError(
                f"TemporalDownsample: expected at least 2 frames to halve, got {frames}"
            )

    def forward(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        layout, video = self.to_video(x, batch_size)
        padded = F.pad(time_series(video), (0, 0, 1, 1), mode="replicate")
        return layout.restore(video_from_series(self.conv(padded), *video.shape[3:]))


class TemporalUpsample(TemporalBlock):
    """Double the frames: `(…, dim, t, …)` → `(…, dim, 2t, …)`.

    A learned stride-2 transposed convolution over time, kernel 3, initialised to linear
    interpolation `[1/2, 1, 1/2]` per channel: even output frames copy `x[i]`, odd ones average
    `x[i]` and `x[i+1]`, and the last one, past the end, repeats the last input frame (the
    reference halved it). A constant clip stays constant.
    """

    @typechecked
    def __init__(self, dim: int, channel_last: bool = False, time_dim: int | None = None) -> None:
        super().__init__(dim, channel_last, time_dim)
        self.conv = nn.ConvTranspose2d(dim, dim, (3, 1), stride=(2, 1), padding=(1, 0))
        _set_interpolation_kernel(self.conv, [0.5, 1.0, 0.5])

    def forward(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        layout, video = self.to_video(x, batch_size)
        t = video.shape[2]
        padded = F.pad(time_series(video), (0, 0, 0, 1), mode="replicate")
        series = self.conv(padded)[:, :, : 2 * t]
        return layout.restore(video_from_series(series, *video.shape[3:]))
