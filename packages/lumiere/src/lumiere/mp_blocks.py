"""Magnitude-preserving temporal blocks (EDM2, arXiv 2312.02696), built from mp-layers only.

Same layouts and call signature as `lumiere.blocks`. Every inflation block ends in a
`mp_layers.GatedMPSum(mp_add_t)`: `(x + k·branch) / sqrt(1 + k²)` with `k = g·t/(1-t)` and the
learned `g` starting at 0. That is magnitude-preserving for every `g`, an exact identity at
initialisation (the reference's `MPAdd` gave the zero branch weight 0.7 and the input 0.3, so every
inflation point scaled the frozen features by 0.3/sqrt(0.58) = 0.394), and equal to EDM2's
`mp_sum(x, branch, t)` (t = weight of the branch) once `g` reaches 1.
"""

from __future__ import annotations

from functools import partial

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from x_transformers.x_transformers import RotaryEmbedding, apply_rotary_pos_emb

from lumiere.blocks import check_odd, frames_of, rotary_dim, video_of
from lumiere.layout import TemporalBlock, time_series, video_from_series
from mp_layers import Dropout, GatedMPSum, MPAttention, MPConv2d, MPLinear, mp_silu
from mp_layers.typecheck import typechecked
from mp_layers.validation import check_balance, check_float, check_int

__all__ = [
    "MPAttentionInflationBlock",
    "MPConvolutionInflationBlock",
    "MPTemporalDownsample",
    "MPTemporalUpsample",
]


def _check_mp_add_t(value: float) -> float:
    t = check_balance("mp_add_t", value)
    if t == 1.0:
        raise ValueError("mp_add_t: expected a float in [0, 1), got 1.0")
    return t


class MPConvolutionInflationBlock(TemporalBlock):
    """Magnitude-preserving factorised space-time convolution, identity at init.

    `out = GatedMPSum(x, P(drop(mp_silu(T(mp_silu(S(x)))))))` with forced-weight-normalised,
    bias-free convolutions: `S` over each frame (`conv2d_kernel_size`), `T` over the frames of each
    pixel (`conv1d_kernel_size`) and a 1x1 projection `P`.
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
        mp_add_t: float = 0.3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(dim, channel_last, time_dim)
        k2 = check_odd("conv2d_kernel_size", conv2d_kernel_size)
        k1 = check_odd("conv1d_kernel_size", conv1d_kernel_size)
        self.spatial_conv = MPConv2d(dim, dim, k2)
        # over (b, c, t, h·w): a (k1, 1) kernel convolves over time (lumiere.layout)
        self.temporal_conv = MPConv2d(dim, dim, (k1, 1))
        self.dropout = Dropout(check_float("dropout", dropout, low=0.0, high=1.0))
        self.proj_out = MPConv2d(dim, dim, 1)
        self.residual = GatedMPSum(_check_mp_add_t(mp_add_t))

    def forward(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        layout, video = self.to_video(x, batch_size)
        b, _, _, height, width = video.shape
        frames = x if layout.frames and not layout.channel_last else frames_of(video)
        h = mp_silu(self.spatial_conv(frames))
        h = self.dropout(mp_silu(self.temporal_conv(time_series(video_of(h, b)))))
        update = video_from_series(self.proj_out(h), height, width)
        return layout.restore(self.residual(video, update))


class MPAttentionInflationBlock(TemporalBlock):
    """Magnitude-preserving attention over frames, identity at init.

    `depth` `mp_layers.MPAttention(dim, **attn_kwargs)` layers (cosine attention with memory
    key/values and their own magnitude-preserving residuals) over the `t` frames of every pixel,
    with a rotary position embedding over the frame index applied to the normalised queries and
    keys; then a forced-weight-normalised `MPLinear(dim, dim)` and `GatedMPSum(mp_add_t)` with the
    input.
    """

    @typechecked
    def __init__(
        self,
        *,
        dim: int,
        depth: int = 1,
        time_dim: int | None = None,
        channel_last: bool = False,
        mp_add_t: float = 0.3,
        dropout: float = 0.0,
        **attn_kwargs: object,
    ) -> None:
        super().__init__(dim, channel_last, time_dim)
        check_int("depth", depth)
        self.attentions = nn.ModuleList(
            MPAttention(dim, dropout=dropout, mp_add_t=mp_add_t, **attn_kwargs)  # type: ignore[arg-type]
            for _ in range(depth)
        )
        first: MPAttention = self.attentions[0]  # type: ignore[assignment]
        self.rotary = RotaryEmbedding(rotary_dim(first.dim_head))
        self.proj_out = MPLinear(dim, dim)
        self.residual = GatedMPSum(_check_mp_add_t(mp_add_t))

    def forward(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        layout, video = self.to_video(x, batch_size)
        b, _, t, h, w = video.shape
        tokens = rearrange(video, "b c t h w -> (b h w) t c")
        freqs, scale = self.rotary.forward_from_seq_len(t)
        rotate = partial(apply_rotary_pos_emb, freqs=freqs, scale=scale)
        out = tokens
        for attention in self.attentions:
            out = attention(out, rotate=rotate)
        out = self.residual(tokens, self.proj_out(out))
        return layout.restore(rearrange(out, "(b h w) t c -> b c t h w", b=b, h=h, w=w))


def _resample_frames(video: Tensor, frames: int) -> Tensor:
    """Linear interpolation of `video (b, c, t, h, w)` to `frames` frames (half-pixel centres, so
    halving averages frame pairs and a constant clip stays constant), as `(b, c, frames, h·w)`
    (bilinear over `(t, h·w)`, the identity along `h·w`)."""
    series = time_series(video)
    return F.interpolate(
        series, size=(frames, series.shape[3]), mode="bilinear", align_corners=False
    )


class MPTemporalDownsample(TemporalBlock):
    """Halve the frames, magnitude-preserving: `(…, dim, t, …)` → `(…, dim, t // 2, …)`, t >= 2.

    Linear interpolation to `t // 2` frames (even `t`: the mean of each frame pair), then a
    forced-weight-normalised convolution over time (kernel 3) initialised to the identity.
    """

    @typechecked
    def __init__(self, dim: int, channel_last: bool = False, time_dim: int | None = None) -> None:
        super().__init__(dim, channel_last, time_dim)
        self.conv = MPConv2d(dim, dim, (3, 1), init_dirac=True)  # over (b, c, t, h·w)

    def check_frames(self, frames: int) -> None:
        if frames < 2:
            raise ValueError(
                f"MPTemporalDownsample: expected at least 2 frames to halve, got {frames}"
            )

    def forward(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        layout, video = self.to_video(x, batch_size)
        series = self.conv(_resample_frames(video, video.shape[2] // 2))
        return layout.restore(video_from_series(series, *video.shape[3:]))


class MPTemporalUpsample(TemporalBlock):
    """Double the frames, magnitude-preserving: `(…, dim, t, …)` → `(…, dim, 2t, …)`.

    Linear interpolation to `2t` frames (edge frames repeated), then a forced-weight-normalised
    convolution over time (kernel 3) initialised to the identity.
    """

    @typechecked
    def __init__(self, dim: int, channel_last: bool = False, time_dim: int | None = None) -> None:
        super().__init__(dim, channel_last, time_dim)
        self.conv = MPConv2d(dim, dim, (3, 1), init_dirac=True)  # over (b, c, t, h·w)

    def forward(self, x: Tensor, batch_size: int | None = None) -> Tensor:
        layout, video = self.to_video(x, batch_size)
        series = self.conv(_resample_frames(video, 2 * video.shape[2]))
        return layout.restore(video_from_series(series, *video.shape[3:]))
