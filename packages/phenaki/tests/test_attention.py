"""The attention stack: each block against a direct (slow) computation, causality, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from phenaki.attention import (
    PEG,
    AlibiPositionalBias,
    Attention,
    ContinuousPositionBias,
    FeedForward,
    LayerNorm,
    Transformer,
    alibi_slopes,
)


def test_layernorm_has_a_gain_and_no_bias() -> None:
    norm = LayerNorm(6)
    assert [name for name, _ in norm.named_parameters()] == ["gamma"]
    assert list(norm.state_dict()) == ["gamma"]
    with torch.no_grad():
        norm.gamma.fill_(2.0)
    x = torch.randn(3, 6) * 5 + 1
    y = norm(x)
    torch.testing.assert_close(y.mean(-1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(-1, unbiased=False), torch.full((3,), 2.0), atol=1e-3, rtol=0)


def test_feedforward_is_geglu_with_two_thirds_width() -> None:
    ff = FeedForward(12, mult=4)
    inner = int(4 * 2 / 3 * 12)
    assert ff[1].weight.shape == (2 * inner, 12)
    assert ff[4].weight.shape == (12, inner)
    x = torch.randn(2, 5, 12)
    hidden, gate = ff[1](ff[0](x)).chunk(2, dim=-1)
    torch.testing.assert_close(ff(x), ff[4](hidden * F.gelu(gate)))


def test_peg_gives_the_same_result_in_both_token_layouts() -> None:
    """Defect P1: tokens laid out one sequence per location must be read as such."""
    b, t, h, w, d = 2, 4, 3, 5, 6
    peg = PEG(d, causal=True)
    grid = torch.randn(b, t, h, w, d)
    expected = peg(grid)
    per_location = peg(rearrange(grid, "b t h w d -> (b h w) t d"), (b, t, h, w))
    whole = peg(rearrange(grid, "b t h w d -> b (t h w) d"), (b, t, h, w))
    torch.testing.assert_close(
        rearrange(per_location, "(b h w) t d -> b t h w d", b=b, h=h), expected
    )
    torch.testing.assert_close(rearrange(whole, "b (t h w) d -> b t h w d", t=t, h=h), expected)
    # the reference's reshape of the per-location layout reads a different grid
    scrambled = rearrange(grid, "b t h w d -> (b h w) t d").reshape(b, t, h, w, d)
    assert not torch.allclose(peg(scrambled), expected)


def test_causal_peg_never_sees_later_frames() -> None:
    peg = PEG(4, causal=True)
    grid = torch.randn(1, 6, 3, 3, 4)
    changed = grid.clone()
    changed[:, 3:] += torch.randn_like(changed[:, 3:])
    torch.testing.assert_close(peg(changed)[:, :3], peg(grid)[:, :3])
    assert not torch.allclose(peg(changed)[:, 3:], peg(grid)[:, 3:])
    symmetric = PEG(4, causal=False)
    symmetric.load_state_dict(peg.state_dict())
    assert not torch.allclose(symmetric(changed)[:, 2], symmetric(grid)[:, 2])


def test_peg_errors() -> None:
    peg = PEG(4)
    with pytest.raises(ValueError, match="video_shape"):
        peg(torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match=r"expected tokens of shape \(2, 8, d\) or \(8, 2, d\)"):
        peg(torch.randn(2, 9, 4), (2, 2, 2, 2))


def test_alibi_slopes_and_bias() -> None:
    assert alibi_slopes(8) == pytest.approx([2 ** -(i + 1) for i in range(8)])
    assert alibi_slopes(4) == pytest.approx([4 ** -(i + 1) for i in range(4)])
    six = alibi_slopes(6)
    assert six[:4] == pytest.approx(alibi_slopes(4))
    assert six[4:] == pytest.approx(alibi_slopes(8)[0::2][:2])
    bias = AlibiPositionalBias(4)(3, 5)
    assert bias.shape == (4, 3, 5)
    # the 3 queries are the last 3 of 5 positions
    assert bias[0, 0].tolist() == pytest.approx([-2 / 4, -1 / 4, 0, -1 / 4, -2 / 4])


def _naive_cpb(cpb: ContinuousPositionBias, *dims: int) -> torch.Tensor:
    """The reference computation: the MLP over all n x n relative positions."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(d) for d in dims], indexing="ij"))
    grid = rearrange(grid, "c ... -> (...) c")
    rel = (grid[:, None] - grid[None, :]).float()
    rel = torch.sign(rel) * torch.log(rel.abs() + 1)
    for layer in cpb.net:
        rel = layer(rel)
    return rearrange(rel, "i j h -> h i j")


@pytest.mark.parametrize("dims", [(3, 4), (2, 3, 2)])
def test_continuous_position_bias_matches_all_pairs_computation(dims: tuple[int, ...]) -> None:
    cpb = ContinuousPositionBias(dim=16, heads=3, num_dims=len(dims))
    n = math.prod(dims)
    out = cpb(*dims)
    assert out.shape == (3, n, n)
    torch.testing.assert_close(out, _naive_cpb(cpb, *dims), atol=1e-5, rtol=1e-5)
    if len(dims) == 2:  # another shape after the cache was filled
        torch.testing.assert_close(cpb(5, 2), _naive_cpb(cpb, 5, 2), atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert all(p.grad is not None for p in cpb.parameters())


def test_continuous_position_bias_errors() -> None:
    with pytest.raises(ValueError, match="expected 2 grid dimensions"):
        ContinuousPositionBias(dim=8, heads=2)(3, 4, 5)
    with pytest.raises(TypeError):
        ContinuousPositionBias(dim="8", heads=2)  # type: ignore[arg-type]


def _naive_attention(
    attn: Attention,
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    context: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    h, nulls = attn.heads, attn.num_null_kv
    xn = attn.norm(x)
    kv = xn if context is None else attn.context_norm(context)
    q = rearrange(attn.to_q(xn), "b n (h d) -> b h n d", h=h)
    k, v = (rearrange(t, "b n (h d) -> b h n d", h=h) for t in attn.to_kv(kv).chunk(2, -1))
    if attn.null_kv is not None:
        nk, nv = attn.null_kv[:, 0::2], attn.null_kv[:, 1::2]
        k = torch.cat((nk.expand(x.shape[0], -1, -1, -1), k), dim=2)
        v = torch.cat((nv.expand(x.shape[0], -1, -1, -1), v), dim=2)
    q = F.normalize(q, dim=-1) * attn.q_scale
    k = F.normalize(k, dim=-1) * attn.k_scale
    sim = torch.einsum("bhid,bhjd->bhij", q, k) * attn.scale
    i, j = sim.shape[-2:]
    if bias is not None:
        sim = sim + F.pad(bias, (nulls, 0))
    if mask is not None:
        keep = F.pad(mask, (nulls, 0), value=True)[:, None, None, :]
        sim = sim.masked_fill(~keep, -torch.finfo(sim.dtype).max)
    if attn.causal:
        distance = (torch.arange(j)[None, :] - torch.arange(j - i, j)[:, None]).abs()
        slopes = torch.tensor(alibi_slopes(h))[:, None, None]
        sim = sim - distance * slopes
        sim = sim.masked_fill(torch.ones(i, j).triu(j - i + 1).bool(), -torch.finfo(sim.dtype).max)
    out = torch.einsum("bhij,bhjd->bhid", sim.softmax(-1), v)
    return attn.to_out(rearrange(out, "b h n d -> b n (h d)"))


def _perturbed(attn: Attention) -> Attention:
    with torch.no_grad():
        attn.q_scale.uniform_(0.5, 1.5)
        attn.k_scale.uniform_(0.5, 1.5)
        attn.norm.gamma.uniform_(0.5, 1.5)
    return attn


def test_attention_matches_direct_computation() -> None:
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True, True, False, True, False]])
    bias = torch.randn(4, 5, 5)
    attn = _perturbed(Attention(16, dim_head=8, heads=4, num_null_kv=2))
    torch.testing.assert_close(
        attn(x, mask=mask, attn_bias=bias), _naive_attention(attn, x, mask, bias=bias)
    )
    causal = _perturbed(Attention(16, dim_head=8, heads=4, causal=True))
    torch.testing.assert_close(causal(x), _naive_attention(causal, x))
    torch.testing.assert_close(causal(x, attn_bias=bias), _naive_attention(causal, x, bias=bias))


def test_cross_attention_with_null_kv_and_masked_context() -> None:
    attn = _perturbed(Attention(16, dim_context=10, dim_head=8, heads=2, num_null_kv=2))
    x, context = torch.randn(2, 3, 16), torch.randn(2, 4, 10)
    mask = torch.tensor([[True, True, False, False], [False] * 4])
    out = attn(x, mask=mask, context=context)
    torch.testing.assert_close(out, _naive_attention(attn, x, mask, context))
    assert torch.isfinite(out).all()
    # a fully masked context attends to the null key/values only: the context is irrelevant
    torch.testing.assert_close(out[1], attn(x, mask=mask, context=torch.randn(2, 4, 10))[1])


def test_attention_errors() -> None:
    attn = Attention(8, dim_head=4, heads=2)
    with pytest.raises(ValueError, match=r"key mask of shape \(2, 3\)"):
        attn(torch.randn(2, 3, 8), mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="built for self-attention"):
        attn(torch.randn(2, 3, 8), context=torch.randn(2, 4, 8))
    assert [
        name for name, _ in attn.named_parameters() if "null" in name or "context" in name
    ] == []
    with pytest.raises(ValueError, match="num_null_kv >= 0"):
        Attention(8, num_null_kv=-1)
    with pytest.raises(TypeError):
        Attention(8.0)  # type: ignore[arg-type]


def test_causal_transformer_with_peg_is_causal() -> None:
    b, t, h, w, d = 2, 5, 2, 3, 16
    net = Transformer(d, depth=2, dim_head=8, heads=2, causal=True, peg=True, peg_causal=True)
    x = torch.randn(b * h * w, t, d)
    changed = x.clone()
    changed[:, 3:] += 1.0
    out, out_changed = net(x, (b, t, h, w)), net(changed, (b, t, h, w))
    torch.testing.assert_close(out_changed[:, :3], out[:, :3])
    assert (out_changed[:, 3:] - out[:, 3:]).abs().max() > 1e-3


def test_transformer_cross_attention_only_with_context() -> None:
    net = Transformer(16, depth=1, dim_context=12, has_cross_attn=True, dim_head=8, heads=2)
    x = torch.randn(2, 6, 16)
    alone = net(x)
    with_context = net(x, context=torch.randn(2, 3, 12))
    assert alone.shape == with_context.shape == (2, 6, 16)
    assert not torch.allclose(alone, with_context)
    assert net.layers[0][2].num_null_kv == 2
    with pytest.raises(ValueError, match="depth >= 1"):
        Transformer(16, depth=0)


def test_transformer_under_bf16_autocast() -> None:
    net = Transformer(16, depth=1, dim_head=8, heads=2, causal=True, peg=True, peg_causal=True)
    x = torch.randn(6, 4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, (1, 4, 2, 3), attn_bias=torch.randn(2, 4, 4))
    assert torch.isfinite(out.float()).all()
