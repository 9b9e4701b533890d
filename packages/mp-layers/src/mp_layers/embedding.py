"""Magnitude-preserving Fourier features of a scalar (EDM2 section 2.5, `MPFourier`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mp_layers.typecheck import typechecked
from mp_layers.validation import check_float, check_floating, check_int

__all__ = ["MPFourierEmbedding"]


class MPFourierEmbedding(nn.Module):
    """Random Fourier features with unit RMS: `(b,) -> (b, dim)`.

    `sqrt(2) * [sin(2π f x), cos(2π f x)]` for `dim / 2` fixed frequencies `f ~ N(0, bandwidth²)`.
    As `sin² + cos² = 1`, every output row has RMS exactly 1, whatever `x`. The frequencies are a
    buffer: saved with the state dict, never trained. Computed in float32.
    """

    freqs: Tensor

    @typechecked
    def __init__(self, dim: int, *, bandwidth: float = 1.0) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, minimum=2)
        if dim % 2:
            raise ValueError(f"dim: expected an even number (sin and cos pairs), got {dim}")
        bandwidth = check_float("bandwidth", bandwidth, low=0.0)
        self.register_buffer("freqs", torch.randn(dim // 2) * bandwidth)

    def forward(self, x: Tensor) -> Tensor:
        check_floating("x", x)
        if x.ndim != 1:
            raise ValueError(f"MPFourierEmbedding: expected x of shape (b,), got {tuple(x.shape)}")
        freqs = self.freqs.to(torch.float32)
        phases = torch.outer(x.to(torch.float32), freqs) * (2 * math.pi)
        return torch.cat((phases.sin(), phases.cos()), dim=-1) * math.sqrt(2)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
