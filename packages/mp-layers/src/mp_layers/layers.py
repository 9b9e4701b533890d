"""Parameter-free magnitude-preserving modules and the learned scalar gain (EDM2 section 2.5)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mp_layers.functional import dropout, mp_cat, mp_silu, mp_sum, pixel_norm
from mp_layers.typecheck import typechecked
from mp_layers.validation import check_balance, check_eps, check_float, check_int

__all__ = ["Dropout", "Gain", "GatedMPSum", "MPCat", "MPSiLU", "MPSum", "PixelNorm"]


class MPSiLU(nn.Module):
    """Magnitude-preserving SiLU, `silu(x) / 0.596` (EDM2 eq. 81). Any shape in, same shape out."""

    @typechecked
    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return mp_silu(x)


class Gain(nn.Module):
    """A learned scalar `g` (EDM2 section 2.3): `x * g`, with `g` initialised to `init` (default 0).

    Placed after the last layer of a branch so that the branch starts switched off.
    """

    @typechecked
    def __init__(self, init: float = 0.0) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(check_float("init", init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gain


class MPSum(nn.Module):
    """Magnitude-preserving sum (EDM2 eq. 88); `forward(a, b)` gives `b` the weight `t`.

    Use as `MPSum(t)(skip, branch)`. Reference name: `MPAdd(t)(branch, skip)`, whose `t` weighted the
    skip instead: ours follows the paper.
    """

    @typechecked
    def __init__(self, t: float = 0.5) -> None:
        super().__init__()
        self.t = check_balance("t", t)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return mp_sum(a, b, self.t)

    def extra_repr(self) -> str:
        return f"t={self.t}"


class GatedMPSum(nn.Module):
    """Magnitude-preserving residual sum whose balance is learned and starts at 0: an exact identity
    at initialisation, for branches inserted into a trained network.

    `forward(a, b) = (a + k b) / sqrt(1 + k^2)` with `k = g t / (1 - t)` and `g` a learned scalar
    initialised to `init` (default 0). Dividing EDM2's eq. 88 by `1 - t` shows that this is
    `mp_sum(a, b, t')` with `t' = k / (1 + k)`: magnitude-preserving for every `g` (unit-variance,
    uncorrelated `a` and `b` give a unit-variance sum), equal to `a` at `g = 0` and to
    `mp_sum(a, b, t)` at `g = 1`. `t` in [0, 1) is the weight of the branch `b` that `g = 1`
    stands for (EDM2's residual balance, 0.3).
    """

    @typechecked
    def __init__(self, t: float = 0.3, init: float = 0.0) -> None:
        super().__init__()
        self.t = check_balance("t", t)
        if self.t == 1.0:
            raise ValueError("t: expected a float in [0, 1), got 1.0 (the skip would vanish)")
        self.gain = nn.Parameter(torch.tensor(check_float("init", init)))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        k = self.gain * (self.t / (1.0 - self.t))
        return (a + k.to(b.dtype) * b) / torch.sqrt(1.0 + k * k).to(a.dtype)  # exact at k = 0

    def extra_repr(self) -> str:
        return f"t={self.t}"


class MPCat(nn.Module):
    """Magnitude-preserving concatenation along `dim` (EDM2 eq. 103); `t` is the weight of `b`."""

    @typechecked
    def __init__(self, t: float = 0.5, dim: int = 1) -> None:
        super().__init__()
        self.t = check_balance("t", t)
        self.dim = check_int("dim", dim, minimum=-(2**31))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return mp_cat(a, b, dim=self.dim, t=self.t)

    def extra_repr(self) -> str:
        return f"t={self.t}, dim={self.dim}"


class PixelNorm(nn.Module):
    """Unit RMS over dimension `dim` at every position (EDM2 eq. 30). Same shape out."""

    @typechecked
    def __init__(self, dim: int = 1, eps: float = 1e-4) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, minimum=-(2**31))
        self.eps = check_eps(eps)

    def forward(self, x: Tensor) -> Tensor:
        return pixel_norm(x, dim=self.dim, eps=self.eps)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"


class Dropout(nn.Module):
    """`nn.Dropout(p)` through `mp_layers.functional.dropout` (faster on CPU). Same shape out."""

    @typechecked
    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        self.p = check_float("p", p, low=0.0, high=1.0)

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
