"""Forced weight normalisation (EDM2 algorithm 1) of MPLinear and MPConv1d/2d/3d."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mp_layers import MPConv1d, MPConv2d, MPConv3d, MPLinear

from .conftest import rms

CASES = [
    (lambda: MPLinear(256, 128), (4096, 256)),
    (lambda: MPConv1d(64, 96, 3), (64, 64, 256)),
    (lambda: MPConv2d(64, 96, 3), (32, 64, 32, 32)),
    (lambda: MPConv3d(32, 48, 3), (4, 32, 16, 32, 32)),
    (lambda: MPConv3d(32, 48, (3, 1, 1)), (4, 32, 16, 16, 16)),
]
IDS = ["linear", "conv1d", "conv2d", "conv3d", "conv3d-temporal"]


def interior(x: torch.Tensor) -> torch.Tensor:
    """Positions whose receptive field lies inside the input (zero padding shrinks the border)."""
    if x.ndim <= 2:
        return x
    return x[(slice(None), slice(None), *[slice(1, -1)] * (x.ndim - 2))]


@pytest.mark.parametrize(("make", "shape"), CASES, ids=IDS)
@pytest.mark.parametrize("training", [True, False])
def test_unit_variance_in_unit_variance_out(make, shape, training: bool) -> None:  # type: ignore[no-untyped-def]
    layer = make().train(training)
    with torch.no_grad():
        out = layer(torch.randn(shape))
    assert rms(interior(out)) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize(("make", "shape"), CASES, ids=IDS)
def test_training_forward_renormalises_the_stored_weight(make, shape) -> None:  # type: ignore[no-untyped-def]
    layer = make()
    with torch.no_grad():
        layer.weight.mul_(
            torch.rand(layer.weight.shape[0], *[1] * (layer.weight.ndim - 1)) * 7 + 0.5
        )
    layer.train()(torch.randn(shape))
    norms = layer.weight.detach().flatten(1).norm(dim=1)
    expected = torch.full_like(norms, math.sqrt(layer.fan_in))
    torch.testing.assert_close(norms, expected, rtol=2e-3, atol=0.0)


@pytest.mark.parametrize(("make", "shape"), CASES, ids=IDS)
def test_eval_forward_changes_nothing(make, shape) -> None:  # type: ignore[no-untyped-def]
    layer = make()
    with torch.no_grad():
        layer.weight.mul_(3.0)
    before = layer.weight.detach().clone()
    layer.eval()(torch.randn(shape))
    assert torch.equal(layer.weight, before)


def _formula(layer: nn.Module) -> torch.Tensor:
    weight = layer.weight.detach().float()
    norm = weight.flatten(1).norm(dim=1).view(-1, *[1] * (weight.ndim - 1))
    return weight / (1e-4 + norm / math.sqrt(layer.fan_in)) / math.sqrt(layer.fan_in)


def test_eval_effective_weight_is_cached_until_the_parameter_changes() -> None:
    layer = MPConv3d(4, 6, 3).eval()
    with torch.no_grad():
        first = layer.effective_weight()
        assert layer.effective_weight() is first  # no recomputation
        torch.testing.assert_close(first, _formula(layer))
        layer.weight.mul_(torch.linspace(0.5, 2.0, 6).view(6, 1, 1, 1, 1))  # like an optimizer step
        assert layer.effective_weight() is not first
        torch.testing.assert_close(layer.effective_weight(), _formula(layer))
    other = MPConv3d(4, 6, 3)
    layer.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(layer.effective_weight(), _formula(other))
    layer.double()
    with torch.inference_mode():
        assert layer.effective_weight().dtype == torch.float64  # recomputed in the new dtype
        torch.testing.assert_close(layer.effective_weight().float(), _formula(other))


def test_channels_last_input_gets_a_channels_last_weight_and_output() -> None:
    layer = MPConv3d(4, 6, 3)
    x = torch.randn(2, 4, 3, 5, 5)
    x_cl = x.contiguous(memory_format=torch.channels_last_3d)
    for mode in (True, False):
        layer.train(mode)
        out = layer(x_cl)
        assert out.is_contiguous(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(out, layer(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        weight = layer.effective_weight(torch.channels_last_3d)
        assert weight.is_contiguous(memory_format=torch.channels_last_3d)
        assert layer.effective_weight(torch.channels_last_3d) is weight  # cached per layout
        assert layer.effective_weight().is_contiguous()


def test_cache_is_not_used_with_autograd_on_or_in_training() -> None:
    layer = MPLinear(5, 3).eval()
    with torch.no_grad():
        layer.effective_weight()
    weight = layer.effective_weight()  # grad enabled: a fresh, differentiable weight
    assert weight.requires_grad
    weight.sum().backward()
    assert layer.weight.grad is not None
    layer.train()
    assert layer._eval_cache is None  # switching modes releases the cache
    with torch.no_grad():
        layer.effective_weight()
    assert layer._eval_cache is None


def test_inference_mode_cache_does_not_leak_into_no_grad() -> None:
    layer = MPLinear(5, 3).eval()
    with torch.inference_mode():
        cached = layer.effective_weight()
    assert cached.is_inference()
    with torch.no_grad():
        assert not layer.effective_weight().is_inference()


def test_output_is_invariant_to_the_stored_weight_scale() -> None:
    layer = MPConv2d(8, 4, 3).eval()
    x = torch.randn(2, 8, 9, 9)
    out = layer(x)
    with torch.no_grad():
        layer.weight.mul_(123.0)
    torch.testing.assert_close(layer(x), out, rtol=1e-3, atol=1e-3)


def test_effective_weight_has_unit_norm_rows() -> None:
    layer = MPConv3d(16, 8, 3)
    rows = layer.effective_weight().flatten(1).norm(dim=1)
    torch.testing.assert_close(rows, torch.ones(8), rtol=1e-3, atol=1e-3)


def test_fan_in_counts_the_ones_channel() -> None:
    layer = MPConv3d(4, 64, 3, concat_ones_to_input=True)
    assert layer.weight.shape == (64, 5, 3, 3, 3)
    assert layer.fan_in == 5 * 27
    # The reference divided by sqrt(4 * 27), making the layer sqrt(5/4) ~ 12 % too loud.
    x = torch.randn(16, 4, 8, 16, 16)
    with torch.no_grad():
        out = layer.eval()(x)
        ones = torch.cat((x, torch.ones_like(x[:, :1])), dim=1)
        expected = torch.nn.functional.conv3d(ones, layer.effective_weight(), padding="same")
    torch.testing.assert_close(out, expected)
    assert rms(interior(out)) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize(
    ("cls", "shape"),
    [(MPConv1d, (2, 6, 11)), (MPConv2d, (2, 6, 7, 9)), (MPConv3d, (2, 6, 5, 7, 9))],
)
def test_init_dirac_is_the_identity_and_stays_so(cls, shape) -> None:  # type: ignore[no-untyped-def]
    layer = cls(6, 6, 3, init_dirac=True)
    x = torch.randn(shape)
    for _ in range(3):  # training-mode forwards renormalise the weight in place
        torch.testing.assert_close(layer.train()(x), x, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(layer.eval()(x), x, rtol=1e-3, atol=1e-3)


def test_init_dirac_with_ones_channel_is_still_the_identity() -> None:
    layer = MPConv1d(5, 5, 3, init_dirac=True, concat_ones_to_input=True)
    x = torch.randn(3, 5, 10)
    torch.testing.assert_close(layer(x), x, rtol=1e-3, atol=1e-3)


def test_gradients_reach_the_weight_and_training_works() -> None:
    layer = MPLinear(8, 8)
    target = torch.randn(8, 8)
    x = torch.randn(256, 8)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    losses = []
    for _ in range(50):
        loss = (layer(x) - x @ target.T / 3).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_bf16_weights_are_normalised_in_float32() -> None:
    layer = MPLinear(4096, 4).to(torch.bfloat16)
    with torch.no_grad():
        layer.weight.mul_(30.0)
    weight = layer.effective_weight()
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight.flatten(1).norm(dim=1), torch.ones(4), rtol=1e-3, atol=1e-3)
    out = layer(torch.randn(3, 4096, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16


def test_runs_under_autocast() -> None:
    layer = MPConv3d(4, 8, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(torch.randn(1, 4, 4, 8, 8))
    assert out.dtype == torch.bfloat16
    assert out.shape == (1, 8, 4, 8, 8)


def test_state_dict_round_trip() -> None:
    layer = MPConv2d(3, 5, 3, concat_ones_to_input=True)
    copy = MPConv2d(3, 5, 3, concat_ones_to_input=True)
    copy.load_state_dict(layer.state_dict())
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(copy.eval()(x), layer.eval()(x))


def test_is_bias_free() -> None:
    for layer in (MPLinear(3, 4), MPConv3d(3, 4, 3)):
        assert [name for name, _ in layer.named_parameters()] == ["weight"]
        assert not any(isinstance(m, nn.Conv3d) for m in layer.modules())


@pytest.mark.parametrize("kernel", [2, 4, (3, 2, 3)])
def test_even_kernels_are_rejected(kernel) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="odd kernel sizes"):
        MPConv3d(4, 4, kernel)


def test_constructor_errors_name_expected_and_given() -> None:
    with pytest.raises(ValueError, match=r"kernel_size: expected an int or 3 ints, got 2"):
        MPConv3d(4, 4, (3, 3))
    with pytest.raises(ValueError, match=r"dim_in: expected an int >= 1, got 0"):
        MPLinear(0, 4)
    with pytest.raises(TypeError, match=r"parameter dim_out=4\.0 violates .*int.*float 4\.0"):
        MPConv1d(4, 4.0, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"init_dirac: an identity layer needs dim_in == dim_out"):
        MPConv1d(4, 5, 3, init_dirac=True)
    with pytest.raises(TypeError, match=r"parameter concat_ones_to_input=1 violates .*bool"):
        MPConv2d(4, 4, 3, concat_ones_to_input=1)  # type: ignore[arg-type]


def test_forward_errors_name_expected_and_given() -> None:
    with pytest.raises(
        ValueError, match=r"expected input of shape \(b, 4, \?, \?, \?\), got \(2, 3, 4, 4, 4\)"
    ):
        MPConv3d(4, 4, 3)(torch.randn(2, 3, 4, 4, 4))
    with pytest.raises(ValueError, match=r"expected input of shape \(\.\.\., 4\), got \(2, 5\)"):
        MPLinear(4, 4)(torch.randn(2, 5))
    with pytest.raises(TypeError, match="floating-point"):
        MPConv1d(1, 1, 1)(torch.ones(1, 1, 3, dtype=torch.long))
