"""Small tensor helpers shared by the diffusion and its samplers: the [0, 1] <-> [-1, 1] maps,
seeded standard-normal noise and batched timesteps."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "normalize_to_neg_one_to_one",
    "randn",
    "randn_like",
    "timesteps_like",
    "unnormalize_to_zero_to_one",
]


def normalize_to_neg_one_to_one(x: Tensor) -> Tensor:
    """[0, 1] → [-1, 1]."""
    return x * 2 - 1


def unnormalize_to_zero_to_one(x: Tensor) -> Tensor:
    """[-1, 1] → [0, 1]."""
    return (x + 1) * 0.5


def randn(
    shape: tuple[int, ...],
    *,
    device: torch.device,
    dtype: torch.dtype,
    generator: torch.Generator | None,
) -> Tensor:
    """Standard normal noise of `shape`, drawn from `generator` (on its own device) when one is
    given, else from the global RNG of `device`."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return noise.to(device)


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """`randn` of x's shape, device and dtype."""
    return randn(tuple(x.shape), device=x.device, dtype=x.dtype, generator=generator)


def timesteps_like(t: Tensor | int, x: Tensor) -> Tensor:
    """Timesteps as a `(b,)` long tensor on x's device, for x `(b, …)`."""
    if isinstance(t, Tensor):
        return t.to(device=x.device, dtype=torch.long).expand(x.shape[0])
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
