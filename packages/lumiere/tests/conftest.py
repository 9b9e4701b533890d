"""Tiny randomly initialised base U-Nets for the wrapper tests: diffusers `UNet2DModel` (class
labels), `UNet2DConditionModel` (text cross-attention), a magnitude-preserving 2-D U-Net built
from mp-layers, and a U-Net that calls its submodules with keyword arguments only."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mp_layers import MPConv2d, MPFourierEmbedding, MPLinear, mp_cat, mp_silu, mp_sum

SIZE = 8


def unet2d(num_classes: int | None = 4, size: int = SIZE) -> nn.Module:
    """diffusers `UNet2DModel`, two levels, attention at the low level, optional class labels."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=4,
        num_class_embeds=num_classes,
    ).eval()


def unet2d_condition() -> nn.Module:
    """diffusers `UNet2DConditionModel` with text cross-attention (`encoder_hidden_states`)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=SIZE,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=4,
        cross_attention_dim=6,
        attention_head_dim=4,
    ).eval()


class MPBlock(nn.Module):
    """An EDM2-style residual block: `mp_sum(x, conv(mp_silu(conv(x)) + emb), 0.3)`."""

    def __init__(self, dim: int, emb_dim: int) -> None:
        super().__init__()
        self.conv1 = MPConv2d(dim, dim, 3)
        self.conv2 = MPConv2d(dim, dim, 3)
        self.emb = MPLinear(emb_dim, dim)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = mp_silu(self.conv1(mp_silu(x)))
        h = h * (1 + self.emb(emb))[:, :, None, None]
        return mp_sum(x, self.conv2(h), 0.3)


class MPUNet2D(nn.Module):
    """A small magnitude-preserving 2-D U-Net (mp-layers only): two levels, one skip per level,
    a noise embedding; `forward(x, sigma)`. Blocks are called with keyword arguments only."""

    def __init__(self, channels: int = 3, dim: int = 8) -> None:
        super().__init__()
        self.embed = MPFourierEmbedding(8)
        self.conv_in = MPConv2d(channels, dim, 3, concat_ones_to_input=True)
        self.enc0 = MPBlock(dim, 8)
        self.down = nn.AvgPool2d(2)
        self.enc1 = MPBlock(dim, 8)
        self.mid = MPBlock(dim, 8)
        self.up = nn.Upsample(scale_factor=2)
        self.dec1 = MPBlock(2 * dim, 8)
        self.dec0 = MPBlock(3 * dim, 8)
        self.conv_out = MPConv2d(3 * dim, channels, 3)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        emb = self.embed(sigma.log() / 4)
        h0 = self.enc0(x=self.conv_in(x), emb=emb)
        h1 = self.enc1(x=self.down(h0), emb=emb)
        h = self.mid(x=h1, emb=emb)
        h = self.dec1(x=mp_cat(h, h1), emb=emb)
        h = self.dec0(x=mp_cat(self.up(h), h0, t=1 / 3), emb=emb)
        return self.conv_out(h)


@pytest.fixture
def mp_unet() -> nn.Module:
    torch.manual_seed(0)
    return MPUNet2D().eval()
