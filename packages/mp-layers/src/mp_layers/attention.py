"""Magnitude-preserving cosine attention, feed-forward and transformer on token sequences `(b, n, d)`."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from mp_layers.functional import mp_silu, mp_sum, pixel_norm
from mp_layers.typecheck import typechecked
from mp_layers.validation import check_balance, check_float, check_floating, check_int
from mp_layers.weights import MPLinear

__all__ = [
    "SHORT_SEQUENCE",
    "MPAttention",
    "MPFeedForward",
    "MPTransformer",
    "MPTransformerLayer",
    "attend",
]

SHORT_SEQUENCE = 64
"""`attend` computes attention over up to this many keys by batched matrix products, beyond by SDPA."""


@typechecked
def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias: Tensor | None = None,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> Tensor:
    """`softmax(scale · q kᵀ + bias) v` for `q (..., i, d)`, `k (..., j, d)`, `v (..., j, e)` and an
    additive `bias` broadcastable to `(..., i, j)`; `scale` defaults to `1 / sqrt(d)`.

    Long key sequences go through `scaled_dot_product_attention`. Short ones (temporal attention
    over a few frames: thousands of tiny problems) take one batched product into the bias, a
    softmax and a second product, which on CPU is faster than SDPA's fused kernel (2 cores, 8
    frames x 2048 sequences x 8 heads of 32: 47 ms forward and 82 ms backward fused, about 60 ms
    forward + backward this way; 64 keys x 40 sequences x 4 heads of 32: 1.4 against 1.9 ms
    forward, 2.0 against 2.7 ms forward + backward). The short path is differentiable twice (a gradient penalty
    through it needs no special kernel); dropout always goes through SDPA.
    """
    *lead, i, d = q.shape
    j = k.shape[-2]
    if j > SHORT_SEQUENCE or dropout_p > 0:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale
        )
    n = 1
    for size in lead:
        n *= size
    alpha = d**-0.5 if scale is None else scale
    queries, keys = q.reshape(n, i, d), k.reshape(n, j, d).transpose(1, 2)
    if bias is None:
        logits = torch.bmm(queries, keys).mul_(alpha)
    else:
        logits = torch.baddbmm(
            bias.expand(*lead, i, j).reshape(n, i, j), queries, keys, alpha=alpha
        )
    out = torch.bmm(logits.softmax(dim=-1), v.reshape(n, j, v.shape[-1]))
    return out.view(*lead, i, v.shape[-1])


def _check_tokens(module: nn.Module, x: Tensor, dim: int) -> None:
    check_floating("x", x)
    if x.ndim != 3 or x.shape[-1] != dim:
        raise ValueError(
            f"{type(module).__name__}: expected tokens of shape (b, n, {dim}), got {tuple(x.shape)}"
        )


class MPAttention(nn.Module):
    """Magnitude-preserving multi-head cosine attention with a residual: `(b, n, dim) -> (b, n, dim)`.

    q, k, v come from one `MPLinear(dim, 3 * heads * dim_head)`; `num_mem_kv` learned memory
    key/value pairs per head are prepended to k and v; q, k and v are pixel-normalised per head
    (cosine attention, EDM2 section 2.3), so logits are bounded by `sqrt(dim_head)`. Attention runs
    through `scaled_dot_product_attention` (flash / memory-efficient kernels where available).

    The attention output of each head is pixel-normalised again before the output projection: a
    softmax-weighted average of unit vectors is shorter than a unit vector (much shorter when the
    attention is diffuse), which would shrink the block's output below unit magnitude. The result
    is `mp_sum(x, to_out(out), mp_add_t)`, with `mp_add_t` the weight of the attention branch.
    `heads * dim_head` need not equal `dim`.
    """

    @typechecked
    def __init__(
        self,
        dim: int,
        *,
        heads: int = 4,
        dim_head: int = 64,
        num_mem_kv: int = 4,
        mp_add_t: float = 0.3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = check_int("dim", dim)
        self.heads = check_int("heads", heads)
        self.dim_head = check_int("dim_head", dim_head)
        self.num_mem_kv = check_int("num_mem_kv", num_mem_kv, minimum=0)
        self.mp_add_t = check_balance("mp_add_t", mp_add_t)
        self.dropout = check_float("dropout", dropout, low=0.0, high=1.0)
        hidden = heads * dim_head
        self.to_qkv = MPLinear(dim, 3 * hidden)
        self.to_out = MPLinear(hidden, dim)
        self.mem_kv = nn.Parameter(torch.randn(2, heads, num_mem_kv, dim_head))

    def forward(self, x: Tensor, *, rotate: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """`x (b, n, dim) -> (b, n, dim)`. `rotate`, if given, maps the pixel-normalised queries
        and keys `(b, heads, n, dim_head)` of the sequence (not the memory keys) to rotated ones
        of the same shape and norm, e.g. a rotary position embedding over `n`: logits stay cosine
        similarities, and attention is no longer equivariant to permutations of `n`."""
        _check_tokens(self, x, self.dim)
        qkv = self.to_qkv(x)
        q, k, v = rearrange(qkv, "b n (qkv h d) -> qkv b h n d", qkv=3, h=self.heads)
        q, k, v = (pixel_norm(t, dim=-1) for t in (q, k, v))
        if rotate is not None:
            q, k = rotate(q), rotate(k)
        if self.num_mem_kv:
            mem = pixel_norm(self.mem_kv.to(k.dtype), dim=-1)
            mem_k, mem_v = repeat(mem, "kv h m d -> kv b h m d", b=x.shape[0])
            k, v = torch.cat((mem_k, k), dim=-2), torch.cat((mem_v, v), dim=-2)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0
        )
        out = rearrange(pixel_norm(out, dim=-1), "b h n d -> b n (h d)")
        return mp_sum(x, self.to_out(out), self.mp_add_t)


class MPFeedForward(nn.Module):
    """Magnitude-preserving feed-forward block with a residual: `(b, n, dim) -> (b, n, dim)`.

    `mp_sum(x, W2 mp_silu(W1 pixel_norm(x)), mp_add_t)` with `W1: dim -> mult * dim`,
    `W2: mult * dim -> dim` forced-weight-normalised linear layers.
    """

    @typechecked
    def __init__(self, dim: int, *, mult: float = 4, mp_add_t: float = 0.3) -> None:
        super().__init__()
        self.dim = check_int("dim", dim)
        mult = check_float("mult", mult, low=0.0)
        hidden = int(dim * mult)
        if hidden < 1:
            raise ValueError(f"mult: expected dim * mult >= 1, got {dim} * {mult}")
        self.mp_add_t = check_balance("mp_add_t", mp_add_t)
        self.proj_in = MPLinear(dim, hidden)
        self.proj_out = MPLinear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        _check_tokens(self, x, self.dim)
        branch = self.proj_out(mp_silu(self.proj_in(pixel_norm(x, dim=-1))))
        return mp_sum(x, branch, self.mp_add_t)


class MPTransformerLayer(nn.Module):
    """One `MPAttention` followed by one `MPFeedForward`: `(b, n, dim) -> (b, n, dim)`."""

    @typechecked
    def __init__(self, attention: MPAttention, feed_forward: MPFeedForward) -> None:
        super().__init__()
        self.attention = attention
        self.feed_forward = feed_forward

    def forward(self, x: Tensor) -> Tensor:
        return self.feed_forward(self.attention(x))


class MPTransformer(nn.Module):
    """`depth` pairs of `MPAttention` and `MPFeedForward`: `(b, n, dim) -> (b, n, dim)`."""

    @typechecked
    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        heads: int = 4,
        dim_head: int = 64,
        num_mem_kv: int = 4,
        ff_mult: float = 4,
        mp_add_t: float = 0.3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_int("depth", depth)
        self.layers = nn.ModuleList(
            MPTransformerLayer(
                MPAttention(
                    dim,
                    heads=heads,
                    dim_head=dim_head,
                    num_mem_kv=num_mem_kv,
                    mp_add_t=mp_add_t,
                    dropout=dropout,
                ),
                MPFeedForward(dim, mult=ff_mult, mp_add_t=mp_add_t),
            )
            for _ in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
