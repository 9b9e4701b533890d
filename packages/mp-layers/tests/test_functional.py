"""The magnitude-preserving functions: values, magnitudes, dtypes, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mp_layers import mp_cat, mp_silu, mp_sum, normalize, pixel_norm

from .conftest import rms

SIZE = (64, 256, 16)


def test_mp_silu_has_unit_rms() -> None:
    assert rms(mp_silu(torch.randn(SIZE))) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_mp_sum_has_unit_rms(t: float) -> None:
    assert rms(mp_sum(torch.randn(SIZE), torch.randn(SIZE), t)) == pytest.approx(1.0, rel=0.05)


def test_mp_sum_t_is_the_weight_of_the_second_argument() -> None:
    skip, branch = torch.randn(8, 4), torch.randn(8, 4)
    out = mp_sum(skip, branch, 0.3)
    expected = (0.7 * skip + 0.3 * branch) / math.sqrt(0.7**2 + 0.3**2)
    torch.testing.assert_close(out, expected)
    # The reference MPAdd(t)(branch, skip) gave the branch weight 1 - t = 0.7: not ours.
    reversed_balance = (0.3 * skip + 0.7 * branch) / math.sqrt(0.58)
    assert not torch.allclose(out, reversed_balance)
    torch.testing.assert_close(mp_sum(skip, branch, 1.0), branch)
    torch.testing.assert_close(mp_sum(skip, branch, 0.0), skip)


@pytest.mark.parametrize(
    ("na", "nb", "t"), [(16, 16, 0.5), (64, 8, 0.5), (8, 96, 0.3), (32, 32, 0.9)]
)
def test_mp_cat_has_unit_rms_and_follows_eq_103(na: int, nb: int, t: float) -> None:
    a, b = torch.randn(32, na, 8, 8), torch.randn(32, nb, 8, 8)
    out = mp_cat(a, b, dim=1, t=t)
    assert out.shape == (32, na + nb, 8, 8)
    assert rms(out) == pytest.approx(1.0, rel=0.05)
    scale = math.sqrt((na + nb) / ((1 - t) ** 2 + t**2))
    torch.testing.assert_close(out[:, :na], a * scale * (1 - t) / math.sqrt(na))
    torch.testing.assert_close(out[:, na:], b * scale * t / math.sqrt(nb))


def test_mp_cat_along_last_dim() -> None:
    out = mp_cat(torch.randn(4, 5, 3), torch.randn(4, 5, 7), dim=-1)
    assert out.shape == (4, 5, 10)


def test_pixel_norm_gives_unit_rms_at_every_position() -> None:
    x = torch.randn(4, 32, 5, 6) * torch.rand(4, 1, 5, 6) * 10
    out = pixel_norm(x, dim=1)
    per_position = out.pow(2).mean(dim=1).sqrt()
    torch.testing.assert_close(per_position, torch.ones_like(per_position), rtol=1e-3, atol=1e-3)
    assert rms(pixel_norm(torch.randn(SIZE), dim=-1)) == pytest.approx(1.0, rel=0.05)


def test_normalize_defaults_to_all_but_the_first_dim() -> None:
    weight = torch.randn(8, 3, 3, 3) * 5
    out = normalize(weight)
    norms = out.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((8,), math.sqrt(27.0)), rtol=1e-3, atol=1e-3)


def test_normalize_computes_in_float32_and_keeps_the_dtype() -> None:
    x = (torch.randn(4, 4096) * 100).to(torch.bfloat16)
    out = normalize(x)
    assert out.dtype == torch.bfloat16
    exact = normalize(x.float())
    torch.testing.assert_close(out.float(), exact, rtol=1e-2, atol=1e-2)
    # A bf16 sum of squares would overflow its 8-bit mantissa budget long before 4096 terms.
    assert torch.isfinite(out.float()).all()


def test_normalize_eps_guards_zero() -> None:
    out = normalize(torch.zeros(2, 5))
    assert torch.equal(out, torch.zeros(2, 5))


@pytest.mark.parametrize(
    "function",
    [
        lambda x, y: normalize(x),
        lambda x, y: normalize(x, dim=(1, 2)),
        lambda x, y: pixel_norm(x, dim=1),
        lambda x, y: mp_silu(x),
        lambda x, y: mp_sum(x, y, 0.3),
        lambda x, y: mp_cat(x, y, dim=1, t=0.4),
    ],
    ids=["normalize", "normalize-dims", "pixel_norm", "mp_silu", "mp_sum", "mp_cat"],
)
def test_gradcheck_in_double_precision(function) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(function, (x, y))


@pytest.mark.parametrize("dim", [None, 1, -1, (0, 2)])
def test_normalize_second_order_gradients(dim) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: normalize(t, dim=dim), (x,))


def test_scaled_normalize_is_normalize_times_gain_with_first_and_second_gradients() -> None:
    from mp_layers.functional import _scaled_normalize

    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(_scaled_normalize(x, (1, 2), 1e-4, 0.3), normalize(x) * 0.3)
    assert torch.autograd.gradcheck(lambda t: _scaled_normalize(t, (1, 2), 1e-4, 0.3), (x,))
    assert torch.autograd.gradgradcheck(lambda t: _scaled_normalize(t, (1,), 1e-4, 0.3), (x,))


def test_normalize_gradient_matches_autograd_of_the_formula() -> None:
    x = (torch.randn(6, 7, 8) * 3).requires_grad_()
    grad = torch.randn(6, 7, 8)
    for dim in (1, -1, (1, 2)):
        norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
        count = math.prod(x.shape[d] for d in ((dim,) if isinstance(dim, int) else dim))
        expected = torch.autograd.grad(x / (1e-4 + norm / math.sqrt(count)), x, grad)[0]
        actual = torch.autograd.grad(normalize(x, dim=dim), x, grad)[0]
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-6)


def test_normalize_gradient_of_zero_input_is_finite() -> None:
    x = torch.zeros(2, 5, requires_grad=True)
    normalize(x).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()


def test_functions_match_plain_torch() -> None:
    x = torch.randn(10, 20)
    torch.testing.assert_close(mp_silu(x), F.silu(x) / 0.596)


@pytest.mark.parametrize("t", [-0.1, 1.5, float("nan")])
def test_balance_outside_unit_interval_is_a_value_error(t: float) -> None:
    with pytest.raises(ValueError, match=r"t: expected a (finite )?float"):
        mp_sum(torch.randn(2), torch.randn(2), t)
    with pytest.raises(ValueError, match=r"t: expected"):
        mp_cat(torch.randn(2, 2), torch.randn(2, 2), t=t)


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        normalize(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"parameter x=\[1\.0, 2\.0\] violates .*torch\.Tensor"):
        mp_silu([1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        normalize(torch.randn(5))
    with pytest.raises(ValueError, match="expected dims"):
        pixel_norm(torch.randn(2, 3), dim=4)
    with pytest.raises(ValueError, match="eps"):
        normalize(torch.randn(2, 3), eps=0.0)
    with pytest.raises(TypeError, match=r"parameter t='0\.3' violates .*float"):
        mp_sum(torch.randn(2), torch.randn(2), "0.3")  # type: ignore[arg-type]


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keeps_each_element_with_probability_1_minus_p_and_rescales(p: float) -> None:
    from mp_layers import Dropout, dropout

    x = torch.ones(400_000, requires_grad=True)
    torch.manual_seed(0)
    y = dropout(x, p)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=0.005)
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    y.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, y.detach())  # the gradient is the same scaled mask
    torch.manual_seed(0)
    torch.testing.assert_close(Dropout(p)(x), y)  # the module is the function, seeded alike
    assert dropout(x, p, training=False) is x
    assert Dropout(p).eval()(x) is x
    assert dropout(x, 0.0) is x
    assert not dropout(x, 1.0).any()


def test_dropout_rejects_probabilities_outside_0_1() -> None:
    from mp_layers import Dropout, dropout

    with pytest.raises(ValueError, match="p: expected"):
        dropout(torch.ones(3), 1.5)
    with pytest.raises(ValueError, match="p: expected"):
        Dropout(-0.1)
