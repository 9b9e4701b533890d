"""`mp_layers.winograd`: the Winograd 3x3x3 convolution and when `MPConv3d` uses it."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

import mp_layers.weights
from mp_layers import MPConv3d
from mp_layers.winograd import (
    set_winograd_enabled,
    winograd_conv3d,
    winograd_conv3d_transformed,
    winograd_enabled,
    winograd_weight,
    winograd_worthwhile,
)

# sizes that fill whole tiles, partial tiles, and single samples along each axis
SHAPES = [(2, 3, 4, 8, 8), (1, 2, 5, 7, 9), (2, 4, 1, 1, 1), (1, 3, 6, 10, 3), (1, 2, 3, 4, 13)]


@pytest.fixture
def winograd_on() -> Iterator[None]:
    previous = set_winograd_enabled(True)
    yield
    set_winograd_enabled(previous)


@pytest.mark.parametrize("shape", SHAPES)
def test_equals_the_direct_convolution_in_float64_gradients_included(
    shape: tuple[int, ...],
) -> None:
    """Forward and the Winograd-domain backward (dx = B dU overlap-added, dw = G^T dV G)."""
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, shape[1], 3, 3, 3, dtype=torch.float64, requires_grad=True)
    out, expected = winograd_conv3d(x, weight), F.conv3d(x, weight, padding=1)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(expected)
    got = torch.autograd.grad(out, (x, weight), grad)
    want = torch.autograd.grad(expected, (x, weight), grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
    (only_x,) = torch.autograd.grad(winograd_conv3d(x, weight.detach()), x, grad)
    torch.testing.assert_close(only_x, want[0], rtol=1e-10, atol=1e-10)


def test_gradcheck_and_double_backward() -> None:
    """A double backward (create_graph=True) takes the differentiable backward formulas."""
    x = torch.randn(1, 2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(winograd_conv3d, (x, weight))
    assert torch.autograd.gradgradcheck(winograd_conv3d, (x, weight))


def test_float32_error_stays_near_float_rounding_at_model_size() -> None:
    """The transforms' rounding: at 128 channels the error is about 1e-5 of the largest output,
    gradients included (documented bound 5e-5)."""
    x = torch.randn(2, 128, 4, 16, 16).contiguous(memory_format=torch.channels_last_3d)
    weight = torch.randn(128, 128, 3, 3, 3) / (27 * 128) ** 0.5
    x.requires_grad_()
    weight.requires_grad_()
    out = winograd_conv3d(x, weight)
    exact = F.conv3d(x.double(), weight.double(), padding=1)
    grad = torch.randn_like(exact)
    grads = torch.autograd.grad(out, (x, weight), grad.float())
    exact_grads = torch.autograd.grad(exact, (x, weight), grad)
    for got, want in [(out, exact), *zip(grads, exact_grads, strict=True)]:
        assert ((got.double() - want).abs().max() / want.abs().max()).item() < 5e-5


def test_output_is_channels_last_whatever_the_input_layout() -> None:
    weight = torch.randn(4, 3, 3, 3, 3)
    x = torch.randn(2, 3, 4, 8, 8)
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        out = winograd_conv3d(x.contiguous(memory_format=layout), weight)
        assert out.is_contiguous(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(out, F.conv3d(x, weight, padding=1), rtol=1e-4, atol=1e-4)


def test_weight_transform_is_g_w_g_transposed_per_axis() -> None:
    """Against the textbook matrices of Lavin & Gray, applied one axis at a time."""
    g23 = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]).double()
    g43 = torch.tensor(
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ]
    ).double()
    weight = torch.randn(3, 2, 3, 3, 3, dtype=torch.float64)
    expected = torch.einsum("ad,bh,cw,oidhw->abcio", g23, g43, g43, weight).reshape(144, 2, 3)
    torch.testing.assert_close(winograd_weight(weight), expected)
    assert winograd_weight(weight.half()).dtype == torch.float32  # transformed in float32 at least
    y = winograd_conv3d_transformed(torch.randn(1, 2, 4, 4, 4, dtype=torch.float64), expected)
    assert y.shape == (1, 3, 4, 4, 4)


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"\(c_out, c_in, 3, 3, 3\)"):
        winograd_conv3d(torch.randn(1, 2, 4, 4, 4), torch.randn(3, 2, 1, 3, 3))
    with pytest.raises(ValueError, match=r"expected x \(b, 2, t, h, w\)"):
        winograd_conv3d(torch.randn(1, 3, 4, 4, 4), torch.randn(3, 2, 3, 3, 3))
    with pytest.raises(ValueError, match="dtype"):
        winograd_conv3d(torch.randn(1, 2, 4, 4, 4), torch.randn(3, 2, 3, 3, 3).double())
    with pytest.raises(TypeError, match=r"parameter enabled=1 violates .*bool"):
        set_winograd_enabled(1)  # type: ignore[arg-type]


def test_worthwhile_only_for_large_float32_cpu_layers(winograd_on: None) -> None:
    x = torch.randn(2, 128, 4, 8, 8)  # 2 x 2 x 2 x 2 = 16 tiles of 2x4x4
    w = torch.randn(128, 128, 3, 3, 3)
    assert winograd_worthwhile(x, w, backward=False)
    assert not winograd_worthwhile(x, w, backward=True)  # training needs 64 tiles
    assert winograd_worthwhile(torch.randn(2, 128, 4, 16, 16), w, backward=True)
    assert not winograd_worthwhile(x.double(), w.double(), backward=False)  # float64: direct
    assert not winograd_worthwhile(x[:, :64], w[:64, :64], backward=False)  # 64 -> 64: no gain
    assert not winograd_worthwhile(x, w[:, :, :1], backward=False)  # not 3x3x3
    assert not winograd_worthwhile(x[:1, :, :2, :4, :4], w, backward=False)  # one tile
    # tiles of 144 positions x (2 x 8 x 16 x 16) x 256 channels x 4 bytes = 576 MiB: direct
    wide = torch.zeros(()).expand(256, 256, 3, 3, 3)
    assert not winograd_worthwhile(torch.zeros(()).expand(2, 256, 16, 64, 64), wide, backward=False)
    # (2 x 4 x 8 x 8) tiles: 72 MiB
    assert winograd_worthwhile(torch.zeros(()).expand(2, 256, 8, 32, 32), wide, backward=False)
    set_winograd_enabled(False)
    assert not winograd_enabled()
    assert not winograd_worthwhile(x, w, backward=False)


class _Counter:
    def __init__(self, fn):  # type: ignore[no-untyped-def]
        self.fn, self.calls = fn, 0

    def __call__(self, *args):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self.fn(*args)


def _count(monkeypatch: pytest.MonkeyPatch, name: str) -> _Counter:
    counter = _Counter(getattr(mp_layers.weights, name))
    monkeypatch.setattr(mp_layers.weights, name, counter)
    return counter


def test_mpconv3d_eval_uses_winograd_with_a_cached_kernel(
    winograd_on: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    conv = MPConv3d(96, 96, 3).eval()  # 96 * 96 / 192 = 48 >= 40
    x = torch.randn(2, 96, 4, 8, 8).contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        set_winograd_enabled(False)
        direct = conv(x)
        set_winograd_enabled(True)
        runs = _count(monkeypatch, "winograd_conv3d_transformed")
        transforms = _count(monkeypatch, "winograd_weight")
        out = conv(x)
        torch.testing.assert_close(out, direct, rtol=1e-4, atol=1e-4)
        conv(x)
        assert (runs.calls, transforms.calls) == (2, 1)  # the second call reuses the kernel
        conv.weight.mul_(-1)  # an in-place change (an optimizer step) invalidates it
        torch.testing.assert_close(conv(x), -direct, rtol=1e-4, atol=1e-4)
        assert transforms.calls == 2
        conv.eval()  # already in eval: the caches stay
        conv(x)
        assert transforms.calls == 2
        conv.train().eval()  # a mode switch releases them
        conv(x)
        assert transforms.calls == 3


def test_mpconv3d_training_gradients_match_the_direct_convolution(
    winograd_on: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = torch.randn(2, 96, 4, 16, 16).contiguous(memory_format=torch.channels_last_3d)
    results = []
    for enabled in (False, True):
        set_winograd_enabled(enabled)
        torch.manual_seed(1)
        conv = MPConv3d(96, 96, 3)
        runs = _count(monkeypatch, "winograd_conv3d")
        xg = x.clone().requires_grad_()
        out = conv(xg)
        out.square().mean().backward()
        assert runs.calls == int(enabled)
        assert conv.weight.grad is not None
        assert xg.grad is not None
        results.append((out, xg.grad, conv.weight.grad))
    for direct, winograd in zip(*results, strict=True):
        scale = direct.abs().max()
        assert ((winograd - direct).abs().max() / scale).item() < 5e-5


def test_mpconv3d_small_or_float64_layers_stay_direct(
    winograd_on: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = _count(monkeypatch, "winograd_conv3d_transformed")
    with torch.no_grad():
        MPConv3d(8, 8, 3).eval()(torch.randn(2, 8, 4, 8, 8))
        MPConv3d(96, 96, 3).double().eval()(torch.randn(2, 96, 4, 8, 8, dtype=torch.float64))
    assert runs.calls == 0


def test_mpconv3d_under_cpu_autocast_keeps_autocasts_bfloat16_convolution(
    winograd_on: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = _count(monkeypatch, "winograd_conv3d_transformed")
    conv = MPConv3d(96, 96, 3).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(torch.randn(2, 96, 4, 8, 8))
    assert out.dtype == torch.bfloat16
    assert runs.calls == 0


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="torch.compile does not support it yet")
def test_compiled_mpconv3d_falls_back_to_the_direct_convolution(winograd_on: None) -> None:
    conv = MPConv3d(96, 96, 3).eval()
    x = torch.randn(2, 96, 4, 8, 8)
    torch._dynamo.reset()
    compiled = torch.compile(conv, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), conv(x), rtol=1e-4, atol=1e-4)
