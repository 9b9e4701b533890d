"""Linear and convolution layers with forced weight normalisation (EDM2 section 2.3, algorithm 1).

Every layer is bias-free. Its stored weight `(out, in, *kernel)` is kept at norm `sqrt(fan_in)` per
output unit: in training mode each forward renormalises it in place (under `no_grad`), and every
forward, training or not, uses `normalize(w) / sqrt(fan_in)`, so each output unit computes a
unit-norm dot product and unit-variance inputs give unit-variance outputs. `fan_in` counts every
input element of one output unit, the constant-ones channel of `concat_ones_to_input` included.
Norms are taken in at least float32 whatever the parameter dtype; the weight is cast to the input's
dtype.

Cost: a training forward reads the weight three times (renormalise in place, then one fused
normalise-and-scale with a hand-written backward). Outside training with autograd off (eval,
sampling) the effective weight is cached per layer and recomputed only when the parameter
changes (an optimizer step, `load_state_dict`, `.to()`): one extra copy of the weights in memory,
released by `.train()`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mp_layers.functional import _scaled_normalize
from mp_layers.typecheck import typechecked
from mp_layers.upsample import CONV_BY_DIMS, conv_nearest_upsampled, memory_format_of
from mp_layers.validation import check_floating, check_int, check_kernel_size
from mp_layers.winograd import (
    winograd_conv3d,
    winograd_conv3d_transformed,
    winograd_weight,
    winograd_worthwhile,
)

__all__ = ["MPConv1d", "MPConv2d", "MPConv3d", "MPLinear"]

_EPS = 1e-4  # `normalize`'s default, as in EDM2


class _ForcedWeightNorm(nn.Module):
    """Shared weight handling of `MPLinear` and `MPConv{1,2,3}d`.

    `spatial_dims` is 0 for a linear layer; the weight has shape `(dim_out, dim_in + ones, *kernel)`.
    """

    spatial_dims: int = 0

    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        kernel_size: tuple[int, ...],
        *,
        concat_ones_to_input: bool = False,
        init_dirac: bool = False,
    ) -> None:
        super().__init__()
        self.dim_in = check_int("dim_in", dim_in)
        self.dim_out = check_int("dim_out", dim_out)
        self.kernel_size = kernel_size
        self.concat_ones_to_input = concat_ones_to_input
        weight = torch.randn(dim_out, dim_in + int(concat_ones_to_input), *kernel_size)
        if init_dirac:
            if dim_in != dim_out:
                raise ValueError(
                    f"init_dirac: an identity layer needs dim_in == dim_out, got {dim_in} and {dim_out}"
                )
            weight = torch.zeros_like(weight)
            index = torch.arange(dim_out)
            # The centre of an odd kernel is the middle element of its flattened taps.
            taps = weight.view(dim_out, weight.shape[1], -1)
            taps[index, index, taps.shape[-1] // 2] = 1.0
            # Store it already normalised (row norm sqrt(fan_in)), so the effective weight is the
            # identity from the first forward and renormalisation keeps it so.
            weight *= math.sqrt(weight[0].numel())
        self.weight = nn.Parameter(weight)
        self._eval_cache: tuple[tuple[object, ...], Tensor] | None = None
        self._winograd_cache: tuple[Tensor, Tensor] | None = None  # (eval weight, transformed)

    @property
    def fan_in(self) -> int:
        """Input elements feeding one output unit: `(dim_in + ones) * prod(kernel_size)`."""
        return self.weight[0].numel()

    def effective_weight(
        self, memory_format: torch.memory_format = torch.contiguous_format
    ) -> Tensor:
        """The weight the layer applies, `normalize(w) / sqrt(fan_in)` in float32 or wider (alg. 1).

        `memory_format` lays it out for a channels-last convolution (the parameter keeps its own
        layout, so checkpoints are unaffected).

        In training mode this first renormalises the stored weight in place (without gradient), which
        is what keeps the effective learning rate constant (EDM2 section 2.3). Eval mode never
        changes the parameter; there, with autograd off, the result is cached until the parameter
        changes.
        """
        dims = tuple(range(1, self.weight.ndim))
        gain = 1.0 / math.sqrt(self.fan_in)
        if self.training:
            with torch.no_grad():
                self.weight.copy_(_scaled_normalize(self._weight32(), dims, _EPS, 1.0))
        elif not (
            # is_compiling first: dynamo cannot trace `is_inference()` (a no-grad compile broke)
            torch.compiler.is_compiling() or torch.is_grad_enabled() or self.weight.is_inference()
        ):
            key = (
                memory_format,
                self.weight._version,
                self.weight.data_ptr(),
                self.weight.dtype,
                self.weight.device,
                torch.is_inference_mode_enabled(),
            )
            if self._eval_cache is not None and self._eval_cache[0] == key:
                return self._eval_cache[1]
            weight = _scaled_normalize(self._weight32(), dims, _EPS, gain)
            weight = weight.contiguous(memory_format=memory_format)
            self._eval_cache = (key, weight)
            return weight
        weight = _scaled_normalize(self._weight32(), dims, _EPS, gain)
        return weight.contiguous(memory_format=memory_format)

    def _weight32(self) -> Tensor:
        return self.weight.to(torch.promote_types(self.weight.dtype, torch.float32))

    def train(self, mode: bool = True) -> _ForcedWeightNorm:
        if mode != self.training:  # switching modes releases the cached effective weight
            self._eval_cache = self._winograd_cache = None
        return super().train(mode)

    def extra_repr(self) -> str:
        parts = [f"{self.dim_in}, {self.dim_out}"]
        if self.kernel_size:
            parts.append(f"kernel_size={self.kernel_size}")
        if self.concat_ones_to_input:
            parts.append("concat_ones_to_input=True")
        return ", ".join(parts)


class MPLinear(_ForcedWeightNorm):
    """Magnitude-preserving linear layer: `(..., dim_in) -> (..., dim_out)`, no bias."""

    @typechecked
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__(dim_in, dim_out, ())

    def forward(self, x: Tensor) -> Tensor:
        check_floating("x", x)
        if x.ndim < 1 or x.shape[-1] != self.dim_in:
            raise ValueError(
                f"MPLinear: expected input of shape (..., {self.dim_in}), got {tuple(x.shape)}"
            )
        return F.linear(x, self.effective_weight().to(x.dtype))


class _MPConvNd(_ForcedWeightNorm):
    @typechecked
    def __init__(
        self,
        dim_in: int,
        dim_out: int,
        kernel_size: int | Sequence[int],
        *,
        concat_ones_to_input: bool = False,
        init_dirac: bool = False,
    ) -> None:
        super().__init__(
            dim_in,
            dim_out,
            check_kernel_size(kernel_size, self.spatial_dims),
            concat_ones_to_input=concat_ones_to_input,
            init_dirac=init_dirac,
        )

    def forward(self, x: Tensor, *, upsample: Sequence[int] | None = None) -> Tensor:
        """`(b, dim_in, *spatial) -> (b, dim_out, *spatial)`.

        `upsample`: one integer factor per spatial dimension; the layer then returns its
        convolution of `x` up-sampled by nearest-neighbour interpolation, computed at `x`'s own
        resolution (`mp_layers.upsample.conv_nearest_upsampled`: 2.25x fewer multiply-adds for a
        3x3(x3) kernel after 2x spatial up-sampling), `(b, dim_out, *(n * f))`.
        """
        check_floating("x", x)
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.dim_in:
            spatial = ", ".join("?" * self.spatial_dims)
            raise ValueError(
                f"{type(self).__name__}: expected input of shape (b, {self.dim_in}, {spatial}), "
                f"got {tuple(x.shape)}"
            )
        if self.concat_ones_to_input:
            x = torch.cat((x, torch.ones_like(x[:, :1])), dim=1)
        # a channels-last input gets a channels-last weight: oneDNN would convert it on every call
        weight = self.effective_weight(memory_format_of(x)).to(x.dtype)
        if upsample is not None:
            return conv_nearest_upsampled(x, weight, upsample)
        backward = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        if self.spatial_dims == 3 and winograd_worthwhile(x, weight, backward=backward):
            if backward:
                return winograd_conv3d(x, weight)
            return winograd_conv3d_transformed(x, self._winograd_weight(weight))
        return CONV_BY_DIMS[self.spatial_dims](x, weight, padding="same")

    def _winograd_weight(self, weight: Tensor) -> Tensor:
        """`winograd_weight(weight)`, cached alongside the cached eval weight."""
        cached = self._winograd_cache
        if cached is not None and cached[0] is weight:
            return cached[1]
        transformed = winograd_weight(weight).to(weight.dtype)
        if self._eval_cache is not None and self._eval_cache[1] is weight:
            self._winograd_cache = (weight, transformed)
        return transformed


class MPConv1d(_MPConvNd):
    """Magnitude-preserving 1-D convolution, 'same' padding, no bias: `(b, in, t) -> (b, out, t)`.

    `concat_ones_to_input` appends a constant-ones channel (a bias substitute, counted in fan-in);
    `init_dirac` starts the layer as the identity (needs `dim_in == dim_out`).
    """

    spatial_dims = 1


class MPConv2d(_MPConvNd):
    """Magnitude-preserving 2-D convolution: `(b, in, h, w) -> (b, out, h, w)`. See `MPConv1d`."""

    spatial_dims = 2


class MPConv3d(_MPConvNd):
    """Magnitude-preserving 3-D convolution: `(b, in, t, h, w) -> (b, out, t, h, w)`.

    See `MPConv1d`; `kernel_size` may be an int or a `(kt, kh, kw)` tuple of odd sizes.
    """

    spatial_dims = 3
