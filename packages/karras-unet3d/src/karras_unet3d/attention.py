"""Attention and transformer blocks on 3-D feature maps `(b, c, t, h, w)`.

Thin wrappers over the token modules of mp-layers (`MPAttention`, `MPFeedForward`,
`MPTransformer`): each rearranges the feature map into token sequences, runs the token module
(magnitude-preserving, residual included, SDPA attention) and rearranges back.
"""

from __future__ import annotations

from typing import Literal, cast

from einops import rearrange
from torch import Tensor, nn

from mp_layers import MPAttention, MPTransformer
from mp_layers import MPFeedForward as MPTokenFeedForward
from mp_layers.typecheck import typechecked
from mp_layers.validation import check_float, check_int, check_tensor

__all__ = ["MPFeedForward", "MPImageTransformer", "SpaceTimeAttention"]

AttentionAxes = Literal["full", "space", "time"]


def _check_video(module: nn.Module, x: object, dim: int) -> Tensor:
    x = check_tensor("x", x)
    if x.ndim != 5 or x.shape[1] != dim:
        raise ValueError(
            f"{type(module).__name__}: expected a feature map of shape (b, {dim}, t, h, w), "
            f"got {tuple(x.shape)}"
        )
    return x


def _attend(attention: MPAttention, x: Tensor, axes: AttentionAxes) -> Tensor:
    """Run token attention over `axes` of a `(b, c, t, h, w)` map; same shape out."""
    b, _, t, h, w = x.shape
    if axes == "space":  # every frame on its own: tokens are the h*w positions
        tokens = rearrange(x, "b c t h w -> (b t) (h w) c")
        return rearrange(attention(tokens), "(b t) (h w) c -> b c t h w", b=b, h=h)
    if axes == "time":  # every position on its own: tokens are the t frames
        tokens = rearrange(x, "b c t h w -> (b h w) t c")
        return rearrange(attention(tokens), "(b h w) t c -> b c t h w", b=b, h=h, w=w)
    tokens = rearrange(x, "b c t h w -> b (t h w) c")
    return rearrange(attention(tokens), "b (t h w) c -> b c t h w", t=t, h=h)


class SpaceTimeAttention(nn.Module):
    """Magnitude-preserving self-attention on a feature map: `(b, dim, t, h, w) -> same`.

    Full space-time attention over all `t*h*w` positions, or, with `factorize=True`, spatial
    attention within every frame followed by temporal attention at every position (two
    `MPAttention` layers, each with its own residual `mp_sum(x, attn(x), mp_add_t)`).
    `heads * dim_head` may differ from `dim`.
    """

    @typechecked
    def __init__(
        self,
        dim: int,
        *,
        heads: int,
        dim_head: int,
        num_mem_kv: int = 4,
        mp_add_t: float = 0.3,
        factorize: bool = False,
    ) -> None:
        super().__init__()
        self.dim = check_int("dim", dim)
        self.factorize = factorize
        axes: tuple[AttentionAxes, ...] = ("space", "time") if factorize else ("full",)
        self.axes = axes
        self.layers = nn.ModuleList(
            MPAttention(
                dim, heads=heads, dim_head=dim_head, num_mem_kv=num_mem_kv, mp_add_t=mp_add_t
            )
            for _ in axes
        )

    def forward(self, x: Tensor) -> Tensor:
        x = _check_video(self, x, self.dim)
        for attention, axes in zip(self.layers, self.axes, strict=True):
            x = _attend(cast(MPAttention, attention), x, axes)
        return x

    def extra_repr(self) -> str:
        return f"axes={self.axes}"


class MPFeedForward(nn.Module):
    """Magnitude-preserving feed-forward on a feature map, with residual: `(b, dim, t, h, w) -> same`.

    Per position: `mp_sum(x, W2 mp_silu(W1 pixel_norm(x)), mp_add_t)` (EDM2 eqs. 30, 81, 88), with
    `W1: dim -> mult*dim` and `W2` forced-weight-normalised (the 1x1x1 convolutions of the
    reference, as `mp_layers.MPFeedForward` on tokens).
    """

    @typechecked
    def __init__(self, *, dim: int, mult: float = 4, mp_add_t: float = 0.3) -> None:
        super().__init__()
        self.dim = check_int("dim", dim)
        self.net = MPTokenFeedForward(dim, mult=mult, mp_add_t=mp_add_t)

    def forward(self, x: Tensor) -> Tensor:
        x = _check_video(self, x, self.dim)
        _, _, t, h, _ = x.shape
        tokens = self.net(rearrange(x, "b c t h w -> b (t h w) c"))
        return rearrange(tokens, "b (t h w) c -> b c t h w", t=t, h=h)


class MPImageTransformer(nn.Module):
    """`depth` layers of MP attention + MP feed-forward over all positions of a feature map.

    `(b, dim, t, h, w) -> (b, dim, t, h, w)`; every residual is `mp_sum(x, f(x), residual_mp_add_t)`.
    Attention is full space-time attention through SDPA (no `attn_flash` switch is needed).
    """

    @typechecked
    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        dim_head: int = 64,
        heads: int = 8,
        num_mem_kv: int = 4,
        ff_mult: float = 4,
        residual_mp_add_t: float = 0.3,
    ) -> None:
        super().__init__()
        self.dim = check_int("dim", dim)
        check_float("residual_mp_add_t", residual_mp_add_t, low=0.0, high=1.0)
        self.transformer = MPTransformer(
            dim,
            depth=depth,
            heads=heads,
            dim_head=dim_head,
            num_mem_kv=num_mem_kv,
            ff_mult=ff_mult,
            mp_add_t=residual_mp_add_t,
        )

    def forward(self, x: Tensor) -> Tensor:
        x = _check_video(self, x, self.dim)
        _, _, t, h, _ = x.shape
        tokens = self.transformer(rearrange(x, "b c t h w -> b (t h w) c"))
        return rearrange(tokens, "b (t h w) c -> b c t h w", t=t, h=h)
