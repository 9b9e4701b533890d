"""Tiny C-ViViT configurations and a stand-in perceptual network (nothing is downloaded)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

TINY: dict[str, Any] = {
    "dim": 32,
    "codebook_size": 64,
    "image_size": 16,
    "patch_size": 4,
    "temporal_patch_size": 2,
    "spatial_depth": 1,
    "temporal_depth": 1,
    "dim_head": 8,
    "heads": 2,
    "discr_base_dim": 4,
    "discr_attn_res_layers": (8,),
}


class TinyFeatures(nn.Module):
    """A small conv network standing in for VGG16 (any module mapping images to features)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_features() -> nn.Module:
    return TinyFeatures()
