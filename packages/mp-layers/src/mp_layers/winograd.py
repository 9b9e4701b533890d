"""Winograd convolution for 3x3x3 kernels on the CPU: fewer multiply-adds than oneDNN's direct one.

`winograd_conv3d(x, w)` equals `F.conv3d(x, w, padding=1)` for a `(c_out, c_in, 3, 3, 3)` kernel,
computed with Lavin & Gray's minimal filtering algorithm ("Fast Algorithms for Convolutional Neural
Networks", 2016): F(2, 3) along time (2 outputs from a 4-sample tile) and F(4, 3) along height and
width (4 outputs from a 6-sample tile), nested. Each output tile of `2 x 4 x 4` positions costs
`4 x 6 x 6 = 144` multiply-adds per input-output channel pair instead of `32 x 27 = 864`; they run
as one batched GEMM `(144, tiles, c_in) @ (144, c_in, c_out)`, between transforms that are only
additions. On a 2-core AVX2 CPU this makes a 128-channel layer at 4x16x16 about 1.6x faster than
oneDNN in eval and 1.5x in training (forward + backward), although MKL's batched GEMM runs at only
about half oneDNN's rate there; small layers (few channels or few tiles) stay faster direct, which
`winograd_worthwhile` decides (`benchmarks/bench_winograd.py`).

Precision: the transforms add rounding; in float32 the largest error is about 1e-5 of the output's
largest magnitude (direct convolution: about 1e-6), far below bfloat16 or TF32 rounding.
`set_winograd_enabled(False)` turns it off for the whole process (`MPConv3d` then always calls
`F.conv3d`). `MPConv3d` never uses it for float64, off the CPU (cuDNN chooses its own
algorithms) or under `torch.compile` (inductor gets the plain convolution).

Gradients, in the Winograd domain too: with `U` the transformed input tiles and `V` the
transformed kernel, `dM = A dy`, `dV = U^T dM`, `dU = dM V^T`, then `dw = G^T dV G` and
`dx = B dU` overlap-added (neighbouring tiles share two input samples per axis). A double
backward (`create_graph=True`) uses differentiable formulas instead: the input gradient as a
Winograd convolution with the flipped, transposed kernel, the weight gradient by
`torch.nn.grad.conv3d_weight`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.grad import conv3d_weight

from mp_layers.typecheck import typechecked

__all__ = [
    "set_winograd_enabled",
    "winograd_conv3d",
    "winograd_conv3d_transformed",
    "winograd_enabled",
    "winograd_weight",
    "winograd_worthwhile",
]

_state = {"enabled": True}

Views = Sequence[Tensor]


@typechecked
def set_winograd_enabled(enabled: bool) -> bool:
    """Allow (default) or forbid Winograd convolutions in `MPConv3d`; returns the previous value."""
    previous, _state["enabled"] = _state["enabled"], enabled
    return previous


@typechecked
def winograd_enabled() -> bool:
    """Whether `MPConv3d` may use `winograd_conv3d` (see `set_winograd_enabled`)."""
    return _state["enabled"]


# --- the two 1-D algorithms: input transform B^T, kernel transform G, output transform A^T -------


def _input_f23(d: Views, out: Views) -> None:
    """B^T of F(2, 3): rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3)."""
    torch.sub(d[0], d[2], out=out[0])
    torch.add(d[1], d[2], out=out[1])
    torch.sub(d[2], d[1], out=out[2])
    torch.sub(d[1], d[3], out=out[3])


def _output_f23(m: Views, out: Views) -> None:
    """A^T of F(2, 3): rows (m0 + m1 + m2, m1 - m2 - m3)."""
    torch.add(m[0], m[1], out=out[0]).add_(m[2])
    torch.sub(m[1], m[2], out=out[1]).sub_(m[3])


def _input_f43(d: Views, out: Views) -> None:
    """B^T of F(4, 3), points (0, +-1, +-2, inf), with shared sub-expressions (12 passes, not 16):
    rows 4d0 - 5d2 + d4, -4d1 - 4d2 + d3 + d4, 4d1 - 4d2 - d3 + d4, -2d1 - d2 + 2d3 + d4,
    2d1 - d2 - 2d3 + d4, 4d1 - 5d3 + d5."""
    a = torch.add(d[4], d[2], alpha=-4)  # d4 - 4 d2
    b = torch.add(d[3], d[1], alpha=-4)  # d3 - 4 d1
    torch.add(a, b, out=out[1])
    torch.sub(a, b, out=out[2])
    torch.add(a, d[0], alpha=4, out=out[0]).sub_(d[2])
    c = torch.sub(d[4], d[2], out=a)  # d4 - d2
    e = torch.sub(d[3], d[1], out=b)  # d3 - d1
    torch.add(c, e, alpha=2, out=out[3])
    torch.add(c, e, alpha=-2, out=out[4])
    torch.add(d[5], d[1], alpha=4, out=out[5]).add_(d[3], alpha=-5)


def _output_f43(m: Views, out: Views) -> None:
    """A^T of F(4, 3): rows m0 + (m1 + m2) + (m3 + m4), (m1 - m2) + 2 (m3 - m4),
    (m1 + m2) + 4 (m3 + m4), (m1 - m2) + 8 (m3 - m4) + m5."""
    s12, d12 = m[1] + m[2], m[1] - m[2]
    s34, d34 = m[3] + m[4], m[3] - m[4]
    torch.add(s12, s34, out=out[0]).add_(m[0])
    torch.add(d12, d34, alpha=2, out=out[1])
    torch.add(s12, s34, alpha=4, out=out[2])
    torch.add(d12, d34, alpha=8, out=out[3]).add_(m[5])


_G_F23 = ((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1))
_G_F43 = (
    (1 / 4, 0, 0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0, 0, 1),
)


_BT_F23 = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_AT_F23 = ((1, 1, 1, 0), (0, 1, -1, -1))
_BT_F43 = (
    (4, 0, -5, 0, 1, 0),
    (0, -4, -4, 1, 1, 0),
    (0, 4, -4, -1, 1, 0),
    (0, -2, -1, 2, 1, 0),
    (0, 2, -1, -2, 1, 0),
    (0, 4, 0, -5, 0, 1),
)
_AT_F43 = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))

Matrix = tuple[tuple[float, ...], ...]


class _Algorithm:
    """F(m, 3): `m` outputs per tile from `m + 2` inputs. `to_input`/`to_output` are the
    hand-simplified forward transforms (`input_matrix` B^T and `output_matrix` A^T applied with
    fewer passes); the backward applies the transposed matrices generically."""

    def __init__(
        self,
        m: int,
        matrices: tuple[Matrix, Matrix, Matrix],
        to_input: Callable[[Views, Views], None],
        to_output: Callable[[Views, Views], None],
    ) -> None:
        self.m, self.n = m, m + 2
        self.input_matrix, self.kernel, self.output_matrix = matrices
        self.to_input, self.to_output = to_input, to_output

    def output_adjoint(self, dy: Views, out: Views) -> None:
        """`A dy`: the gradient of the output transform, (m taps) -> (n positions)."""
        _combine(tuple(zip(*self.output_matrix, strict=True)), dy, out)


def _combine(matrix: Matrix, sources: Views, out: Views) -> None:
    """`out[r] = sum_c matrix[r][c] sources[c]`, zero coefficients skipped."""
    for row, target in zip(matrix, out, strict=True):
        (first, source), *rest = [(c, s) for c, s in zip(row, sources, strict=True) if c]
        torch.mul(source, first, out=target)
        for coefficient, source in rest:
            target.add_(source, alpha=coefficient)


_F23 = _Algorithm(2, (_BT_F23, _G_F23, _AT_F23), _input_f23, _output_f23)
_F43 = _Algorithm(4, (_BT_F43, _G_F43, _AT_F43), _input_f43, _output_f43)
_ALGORITHMS = (_F23, _F43, _F43)  # time, height, width
_POSITIONS = math.prod(a.n for a in _ALGORITHMS)  # 144 products per tile and channel pair


@typechecked
def winograd_weight(weight: Tensor) -> Tensor:
    """`(c_out, c_in, 3, 3, 3) -> (144, c_in, c_out)`: the kernel transformed (G w G^T along each
    axis), in the layout of the batched GEMM, in at least float32. One GEMM with the Kronecker
    product of the three G matrices: 3-4x faster here than three small transforms, which PyTorch
    runs as batched 3x6 products."""
    _check_kernel(weight)
    dtype = torch.promote_types(weight.dtype, torch.float32)
    taps = weight.to(dtype).permute(2, 3, 4, 1, 0).reshape(27, -1)  # (taps, c_in * c_out)
    return (_kernel_transform(dtype, weight.device) @ taps).view(_POSITIONS, *weight.shape[1::-1])


@functools.cache
def _kernel_transform(dtype: torch.dtype, device: torch.device) -> Tensor:
    """`G_t (x) G_h (x) G_w`: `(144, 27)`, row = transformed position, column = kernel tap."""
    g = [torch.tensor(a.kernel, dtype=torch.float64) for a in _ALGORITHMS]
    return torch.kron(torch.kron(g[0], g[1]), g[2]).to(dtype=dtype, device=device)


def _check_kernel(weight: Tensor) -> None:
    if weight.ndim != 5 or tuple(weight.shape[2:]) != (3, 3, 3):
        raise ValueError(
            f"winograd: expected a weight of shape (c_out, c_in, 3, 3, 3), got {tuple(weight.shape)}"
        )


MAX_TILE_BYTES = 256 * 2**20  # the largest transformed-tile buffer `winograd_worthwhile` allows


@typechecked
def winograd_worthwhile(x: Tensor, weight: Tensor, *, backward: bool) -> bool:
    """Whether `MPConv3d` should call `winograd_conv3d` for this input and weight: enabled, a
    3x3x3 kernel, float32 on the CPU, not compiling, and large enough that the GEMM saving beats
    the transforms (and not under CPU autocast, which would run the convolution in bf16 or
    fp16). Measured on a 2-core AVX2 machine (`benchmarks/bench_winograd.py`): it needs
    `c_in * c_out / (c_in + c_out) >= 40` (128 -> 64 channels: 1.2x faster in eval; 64 -> 64: no
    gain) and at least 8 output tiles of 2x4x4, or 64 when a backward pass follows (the kernel is
    transformed twice per training step). The transformed tiles, `144 * tiles * channels` floats,
    are transient buffers a direct convolution does not need: above `MAX_TILE_BYTES` (256 MiB) the
    layer stays direct, so large inputs never risk running out of memory on its account."""
    if not (
        _state["enabled"]
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.ndim == 5
        and weight.ndim == 5
        and tuple(weight.shape[2:]) == (3, 3, 3)
        and not torch.compiler.is_compiling()
        and not torch.is_autocast_enabled("cpu")  # autocast's lower-precision conv wins there
    ):
        return False
    c_in, c_out = weight.shape[1], weight.shape[0]
    tiles = x.shape[0] * math.prod(_tile_counts(x.shape[2:]))
    tile_bytes = _POSITIONS * tiles * max(c_in, c_out) * x.element_size()
    return (
        c_in * c_out >= 40 * (c_in + c_out)
        and tiles >= (64 if backward else 8)
        and tile_bytes <= MAX_TILE_BYTES
    )


@typechecked
def winograd_conv3d(x: Tensor, weight: Tensor) -> Tensor:
    """`F.conv3d(x, weight, padding=1)` for a 3x3x3 kernel, by Winograd's algorithm.

    Args:
        x: `(b, c_in, t, h, w)`, any size (tiles are padded and the result cropped); channels-last
            input avoids a layout conversion.
        weight: `(c_out, c_in, 3, 3, 3)`, same dtype as `x`.

    Returns:
        `(b, c_out, t, h, w)` in `channels_last_3d` layout. Differentiable in both arguments.
    """
    _check_kernel(weight)
    if x.ndim != 5 or x.shape[1] != weight.shape[1] or x.dtype != weight.dtype:
        raise ValueError(
            f"winograd_conv3d: expected x (b, {weight.shape[1]}, t, h, w) of dtype {weight.dtype}, "
            f"got {tuple(x.shape)} of dtype {x.dtype}"
        )
    return _WinogradConv3d.apply(x, weight)


class _WinogradConv3d(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)  # as for a direct convolution, nothing larger
        return winograd_conv3d_transformed(x, winograd_weight(weight).to(x.dtype))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        if not torch.is_grad_enabled():  # the usual case: everything in the Winograd domain
            # the transformed kernel is 5.3x the kernel: recomputing it (a few ms) instead of
            # keeping it from the forward saved 100 MiB of peak memory in the U-Net benchmark
            transformed = winograd_weight(weight).to(x.dtype)
            return _backward(x, grad, transformed, ctx.needs_input_grad[:2])
        # create_graph=True (a double backward follows): differentiable formulas instead
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:  # correlation with the flipped, transposed kernel
            grad_x = winograd_conv3d(grad, weight.flip(2, 3, 4).transpose(0, 1))
        if ctx.needs_input_grad[1]:
            grad_w = conv3d_weight(x, weight.shape, grad, padding=1)
        return grad_x, grad_w


@typechecked
def winograd_conv3d_transformed(x: Tensor, transformed: Tensor) -> Tensor:
    """The forward of `winograd_conv3d` with a kernel already in `winograd_weight` form (no
    autograd through the kernel: for cached eval weights)."""
    batch, channels, *sizes = x.shape
    tiles = _tile_counts(sizes)
    u = _input_tiles(x, tiles)
    c_out = transformed.shape[-1]
    m = torch.bmm(u.view(_POSITIONS, -1, channels), transformed)
    m = m.view(*(a.n for a in _ALGORITHMS), batch, *tiles, c_out)
    # output transform from the last axis to the first; each puts its `m` outputs right after
    # its tile index, so the result is (b, t/2, 2, h/4, 4, w/4, 4, c_out) = channels-last
    for axis in reversed(range(3)):
        a = _ALGORITHMS[axis]
        dim = axis + 2 + axis  # the axis' tile index, after `axis` positions, batch, tiles
        shape = [*m.shape[:axis], *m.shape[axis + 1 : dim], a.m, *m.shape[dim:]]
        shape.insert(dim, shape.pop(dim - 1))  # (.., tiles_axis, m, ..)
        out = m.new_empty(shape)
        a.to_output(m.unbind(axis), out.unbind(dim))
        m = out
    y = m.view(batch, *(t * a.m for t, a in zip(tiles, _ALGORITHMS, strict=True)), c_out)
    return _crop_channels_last(y, sizes, start=0)


def _backward(
    x: Tensor, grad: Tensor, transformed: Tensor, needs: tuple[bool, bool]
) -> tuple[Tensor | None, Tensor | None]:
    """Both gradients in the Winograd domain. With `U` the input tiles, `V` the kernel and
    `M = U V` per position: `dM = A dy` (per axis), `dV = U^T dM`, `dU = dM V^T`, then
    `dw = G^T dV G` and `dx = B dU`, overlap-added where neighbouring tiles share input samples."""
    batch, c_in, *sizes = x.shape
    c_out = grad.shape[1]
    tiles = _tile_counts(sizes)
    dy = grad.permute(0, 2, 3, 4, 1)
    extra = [t * a.m - s for t, a, s in zip(tiles, _ALGORITHMS, sizes, strict=True)]
    dy = F.pad(dy, (0, 0, 0, extra[2], 0, extra[1], 0, extra[0]))
    dm = _to_positions(
        dy, tiles, taps=[a.m for a in _ALGORITHMS], apply=[a.output_adjoint for a in _ALGORITHMS]
    )
    dm = dm.view(_POSITIONS, -1, c_out)
    grad_x = grad_w = None
    if needs[1]:
        u = _input_tiles(x, tiles).view(_POSITIONS, -1, c_in)
        dv = torch.bmm(u.transpose(1, 2), dm).view(_POSITIONS, -1)  # (144, c_in * c_out)
        taps = _kernel_transform(dv.dtype, dv.device).T @ dv  # (27, c_in * c_out)
        grad_w = taps.view(3, 3, 3, c_in, c_out).permute(4, 3, 0, 1, 2)
    if needs[0]:
        du = torch.bmm(dm, transformed.transpose(1, 2))  # (144, tiles, c_in)
        du = du.view(*(a.n for a in _ALGORITHMS), batch, *tiles, c_in)
        for axis in reversed(range(3)):  # B along each axis, last first, into padded samples
            a, t = _ALGORITHMS[axis], tiles[axis]
            dim = axis + 1 + axis  # the tile index once this axis' position is summed away
            shape = [*du.shape[:axis], *du.shape[axis + 1 :]]
            shape[dim] = t * a.m + 2
            summed = du.new_zeros(shape)
            for tap in range(a.n):
                window = _tile_taps(summed, dim, tap, t, a.m)
                for position, row in enumerate(a.input_matrix):
                    if row[tap]:
                        window.add_(du.select(axis, position), alpha=row[tap])
            du = summed
        grad_x = _crop_channels_last(du, sizes, start=1)
    return grad_x, grad_w


def _tile_counts(sizes: Sequence[int]) -> list[int]:
    return [-(-size // a.m) for size, a in zip(sizes, _ALGORITHMS, strict=True)]


def _input_tiles(x: Tensor, tiles: list[int]) -> Tensor:
    """`(b, c, t, h, w) -> (4, 6, 6, b, *tiles, c)`: B^T d B of every input tile, per axis."""
    sizes = x.shape[2:]
    # channels-last view, padded by 1 in front and 1 + whatever completes the last tile behind
    pads = [(1, t * a.m + 1 - s) for t, a, s in zip(tiles, _ALGORITHMS, sizes, strict=True)]
    u = F.pad(x.permute(0, 2, 3, 4, 1), (0, 0, *pads[2], *pads[1], *pads[0]))
    return _to_positions(
        u, tiles, taps=[a.n for a in _ALGORITHMS], apply=[a.to_input for a in _ALGORITHMS]
    )


def _to_positions(
    u: Tensor, tiles: list[int], *, taps: list[int], apply: list[Callable[[Views, Views], None]]
) -> Tensor:
    """`(b, s0, s1, s2, c) -> (n0, n1, n2, b, t0, t1, t2, c)`: one transform per axis, each
    reading `taps[axis]` samples of every tile (tiles start every `m` samples) and writing its
    `n` positions in front, so the result is the batched GEMM's `(positions, tiles, c)`."""
    for axis, (a, t) in enumerate(zip(_ALGORITHMS, tiles, strict=True)):
        dim = 2 * axis + 1  # the axis' samples, after `axis` positions, batch and earlier tiles
        out = u.new_empty((*u.shape[:axis], a.n, *u.shape[axis:dim], t, *u.shape[dim + 1 :]))
        apply[axis]([_tile_taps(u, dim, j, t, a.m) for j in range(taps[axis])], out.unbind(axis))
        u = out
    return u


def _crop_channels_last(y: Tensor, sizes: Sequence[int], start: int) -> Tensor:
    """`(b, T, H, W, c)` with padding -> `(b, c, *sizes)` in channels_last_3d layout."""
    index = (slice(None), *(slice(start, start + size) for size in sizes))
    return y[index].permute(0, 4, 1, 2, 3).contiguous(memory_format=torch.channels_last_3d)


def _tile_taps(u: Tensor, dim: int, tap: int, tiles: int, step: int) -> Tensor:
    """Sample `tap` of every tile along `dim` (tiles start every `step` samples)."""
    return u.narrow(dim, tap, (tiles - 1) * step + 1)[
        (slice(None),) * dim + (slice(None, None, step),)
    ]
