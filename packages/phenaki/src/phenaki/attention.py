"""The attention stack shared by the C-ViViT tokenizer and MaskGit.

Tokens are `(batch, n, dim)`. A `Transformer` layer is: [PEG residual] -> self-attention residual
-> [cross-attention residual, only when a context is given] -> GEGLU feed-forward residual; a
bias-free LayerNorm closes the stack. Every attention runs through
`mp_layers.attend` (SDPA, or batched products for short key sequences), with biases and masks
folded into one additive mask.

Two layouts of video tokens reach a `PEG`, told apart by their shape against `video_shape =
(b, t, h, w)`: `(b, t*h*w, d)` (MaskGit, whole videos) and `(b*h*w, t, d)` (C-ViViT's temporal
stack, one sequence per spatial location). The reference reshaped the second one as if it were the
first, which scrambles the axes and lets the "causal" temporal stack see future frames (defect P1).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from mp_layers.attention import attend
from mp_layers.typecheck import typechecked

__all__ = [
    "PEG",
    "AlibiPositionalBias",
    "Attention",
    "ContinuousPositionBias",
    "FeedForward",
    "LayerNorm",
    "Transformer",
]

VideoShape = tuple[int, int, int, int]


def _masked_value(dtype: torch.dtype) -> float:
    """The additive mask value: the most negative finite number (a fully masked row stays finite)."""
    return -torch.finfo(dtype).max


class LayerNorm(nn.Module):
    """LayerNorm with a learned gain and no bias (as in PaLM and recent T5s)."""

    @typechecked
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], self.gamma)


class GEGLU(nn.Module):
    """`value * GELU(gate)` over the two halves of the last dimension (Shazeer 2020)."""

    def forward(self, x: Tensor) -> Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


@typechecked
def FeedForward(dim: int, mult: float = 4, dropout: float = 0.0) -> nn.Sequential:
    """LayerNorm -> Linear(dim, 2*inner) -> GEGLU -> Dropout -> Linear(inner, dim), with
    `inner = int(mult * 2/3 * dim)` (the 2/3 keeps the parameter count of a plain 4x MLP)."""
    inner = int(mult * (2 / 3) * dim)
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, inner * 2, bias=False),
        GEGLU(),
        nn.Dropout(dropout),
        nn.Linear(inner, dim, bias=False),
    )


class PEG(nn.Module):
    """Position-generating depthwise 3x3x3 convolution over the `(t, h, w)` token grid.

    Zero padding of 1 on h and w; on t (1, 1), or (2, 0) when `causal` (a token then sees only its
    own and earlier time steps). `forward(x, video_shape)` takes `(b, t, h, w, d)`, or tokens in
    either layout of the module docstring, and returns the same shape.
    """

    @typechecked
    def __init__(self, dim: int, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal
        self.dsconv = nn.Conv3d(dim, dim, 3, groups=dim)

    def forward(self, x: Tensor, video_shape: VideoShape | None = None) -> Tensor:
        layout = self._check_inputs(x, video_shape)
        if layout == "grid":
            return rearrange(
                self._conv(rearrange(x, "b t h w d -> b d t h w")), "b d t h w -> b t h w d"
            )
        assert video_shape is not None  # checked
        b, t, h, w = video_shape
        if layout == "per-location":  # one sequence per spatial location
            grid = rearrange(x, "(b h w) t d -> b d t h w", b=b, h=h, w=w)
            return rearrange(self._conv(grid), "b d t h w -> (b h w) t d")
        grid = rearrange(x, "b (t h w) d -> b d t h w", t=t, h=h, w=w)  # whole videos
        return rearrange(self._conv(grid), "b d t h w -> b (t h w) d")

    @staticmethod
    def _check_inputs(x: Tensor, video_shape: VideoShape | None) -> str:
        """The layout of `x`: "grid" `(b, t, h, w, d)`, "per-location" `(b h w, t, d)` or
        "videos" `(b, t h w, d)` (the last two need `video_shape`)."""
        if x.ndim == 5:
            return "grid"
        if video_shape is None:
            raise ValueError(f"PEG: tokens of shape {tuple(x.shape)} need video_shape=(b, t, h, w)")
        b, t, h, w = video_shape
        if x.shape[:2] == (b * h * w, t):
            return "per-location"
        if x.shape[:2] == (b, t * h * w):
            return "videos"
        raise ValueError(
            f"PEG: expected tokens of shape ({b}, {t * h * w}, d) or ({b * h * w}, {t}, d) for "
            f"video_shape {video_shape}, got {tuple(x.shape)}"
        )

    def _conv(self, grid: Tensor) -> Tensor:
        frames = (2, 0) if self.causal else (1, 1)
        padded = F.pad(grid, (1, 1, 1, 1, *frames))
        # channels-last: the depthwise kernel is about 1.7x faster (forward + backward) on CPU
        return self.dsconv(padded.contiguous(memory_format=torch.channels_last_3d))


def alibi_slopes(heads: int) -> list[float]:
    """ALiBi's geometric slopes (Press et al. 2022): `2^(-8 i / n)` for n a power of two; otherwise
    those of the nearest lower power of two, then every other slope of the next one."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_two(heads)
    lower = 2 ** math.floor(math.log2(heads))
    return power_of_two(lower) + power_of_two(2 * lower)[0::2][: heads - lower]


class AlibiPositionalBias(nn.Module):
    """Attention with Linear Biases: `bias[h, i, j] = -|i' - j| * slope_h`, with the queries the
    last `i` of `j` positions (`i' = i + j - n_queries`). `forward(i, j, device)` -> `(heads, i, j)`.
    """

    slopes: Tensor

    @typechecked
    def __init__(self, heads: int) -> None:
        super().__init__()
        self.heads = heads
        slopes = torch.tensor(alibi_slopes(heads))
        self.register_buffer("slopes", rearrange(slopes, "h -> h 1 1"), persistent=False)

    def forward(self, i: int, j: int, device: torch.device | None = None) -> Tensor:
        queries = torch.arange(j - i, j, device=device)
        keys = torch.arange(j, device=device)
        distance = (keys[None, :] - queries[:, None]).abs()
        return -distance * self.slopes.to(device)


class ContinuousPositionBias(nn.Module):
    """Log-spaced continuous position bias (SwinV2, Liu et al. 2022): relative coordinates
    `sign(x) * log(1 + |x|)` -> MLP (Linear -> LeakyReLU(0.1), `layers` times, then Linear to
    `heads`) -> a `(heads, n, n)` bias over the `n = prod(dimensions)` positions of a grid.

    The MLP runs once per distinct offset (`prod(2 d - 1)` of them, not `n^2` pairs as in the
    reference) and the result is gathered; the offsets and the gather index are cached per grid
    shape and device.
    """

    @typechecked
    def __init__(
        self, *, dim: int, heads: int, num_dims: int = 2, layers: int = 2, log_dist: bool = True
    ) -> None:
        super().__init__()
        if num_dims < 1 or layers < 1:
            raise ValueError(f"num_dims and layers: expected >= 1, got {num_dims} and {layers}")
        self.num_dims = num_dims
        self.log_dist = log_dist
        self.net = nn.ModuleList([nn.Sequential(nn.Linear(num_dims, dim), nn.LeakyReLU(0.1))])
        for _ in range(layers - 1):
            self.net.append(nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.1)))
        self.net.append(nn.Linear(dim, heads))
        self._cache: dict[tuple[tuple[int, ...], torch.device], tuple[Tensor, Tensor]] = {}

    def _offsets(self, dimensions: tuple[int, ...], device: torch.device) -> tuple[Tensor, Tensor]:
        key = (dimensions, device)
        if key not in self._cache:
            ranges = [torch.arange(-(d - 1), d, device=device) for d in dimensions]
            offsets = torch.stack(torch.meshgrid(*ranges, indexing="ij"), dim=-1).reshape(
                -1, len(dimensions)
            )
            positions = torch.stack(
                torch.meshgrid(
                    *[torch.arange(d, device=device) for d in dimensions], indexing="ij"
                ),
                dim=-1,
            ).reshape(-1, len(dimensions))
            relative = positions[:, None, :] - positions[None, :, :]  # (n, n, num_dims)
            index = torch.zeros(relative.shape[:2], dtype=torch.long, device=device)
            for axis, d in enumerate(dimensions):  # mixed-radix index of the offset
                index = index * (2 * d - 1) + (relative[..., axis] + d - 1)
            offsets = offsets.float()
            if self.log_dist:
                offsets = torch.sign(offsets) * torch.log1p(offsets.abs())
            self._cache[key] = (offsets, index)
        return self._cache[key]

    def forward(self, *dimensions: int, device: torch.device | str | None = None) -> Tensor:
        if len(dimensions) != self.num_dims:
            raise ValueError(
                f"ContinuousPositionBias: expected {self.num_dims} grid dimensions, got {dimensions}"
            )
        weight = next(self.parameters())
        where = torch.device(device) if device is not None else weight.device
        offsets, index = self._offsets(tuple(dimensions), where)
        bias = offsets.to(weight.dtype)
        for layer in self.net:
            bias = layer(bias)
        return rearrange(bias[index], "i j h -> h i j")


class Attention(nn.Module):
    """Multi-head attention with QK-norm, learned null key/values and optional causal ALiBi.

    `sim = scale * <q / |q| * q_scale, k / |k| * k_scale>` (learned per-dim scales, fixed `scale`
    of 8 instead of `1/sqrt(d)`); `num_null_kv` learned (k, v) pairs per head are prepended to the
    keys, so a fully masked context still has something to attend to. Cross-attention LayerNorms
    the context (`norm_context`). Causal attention adds an ALiBi bias and masks future keys.

    `forward(x (b, i, dim), mask=None (b, j) bool, True = keep, context=None (b, j, dim_context),
    attn_bias=None (h, i, j) or (b, h, i, j))` -> `(b, i, dim)`. The input is LayerNormed inside
    (pre-norm); the caller adds the residual.
    """

    @typechecked
    def __init__(
        self,
        dim: int,
        dim_context: int | None = None,
        dim_head: int = 64,
        heads: int = 8,
        causal: bool = False,
        num_null_kv: int = 0,
        norm_context: bool = True,
        dropout: float = 0.0,
        scale: float = 8.0,
    ) -> None:
        super().__init__()
        if min(dim, dim_head, heads) < 1 or num_null_kv < 0:
            raise ValueError(
                f"Attention: expected positive dim, dim_head, heads and num_null_kv >= 0, got "
                f"{dim}, {dim_head}, {heads}, {num_null_kv}"
            )
        self.heads = heads
        self.causal = causal
        self.scale = scale
        self.dropout = dropout
        self.num_null_kv = num_null_kv
        inner = dim_head * heads
        # Only a cross-attention (dim_context given) owns a context norm, and only null key/values
        # that exist are parameters: no parameter is left without a gradient (DDP needs that).
        self.is_cross_attention = dim_context is not None
        kv_dim = dim if dim_context is None else dim_context
        self.rel_pos_bias = AlibiPositionalBias(heads) if causal else None
        self.norm = LayerNorm(dim)
        self.context_norm: nn.Module = (
            LayerNorm(kv_dim) if norm_context and self.is_cross_attention else nn.Identity()
        )
        self.null_kv = (
            nn.Parameter(torch.randn(heads, 2 * num_null_kv, dim_head)) if num_null_kv else None
        )
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(kv_dim, inner * 2, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Linear(inner, dim, bias=False)
        self._causal_cache: dict[tuple[int, int, torch.device], Tensor] = {}

    def _causal_bias(self, i: int, j: int, device: torch.device) -> Tensor:
        """ALiBi plus the causal mask over the real keys, `(heads, i, j)`, cached per shape."""
        key = (i, j, device)
        if key not in self._causal_cache:
            assert self.rel_pos_bias is not None
            bias = self.rel_pos_bias(i, j, device)
            future = torch.ones(i, j, dtype=torch.bool, device=device).triu(j - i + 1)
            self._causal_cache[key] = bias.masked_fill(future, _masked_value(torch.float32))
        return self._causal_cache[key]

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        context: Tensor | None = None,
        attn_bias: Tensor | None = None,
    ) -> Tensor:
        self._check_inputs(x, mask, context)
        batch, n = x.shape[:2]
        x = self.norm(x)
        if context is None and self.null_kv is None:
            # self-attention: q, k and v in one product, q and k normalised in one pass
            weight = torch.cat((self.to_q.weight, self.to_kv.weight))
            qkv = rearrange(F.linear(x, weight), "b n (r h d) -> r b h n d", r=3, h=self.heads)
            qk, v = F.normalize(qkv[:2], dim=-1), qkv[2]
            q, k = qk[0], qk[1]
        else:
            kv_input = x if context is None else self.context_norm(context)
            q = rearrange(self.to_q(x), "b n (h d) -> b h n d", h=self.heads)
            k, v = (
                rearrange(t, "b n (h d) -> b h n d", h=self.heads)
                for t in self.to_kv(kv_input).chunk(2, dim=-1)
            )
            if self.null_kv is not None:
                null_k, null_v = repeat(self.null_kv, "h (n r) d -> r b h n d", b=batch, r=2)
                k, v = torch.cat((null_k, k), dim=-2), torch.cat((null_v, v), dim=-2)
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        # (q/|q| * q_scale) . (k/|k| * k_scale) = (q/|q| * q_scale * k_scale) . k/|k|
        q = q * (self.q_scale * self.k_scale)
        additive = self._additive_mask(batch, n, k.shape[-2], mask, attn_bias, q)
        dropout = self.dropout if self.training else 0.0
        out = attend(q, k, v, additive, scale=self.scale, dropout_p=dropout)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))

    def _check_inputs(self, x: Tensor, mask: Tensor | None, context: Tensor | None) -> None:
        """A context only for a cross-attention; a key mask `(b, j)` over the `j` keys (the
        tokens, or the context)."""
        if context is not None and not self.is_cross_attention:
            raise ValueError(
                "Attention: got a context, but this attention was built for self-attention "
                "(dim_context=None); pass dim_context to build a cross-attention"
            )
        keys = (x if context is None else context).shape[1]
        if mask is not None and mask.shape != (x.shape[0], keys):
            raise ValueError(
                f"Attention: expected a key mask of shape {(x.shape[0], keys)}, got "
                f"{tuple(mask.shape)}"
            )

    def _additive_mask(
        self,
        batch: int,
        i: int,
        j: int,
        mask: Tensor | None,
        attn_bias: Tensor | None,
        q: Tensor,
    ) -> Tensor | None:
        """One additive mask `(h or b h, i, j)` from the bias, the key mask and causality, with
        zero bias and no masking on the null key/values (the first `num_null_kv` keys)."""
        nulls, device = self.num_null_kv, q.device
        total: Tensor | None = None
        if attn_bias is not None:
            total = F.pad(attn_bias, (nulls, 0), value=0.0)
        if self.causal:
            causal = F.pad(self._causal_bias(i, j - nulls, device), (nulls, 0), value=0.0)
            total = causal if total is None else total + causal
        if mask is not None:
            keep = rearrange(F.pad(mask.bool(), (nulls, 0), value=True), "b j -> b 1 1 j")
            base = torch.zeros((), device=device) if total is None else total
            total = base.masked_fill(~keep, _masked_value(torch.float32))
        if total is None:
            return None
        return total.to(q.dtype).clamp_min(_masked_value(q.dtype))


class Transformer(nn.Module):
    """A stack of `depth` layers: [PEG] -> self-attention -> [cross-attention] -> GEGLU FF, each a
    residual, and a final bias-free LayerNorm.

    Self-attention is causal (ALiBi) when `causal`; cross-attention (`has_cross_attn`) runs only
    when `forward` gets a `context` and has `attn_num_null_kv` null key/values.

    `forward(x (b, n, dim), video_shape=(b, t, h, w) for the PEG, attn_bias=(h, n, n),
    context=(b, m, dim_context), self_attn_mask=(b, n), cross_attn_context_mask=(b, m))` ->
    `(b, n, dim)`.
    """

    @typechecked
    def __init__(
        self,
        dim: int,
        *,
        depth: int,
        dim_context: int | None = None,
        causal: bool = False,
        dim_head: int = 64,
        heads: int = 8,
        ff_mult: float = 4,
        peg: bool = False,
        peg_causal: bool = False,
        attn_num_null_kv: int = 2,
        has_cross_attn: bool = False,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"Transformer: expected depth >= 1, got {depth}")
        self.layers = nn.ModuleList()
        for _ in range(depth):
            layer: list[Any] = (  # [PEG | None, Attention, Attention | None, FeedForward]
                [
                    PEG(dim, causal=peg_causal) if peg else None,
                    Attention(
                        dim, dim_head=dim_head, heads=heads, causal=causal, dropout=attn_dropout
                    ),
                    Attention(
                        dim,
                        dim_context=dim if dim_context is None else dim_context,
                        dim_head=dim_head,
                        heads=heads,
                        num_null_kv=attn_num_null_kv,
                        dropout=attn_dropout,
                    )
                    if has_cross_attn
                    else None,
                    FeedForward(dim, mult=ff_mult, dropout=ff_dropout),
                ]
            )
            self.layers.append(nn.ModuleList(layer))
        self.norm_out = LayerNorm(dim)

    def forward(
        self,
        x: Tensor,
        video_shape: VideoShape | None = None,
        attn_bias: Tensor | None = None,
        context: Tensor | None = None,
        self_attn_mask: Tensor | None = None,
        cross_attn_context_mask: Tensor | None = None,
    ) -> Tensor:
        layers: Any = self.layers  # of [PEG | None, Attention, Attention | None, FeedForward]
        for peg, self_attn, cross_attn, ff in layers:
            if peg is not None:
                x = peg(x, video_shape) + x
            x = self_attn(x, mask=self_attn_mask, attn_bias=attn_bias) + x
            if cross_attn is not None and context is not None:
                x = cross_attn(x, mask=cross_attn_context_mask, context=context) + x
            x = ff(x) + x
        return self.norm_out(x)
