"""The encoder and decoder blocks of the U-Net (EDM2 figure 21, config G), in 3-D.

Both blocks compute, on a feature map `(b, c, t, h, w)` and an embedding `(b, emb_dim)`:

    y = conv1(dropout(mp_silu(conv0(mp_silu(x)) * (1 + gain * W_emb emb))))
    x = mp_sum(x, y, resnet_mp_add_t)        # t = weight of the residual branch (EDM2 eq. 88)
    x = attention(x)                          # optional, itself mp_sum(x, attn(x), attn_res_mp_add_t)

The encoder block first resamples (average pooling), changes the width with a 1x1x1 convolution if
needed and pixel-normalises `x` (eq. 30); the decoder block resamples (nearest) and changes the
width of the skip path only. Resampling factors are `(ft, fh, fw)`, each 1 or 2: `'all'` is
`(2, 2, 2)`, `'frame'` `(2, 1, 1)`, `'image'` `(1, 2, 2)`.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from karras_unet3d.attention import SpaceTimeAttention
from mp_layers import Dropout, Gain, MPConv3d, MPLinear, mp_silu, mp_sum, pixel_norm
from mp_layers.typecheck import typechecked
from mp_layers.upsample import memory_format_of, upsample_nearest

__all__ = ["RESAMPLE_FACTORS", "DecoderBlock", "EncoderBlock"]

RESAMPLE_FACTORS: dict[str, tuple[int, int, int]] = {
    "all": (2, 2, 2),
    "frame": (2, 1, 1),
    "image": (1, 2, 2),
}


class _Block(nn.Module):
    flavor: Literal["enc", "dec"]

    @typechecked
    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        *,
        emb_dim: int,
        resample: tuple[int, int, int] | None = None,
        dropout: float = 0.1,
        resnet_mp_add_t: float = 0.3,
        attn_heads: int | None = None,
        attn_dim_head: int = 64,
        attn_res_mp_add_t: float = 0.3,
        factorize_space_time_attn: bool = False,
    ) -> None:
        super().__init__()
        self.dim_in = dim_in
        self.dim_out = dim_out
        self.resample = resample
        self.resnet_mp_add_t = resnet_mp_add_t
        conv0_in = dim_out if self.flavor == "enc" else dim_in
        self.conv_skip = MPConv3d(dim_in, dim_out, 1) if dim_in != dim_out else None
        self.conv0 = MPConv3d(conv0_in, dim_out, 3)
        self.emb_linear = MPLinear(emb_dim, dim_out)
        self.emb_gain = Gain()  # starts at 0: the embedding modulation is switched on by training
        self.dropout = Dropout(dropout)
        self.conv1 = MPConv3d(dim_out, dim_out, 3)
        self.attn = (
            SpaceTimeAttention(
                dim_out,
                heads=attn_heads,
                dim_head=attn_dim_head,
                mp_add_t=attn_res_mp_add_t,
                factorize=factorize_space_time_attn,
            )
            if attn_heads is not None
            else None
        )

    def _resample(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _residual_branch(
        self, x: Tensor, emb: Tensor, upsample: tuple[int, int, int] | None = None
    ) -> Tensor:
        y = self.conv0(mp_silu(x), upsample=upsample)
        scale = self.emb_gain(self.emb_linear(emb)) + 1
        y = mp_silu(y * rearrange(scale, "b c -> b c 1 1 1").to(y.dtype))
        return self.conv1(self.dropout(y))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """`x (b, dim_in, t, h, w)`, `emb (b, emb_dim)` -> `(b, dim_out, t', h', w')`."""
        if self.flavor == "enc":
            x = self._resample(x)
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = pixel_norm(x, dim=1)
            x = mp_sum(x, self._residual_branch(x, emb), self.resnet_mp_add_t)
        else:
            # Up-sampling commutes with mp_silu and with the 1x1x1 skip convolution, and conv0
            # reads its up-sampled input through the polyphase form: all of it runs at the
            # low resolution, the same function with fewer multiply-adds.
            y = self._residual_branch(x, emb, upsample=self.resample)
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = mp_sum(self._resample(x), y, self.resnet_mp_add_t)
        if self.attn is not None:
            x = self.attn(x)
        return x

    def extra_repr(self) -> str:
        return f"{self.dim_in}, {self.dim_out}, resample={self.resample}"


class EncoderBlock(_Block):
    """Encoder block: optional down-sampling by average pooling, then the residual block."""

    flavor = "enc"

    def _resample(self, x: Tensor) -> Tensor:
        if self.resample is None:
            return x
        pooled = F.avg_pool3d(x, kernel_size=self.resample, stride=self.resample)
        return pooled.contiguous(memory_format=memory_format_of(x))  # pooling drops channels-last


class DecoderBlock(_Block):
    """Decoder block: optional nearest-neighbour up-sampling, then the residual block."""

    flavor = "dec"

    def _resample(self, x: Tensor) -> Tensor:
        return x if self.resample is None else upsample_nearest(x, self.resample)
