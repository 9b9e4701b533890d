"""MPAttention, MPFeedForward and MPTransformer on token sequences (b, n, d)."""

from __future__ import annotations

import math

import pytest
import torch
from einops import rearrange

from mp_layers import MPAttention, MPFeedForward, MPTransformer, mp_sum, pixel_norm

from .conftest import rms


def naive_attention(module: MPAttention, x: torch.Tensor) -> torch.Tensor:
    """The same block written out with an explicit softmax, as the reference computes it."""
    q, k, v = rearrange(module.to_qkv(x), "b n (qkv h d) -> qkv b h n d", qkv=3, h=module.heads)
    mem_k, mem_v = (m.expand(x.shape[0], -1, -1, -1) for m in module.mem_kv)
    k, v = torch.cat((mem_k, k), dim=-2), torch.cat((mem_v, v), dim=-2)
    q, k, v = (pixel_norm(t, dim=-1) for t in (q, k, v))
    weights = (q @ k.transpose(-1, -2) / math.sqrt(module.dim_head)).softmax(dim=-1)
    out = rearrange(pixel_norm(weights @ v, dim=-1), "b h n d -> b n (h d)")
    return mp_sum(x, module.to_out(out), module.mp_add_t)


@pytest.mark.parametrize(("dim", "heads", "dim_head"), [(128, 4, 32), (8, 2, 64), (96, 3, 16)])
def test_attention_has_unit_rms(dim: int, heads: int, dim_head: int) -> None:
    module = MPAttention(dim, heads=heads, dim_head=dim_head).eval()
    with torch.no_grad():
        out = module(torch.randn(8, 256, dim))
    assert out.shape == (8, 256, dim)
    assert rms(out) == pytest.approx(1.0, rel=0.05)


def test_attention_with_peaked_attention_keeps_unit_rms() -> None:
    module = MPAttention(64, heads=2, dim_head=32).eval()
    x = torch.randn(4, 16, 64).repeat(1, 8, 1)  # repeated tokens: sharp, repeated matches
    with torch.no_grad():
        assert rms(module(x)) == pytest.approx(1.0, rel=0.05)


def test_heads_times_dim_head_may_differ_from_dim() -> None:
    # The reference crashed whenever heads * dim_head != dim (e.g. dim=8, dim_head=64).
    module = MPAttention(8, heads=2, dim_head=64)
    assert module(torch.randn(2, 10, 8)).shape == (2, 10, 8)


def test_sdpa_matches_the_explicit_softmax() -> None:
    module = MPAttention(48, heads=3, dim_head=16, num_mem_kv=2).eval()
    x = torch.randn(2, 33, 48)
    with torch.no_grad():
        torch.testing.assert_close(module(x), naive_attention(module, x), rtol=1e-4, atol=1e-5)


def test_memory_key_values_are_attended_and_learned() -> None:
    module = MPAttention(16, heads=2, dim_head=8, num_mem_kv=4)
    module(torch.randn(2, 5, 16)).sum().backward()
    assert module.mem_kv.grad is not None
    assert module.mem_kv.grad.abs().sum() > 0
    assert MPAttention(16, heads=2, dim_head=8, num_mem_kv=0)(torch.randn(1, 3, 16)).shape == (
        1,
        3,
        16,
    )


def test_attention_residual_balance() -> None:
    module = MPAttention(16, heads=2, dim_head=8, mp_add_t=0.0).eval()
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(module(x), x)


def test_attention_is_permutation_equivariant() -> None:
    module = MPAttention(32, heads=2, dim_head=16).eval()
    x = torch.randn(2, 12, 32)
    perm = torch.randperm(12)
    torch.testing.assert_close(module(x)[:, perm], module(x[:, perm]), rtol=1e-4, atol=1e-5)


def test_attention_dropout_only_in_training() -> None:
    module = MPAttention(16, heads=2, dim_head=8, dropout=0.5)
    x = torch.randn(2, 7, 16)
    module.eval()
    torch.testing.assert_close(module(x), module(x))
    module.train()
    assert not torch.allclose(module(x), module(x))


def test_attention_under_autocast() -> None:
    module = MPAttention(32, heads=2, dim_head=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(torch.randn(2, 9, 32))
    assert out.shape == (2, 9, 32)
    assert torch.isfinite(out.float()).all()


def test_feed_forward_has_unit_rms() -> None:
    module = MPFeedForward(128).eval()
    with torch.no_grad():
        assert rms(module(torch.randn(16, 128, 128))) == pytest.approx(1.0, rel=0.05)


def test_transformer_has_unit_rms_and_depth() -> None:
    module = MPTransformer(64, depth=3, heads=2, dim_head=32).eval()
    assert len(module.layers) == 3
    with torch.no_grad():
        assert rms(module(torch.randn(8, 128, 64))) == pytest.approx(1.0, rel=0.05)


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match=r"heads: expected an int >= 1, got 0"):
        MPAttention(16, heads=0)
    with pytest.raises(ValueError, match=r"dim_head: expected an int >= 1, got 0"):
        MPAttention(16, dim_head=0)
    with pytest.raises(ValueError, match=r"mp_add_t: expected a float in \[0.0, 1.0\], got 1.2"):
        MPAttention(16, mp_add_t=1.2)
    with pytest.raises(ValueError, match=r"dropout: expected a float in \[0.0, 1.0\], got -0.1"):
        MPAttention(16, dropout=-0.1)
    with pytest.raises(ValueError, match=r"mult: expected dim \* mult >= 1"):
        MPFeedForward(4, mult=0.1)
    with pytest.raises(ValueError, match=r"depth: expected an int >= 1, got 0"):
        MPTransformer(16, depth=0)


def test_forward_errors() -> None:
    with pytest.raises(ValueError, match=r"expected tokens of shape \(b, n, 16\), got \(2, 16\)"):
        MPAttention(16)(torch.randn(2, 16))
    with pytest.raises(ValueError, match=r"expected tokens of shape \(b, n, 16\), got \(2, 3, 8\)"):
        MPFeedForward(16)(torch.randn(2, 3, 8))


def test_rotate_positions_the_tokens_and_keeps_the_identity_rotation_exact() -> None:
    torch.manual_seed(0)
    module = MPAttention(16, heads=2, dim_head=8, num_mem_kv=2).eval()
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(module(x, rotate=lambda t: t), module(x))
    flip = torch.tensor([0, 2, 1, 3, 4])

    def rotate(t: torch.Tensor) -> torch.Tensor:  # a position-dependent rotation of each pair
        angle = torch.arange(t.shape[-2], dtype=t.dtype)[:, None] * 0.7
        even, odd = t[..., 0::2], t[..., 1::2]
        return torch.stack(
            (even * angle.cos() - odd * angle.sin(), even * angle.sin() + odd * angle.cos()), -1
        ).flatten(-2)

    # without positions, attention is permutation-equivariant; with them it is not
    torch.testing.assert_close(module(x[:, flip])[:, flip], module(x))
    assert not torch.allclose(module(x[:, flip], rotate=rotate)[:, flip], module(x, rotate=rotate))
