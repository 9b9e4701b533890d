"""The small modules: MPSiLU, Gain, MPSum, MPCat, PixelNorm, MPFourierEmbedding."""

from __future__ import annotations

import pytest
import torch

from mp_layers import (
    Gain,
    MPCat,
    MPFourierEmbedding,
    MPSiLU,
    MPSum,
    PixelNorm,
    mp_cat,
    mp_silu,
    mp_sum,
    pixel_norm,
)

from .conftest import rms


def test_modules_wrap_the_functions() -> None:
    a, b = torch.randn(4, 6, 5), torch.randn(4, 6, 5)
    torch.testing.assert_close(MPSiLU()(a), mp_silu(a))
    torch.testing.assert_close(MPSum(0.3)(a, b), mp_sum(a, b, 0.3))
    torch.testing.assert_close(MPCat(0.2, dim=-1)(a, b), mp_cat(a, b, dim=-1, t=0.2))
    torch.testing.assert_close(PixelNorm(dim=1)(a), pixel_norm(a, dim=1))


def test_gain_starts_at_zero_and_learns() -> None:
    gain = Gain()
    x = torch.randn(3, 4)
    assert torch.equal(gain(x), torch.zeros(3, 4))
    gain(x).pow(2).sum().backward()
    (gain(x) - x).pow(2).sum().backward()
    assert gain.gain.grad is not None
    assert gain.gain.grad.item() != 0
    assert torch.equal(Gain(init=2.0)(x), 2 * x)


def test_fourier_embedding_has_unit_rms_for_every_input() -> None:
    embed = MPFourierEmbedding(16)
    out = embed(torch.randn(1000) * 3)
    assert out.shape == (1000, 16)
    row_rms = out.pow(2).mean(dim=-1).sqrt()
    torch.testing.assert_close(row_rms, torch.ones(1000))
    assert rms(out) == pytest.approx(1.0, rel=0.05)


def test_fourier_embedding_is_a_saved_buffer_not_a_parameter() -> None:
    embed = MPFourierEmbedding(8)
    assert list(embed.parameters()) == []
    assert "freqs" in embed.state_dict()
    other = MPFourierEmbedding(8)
    other.load_state_dict(embed.state_dict())
    x = torch.randn(5)
    torch.testing.assert_close(other(x), embed(x))


def test_fourier_embedding_distinguishes_noise_levels() -> None:
    embed = MPFourierEmbedding(32)
    out = embed(torch.tensor([-1.0, 0.0, 0.5, 1.0]))
    assert torch.cdist(out, out).fill_diagonal_(1.0).min() > 0.1


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match=r"dim: expected an even number .*got 7"):
        MPFourierEmbedding(7)
    with pytest.raises(ValueError, match=r"t: expected a float in \[0.0, 1.0\], got -0.5"):
        MPSum(-0.5)
    with pytest.raises(ValueError, match=r"t: expected a float in \[0.0, 1.0\], got 2.0"):
        MPCat(2.0)
    with pytest.raises(ValueError, match="eps: expected a float > 0"):
        PixelNorm(eps=0)
    with pytest.raises(TypeError, match="dim: expected an int, got bool"):  # beartype admits a bool
        PixelNorm(dim=True)
    with pytest.raises(TypeError, match=r"parameter dim=1\.5 violates .*int"):
        PixelNorm(dim=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"expected x of shape \(b,\), got \(2, 3\)"):
        MPFourierEmbedding(4)(torch.randn(2, 3))


def test_gated_mp_sum_is_an_exact_identity_at_init_and_learns_its_balance() -> None:
    from mp_layers import GatedMPSum

    torch.manual_seed(0)
    a, b = torch.randn(4, 64, 32), torch.randn(4, 64, 32)
    gate = GatedMPSum(0.3)
    assert torch.equal(gate(a, b), a)
    out = gate(a, b)
    out.pow(2).mean().backward()
    assert gate.gain.grad is not None
    assert gate.gain.grad != 0
    with torch.no_grad():
        gate.gain.fill_(1.0)
    torch.testing.assert_close(gate(a, b), mp_sum(a, b, 0.3))
    with torch.no_grad():
        gate.gain.fill_(-2.7)  # any balance, negative included: still unit variance
    assert gate(a, b).std().item() == pytest.approx(1.0, abs=0.03)


def test_gated_mp_sum_rejects_a_balance_without_skip() -> None:
    from mp_layers import GatedMPSum

    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        GatedMPSum(1.0)
    with pytest.raises(ValueError, match="t"):
        GatedMPSum(1.5)
