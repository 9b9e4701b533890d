"""`conv_nearest_upsampled`: the polyphase form of a convolution after nearest up-sampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mp_layers.upsample import conv_nearest_upsampled

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def direct(x: torch.Tensor, weight: torch.Tensor, factors: tuple[int, ...]) -> torch.Tensor:
    up = F.interpolate(x, scale_factor=tuple(float(f) for f in factors), mode="nearest")
    return CONV[x.ndim - 2](up, weight, padding="same")


CASES = [
    ((2, 3, 7), (4, 3, 3), (2,)),
    ((2, 3, 5), (4, 3, 5), (3,)),
    ((1, 2, 5, 6), (3, 2, 3, 3), (2, 2)),
    ((1, 2, 5, 6), (3, 2, 3, 1), (1, 2)),
    ((2, 3, 3, 4, 5), (4, 3, 3, 3, 3), (1, 2, 2)),
    ((2, 3, 3, 4, 5), (4, 3, 3, 3, 3), (2, 1, 1)),
    ((2, 3, 3, 4, 5), (4, 3, 3, 3, 3), (2, 2, 2)),
    ((2, 3, 3, 4, 5), (4, 3, 1, 3, 5), (2, 3, 1)),
    ((2, 3, 3, 4, 5), (4, 3, 1, 1, 1), (1, 2, 2)),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "factors"), CASES)
def test_equals_convolution_of_the_upsampled_input_with_gradients(
    x_shape, w_shape, factors
) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(x_shape, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(w_shape, dtype=torch.float64, requires_grad=True)
    grad = torch.randn_like(direct(x, weight, factors))
    expected = direct(x, weight, factors)
    expected_grads = torch.autograd.grad(expected, (x, weight), grad)
    actual = conv_nearest_upsampled(x, weight, factors)
    actual_grads = torch.autograd.grad(actual, (x, weight), grad)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)
    for a, e in zip(actual_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10)


def test_float32_channels_last_in_channels_last_out() -> None:
    x = torch.randn(2, 8, 4, 6, 6).contiguous(memory_format=torch.channels_last_3d)
    weight = torch.randn(5, 8, 3, 3, 3)
    out = conv_nearest_upsampled(x, weight, (1, 2, 2))
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(out, direct(x.contiguous(), weight, (1, 2, 2)), rtol=1e-4, atol=1e-4)


def test_bad_arguments_are_clear_errors() -> None:
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="odd kernel"):
        conv_nearest_upsampled(x, torch.randn(3, 2, 2, 2), (2, 2))
    with pytest.raises(ValueError, match="expected 2 factors"):
        conv_nearest_upsampled(x, torch.randn(3, 2, 3, 3), (2,))
    with pytest.raises(ValueError, match="same rank"):
        conv_nearest_upsampled(x, torch.randn(3, 5, 3, 3), (2, 2))
    with pytest.raises(ValueError, match=">= 1"):
        conv_nearest_upsampled(x, torch.randn(3, 2, 3, 3), (2, 0))
    with pytest.raises(TypeError, match="floating"):
        conv_nearest_upsampled(x.long(), torch.randn(3, 2, 3, 3), (2, 2))


def test_upsample_nearest_and_memory_format_of() -> None:
    from mp_layers.upsample import memory_format_of, upsample_nearest

    x = torch.randn(1, 2, 3, 4, 5)
    assert upsample_nearest(x, (1, 1, 1)) is x
    expected = x.repeat_interleave(2, dim=3).repeat_interleave(3, dim=4)
    torch.testing.assert_close(upsample_nearest(x, (1, 2, 3)), expected)
    assert memory_format_of(x) == torch.contiguous_format
    assert memory_format_of(x.contiguous(memory_format=torch.channels_last_3d)) == (
        torch.channels_last_3d
    )
    image = torch.randn(1, 2, 3, 4).contiguous(memory_format=torch.channels_last)
    assert memory_format_of(image) == torch.channels_last
