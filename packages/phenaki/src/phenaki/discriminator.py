"""Discriminators for C-ViViT's adversarial loss: one on single frames, one on whole clips.

`FrameDiscriminator` is the reference's StyleGAN-like 2-D discriminator (same architecture and
parameter names). `VideoDiscriminator` is its 3-D counterpart, which also judges motion (MAGVIT's
choice, Yu et al. 2023; the reference has none).

Both are built from residual blocks

    y = (conv_res(x) + down(act(conv(act(conv(x)))))) / sqrt(2),   act = LeakyReLU(0.1),

with channel widths `4 * dim * 2^i` capped at `max_dim`, `n = floor(log2(min(H, W))) - 2`
downsampling blocks and a last block at full resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch.nn.functional as F
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import Tensor, nn

from mp_layers.typecheck import typechecked
from phenaki.attention import Attention

__all__ = ["FrameDiscriminator", "VideoDiscriminator"]


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else value


def _layout(
    name: str, image_size: tuple[int, int], channels: int, dim: int, max_dim: int
) -> tuple[int, list[int]]:
    """Validate the configuration; return the number of downsampling blocks and the widths
    `[channels, 4 dim, 8 dim, ...]` (capped at `max_dim`) of the `n + 1` blocks."""
    if min(channels, dim, max_dim) < 1:
        raise ValueError(
            f"{name}: expected positive channels, dim and max_dim, got {channels}, {dim}, {max_dim}"
        )
    if min(image_size) < 8:
        raise ValueError(f"{name}: expected image_size sides >= 8, got {image_size}")
    num_layers = min(image_size).bit_length() - 1 - 2  # floor(log2(min side)) - 2
    factor = 2**num_layers
    if any(side % factor for side in image_size):
        raise ValueError(
            f"{name}: expected image_size sides divisible by 2**{num_layers} = {factor} "
            f"({num_layers} downsampling blocks for a smallest side of {min(image_size)}), "
            f"got {image_size}"
        )
    widths = [channels] + [min(4 * dim * 2**i, max_dim) for i in range(num_layers + 1)]
    return num_layers, widths


class FrameBlock(nn.Module):
    """A 2-D residual block: `(conv_res(x) + downsample(net(x))) / sqrt(2)`.

    `net` = conv3x3 -> LeakyReLU(0.1) -> conv3x3 -> LeakyReLU(0.1); `downsample` = space-to-depth
    (2x2) -> conv1x1; `conv_res` = conv1x1 with stride 2 (1 without downsampling).
    `(b, c_in, h, w) -> (b, c_out, h / 2, w / 2)` (or `(b, c_out, h, w)`).
    """

    @typechecked
    def __init__(self, input_channels: int, filters: int, downsample: bool = True) -> None:
        super().__init__()
        self.conv_res = nn.Conv2d(input_channels, filters, 1, stride=2 if downsample else 1)
        self.net = nn.Sequential(
            nn.Conv2d(input_channels, filters, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(filters, filters, 3, padding=1),
            nn.LeakyReLU(0.1),
        )
        self.downsample = (
            nn.Sequential(
                Rearrange("b c (h p1) (w p2) -> b (c p1 p2) h w", p1=2, p2=2),
                nn.Conv2d(filters * 4, filters, 1),
            )
            if downsample
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        res = self.conv_res(x)
        x = self.net(x)
        if self.downsample is not None:
            x = self.downsample(x)
        return (x + res) * (1 / math.sqrt(2))


class FrameDiscriminator(nn.Module):
    """StyleGAN-like frame discriminator `(b, channels, H, W) -> (b,)` logits.

    `n = floor(log2(min(H, W))) - 2` downsampling `FrameBlock`s and a last one without, of widths
    `4 dim * 2^i` capped at `max_dim`; after every block whose input resolution (tracked on the
    smaller side) is in `attn_res_layers`, a residual self-attention `x + Attention(x)` over the
    `h w` positions; then conv3x3 -> LeakyReLU(0.1) -> flatten -> Linear -> one logit per image.
    Both sides of `image_size` must be >= 8 and divisible by `2^n`.
    """

    @typechecked
    def __init__(
        self,
        *,
        dim: int,
        image_size: int | tuple[int, int],
        channels: int = 3,
        attn_res_layers: int | Sequence[int] = (16,),
        max_dim: int = 512,
    ) -> None:
        super().__init__()
        self.image_size = _pair(image_size)
        self.channels = channels
        num_layers, widths = _layout("FrameDiscriminator", self.image_size, channels, dim, max_dim)
        attn_res = {attn_res_layers} if isinstance(attn_res_layers, int) else set(attn_res_layers)
        self.blocks = nn.ModuleList()
        self.attn_blocks = nn.ModuleList()
        resolution = min(self.image_size)
        self.attn_resolutions: list[int] = []
        for index, (c_in, c_out) in enumerate(pairwise(widths)):
            self.blocks.append(FrameBlock(c_in, c_out, downsample=index < num_layers))
            has_attn = resolution in attn_res
            # a None entry keeps the reference's indices (`attn_blocks.{i}` for block i)
            self.attn_blocks.add_module(str(index), Attention(c_out) if has_attn else None)
            if has_attn:
                self.attn_resolutions.append(resolution)
            resolution //= 2
        last = widths[-1]
        h, w = (side // 2**num_layers for side in self.image_size)
        self.to_logits = nn.Sequential(
            nn.Conv2d(last, last, 3, padding=1),
            nn.LeakyReLU(0.1),
            Rearrange("b ... -> b (...)"),
            nn.Linear(last * h * w, 1),
            Rearrange("b 1 -> b"),
        )

    def forward(self, x: Tensor) -> Tensor:
        expected = (self.channels, *self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"FrameDiscriminator: expected images of shape (b, {', '.join(map(str, expected))})"
                f", got {tuple(x.shape)}"
            )
        for block, attn in zip(self.blocks, self.attn_blocks, strict=True):
            x = block(x)
            if attn is not None:
                h = x.shape[-2]
                tokens = rearrange(x, "b c h w -> b (h w) c")
                x = rearrange(attn(tokens) + tokens, "b (h w) c -> b c h w", h=h)
        return self.to_logits(x)


class VideoBlock(nn.Module):
    """A 3-D residual block: `(conv_res(down(x)) + down(net(x))) / sqrt(2)`.

    `net` = Conv3d 3x3x3 -> LeakyReLU(0.1) -> Conv3d 3x3x3 -> LeakyReLU(0.1) (zero padding 1 on
    every axis: a discriminator need not be causal); `conv_res` = Conv3d 1x1x1. `down` is average
    pooling that halves height and width, and time too while it is longer than one frame (ceil
    mode: an odd last frame is averaged on its own, so `t -> ceil(t / 2)`). Without downsampling
    `down` is the identity. `(b, c_in, t, h, w) -> (b, c_out, ceil(t / 2) or 1, h / 2, w / 2)`.
    """

    @typechecked
    def __init__(self, input_channels: int, filters: int, downsample: bool = True) -> None:
        super().__init__()
        self.downsample = downsample
        self.conv_res = nn.Conv3d(input_channels, filters, 1)
        self.net = nn.Sequential(
            nn.Conv3d(input_channels, filters, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.Conv3d(filters, filters, 3, padding=1),
            nn.LeakyReLU(0.1),
        )

    def _down(self, x: Tensor) -> Tensor:
        if not self.downsample:
            return x
        kernel = (2 if x.shape[2] > 1 else 1, 2, 2)
        return F.avg_pool3d(x, kernel, stride=kernel, ceil_mode=True)

    def forward(self, x: Tensor) -> Tensor:
        res = self.conv_res(self._down(x))
        x = self._down(self.net(x))
        return (x + res) * (1 / math.sqrt(2))


class VideoDiscriminator(nn.Module):
    """3-D convolutional clip discriminator `(b, channels, f, H, W) -> (b,)` logits, any `f >= 1`.

    `n = floor(log2(min(H, W))) - 2` downsampling `VideoBlock`s (each halves h and w, and t while
    t > 1) and a last one without, of widths `4 dim * 2^i` capped at `max_dim`; then Conv3d 3x3x3
    -> LeakyReLU(0.1) -> mean over the remaining `(t, h, w)` -> Linear -> one logit per clip.
    Both sides of `image_size` must be >= 8 and divisible by `2^n`.
    """

    @typechecked
    def __init__(
        self,
        *,
        dim: int,
        image_size: int | tuple[int, int],
        channels: int = 3,
        max_dim: int = 512,
    ) -> None:
        super().__init__()
        self.image_size = _pair(image_size)
        self.channels = channels
        num_layers, widths = _layout("VideoDiscriminator", self.image_size, channels, dim, max_dim)
        self.blocks = nn.ModuleList(
            VideoBlock(c_in, c_out, downsample=index < num_layers)
            for index, (c_in, c_out) in enumerate(pairwise(widths))
        )
        last = widths[-1]
        self.to_logits = nn.Sequential(
            nn.Conv3d(last, last, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.AdaptiveAvgPool3d(1),
            Rearrange("b c 1 1 1 -> b c"),
            nn.Linear(last, 1),
            Rearrange("b 1 -> b"),
        )

    def forward(self, video: Tensor) -> Tensor:
        expected = (self.channels, *self.image_size)
        if video.ndim != 5 or video.shape[2] < 1 or (video.shape[1], *video.shape[3:]) != expected:
            c, h, w = expected
            raise ValueError(
                f"VideoDiscriminator: expected videos of shape (b, {c}, f >= 1, {h}, {w}), got "
                f"{tuple(video.shape)}"
            )
        for block in self.blocks:
            video = block(video)
        return self.to_logits(video)
