"""The building blocks of `Unet3D` (Ho et al. 2022, section 3): norms, FiLM ResNet blocks, spatial
linear attention, and softmax attention over frames or over pixels.

Module and parameter names follow video-diffusion-pytorch 0.6.1 / 0.7.0 (`Residual.fn`,
`PreNorm.norm`/`.fn`, `Block.proj`/`.norm`, `ResnetBlock.mlp`/`.block1`/`.block2`/`.res_conv`,
`to_qkv`/`to_out`), so the reference's state dicts load unchanged. Feature maps are videos
`(b, c, f, h, w)`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from rotary_embedding_torch import RotaryEmbedding
from torch import nn

from mp_layers.attention import attend


class SinusoidalPosEmb(nn.Module):
    """Transformer sinusoidal embedding of the diffusion step: `(b,)` → `(b, dim)`,
    `[sin(t·ω_i), cos(t·ω_i)]` with `ω_i = 10000^(-i / (dim/2 - 1))`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, time: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(
            torch.arange(half, device=time.device) * (-math.log(10000) / max(half - 1, 1))
        )
        angles = time.float()[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class RelativePositionBias(nn.Module):
    """T5's bucketed relative position bias over frames: `forward(n)` → `(heads, n, n)`.

    Offsets `j - i` go to `num_buckets` buckets (half per direction): exact below
    `num_buckets / 4`, log-spaced up to `max_distance`, clipped beyond; each bucket has a learned
    bias per head."""

    def __init__(self, heads: int = 8, num_buckets: int = 32, max_distance: int = 128) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def _bucket(self, relative: torch.Tensor) -> torch.Tensor:
        half = self.num_buckets // 2
        n = -relative
        bucket = (n < 0).long() * half
        n = n.abs()
        exact = half // 2
        log_ratio = torch.log(n.float().clamp(min=1) / exact) / math.log(self.max_distance / exact)
        large = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
        return bucket + torch.where(n < exact, n, large)

    def forward(self, n: int, device: torch.device | None = None) -> torch.Tensor:
        position = torch.arange(n, dtype=torch.long, device=device)
        buckets = self._bucket(position[None, :] - position[:, None])
        return rearrange(self.relative_attention_bias(buckets), "i j h -> h i j")


class LayerNorm(nn.Module):
    """Layer norm over the channels of a video `(b, c, f, h, w)`, learned gain, no bias
    (`(x - mean_c) / sqrt(var_c + eps) · γ`)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.gamma


class RMSNorm(nn.Module):
    """0.7.0's block norm: `x / ||x||_c · sqrt(c) · γ` over the channels of `(b, c, f, h, w)`."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * (self.gamma * self.scale)


class Residual(nn.Module):
    """`x + fn(x, **kwargs)`."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, **kwargs: torch.Tensor | None) -> torch.Tensor:
        out: torch.Tensor = self.fn(x, **kwargs)
        return out + x


class PreNorm(nn.Module):
    """`fn(LayerNorm(x), **kwargs)`."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        if isinstance(self.fn, Across):  # normalise in token layout
            out: torch.Tensor = self.fn(x, pre_norm=self.norm, **kwargs)
        else:
            out = self.fn(self.norm(x), **kwargs)
        return out


class Block(nn.Module):
    """Spatial 1x3x3 convolution → norm → optional FiLM `x·(scale + 1) + shift` → SiLU."""

    def __init__(self, dim: int, dim_out: int, *, norm: str = "group", groups: int = 8) -> None:
        super().__init__()
        self.proj = nn.Conv3d(dim, dim_out, (1, 3, 3), padding=(0, 1, 1))
        self.norm: nn.Module = (
            nn.GroupNorm(groups, dim_out) if norm == "group" else RMSNorm(dim_out)
        )
        self.act = nn.SiLU()

    def forward(
        self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        x = self.norm(self.proj(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = torch.addcmul(shift, x, scale + 1)
        out: torch.Tensor = self.act(x)
        return out


class ResnetBlock(nn.Module):
    """Two `Block`s plus a 1x1x1 (or identity) residual; the time (+ condition) embedding sets a
    FiLM scale and shift on the first block (`mlp`: SiLU → Linear to `2·dim_out`)."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        *,
        time_emb_dim: int | None = None,
        norm: str = "group",
        groups: int = 8,
    ) -> None:
        super().__init__()
        self.mlp = (
            nn.Sequential(nn.SiLU(), nn.Linear(time_emb_dim, dim_out * 2))
            if time_emb_dim is not None
            else None
        )
        self.block1 = Block(dim, dim_out, norm=norm, groups=groups)
        self.block2 = Block(dim_out, dim_out, norm=norm, groups=groups)
        self.res_conv: nn.Module = nn.Conv3d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor | None = None) -> torch.Tensor:
        scale_shift = None
        if self.mlp is not None:
            if time_emb is None:
                raise ValueError("time_emb: expected a (b, d) tensor for a FiLM block, got None")
            emb = rearrange(self.mlp(time_emb), "b c -> b c 1 1 1")
            scale, shift = emb.chunk(2, dim=1)
            scale_shift = (scale, shift)
        h = self.block2(self.block1(x, scale_shift=scale_shift))
        out: torch.Tensor = h + self.res_conv(x)
        return out


class SpatialLinearAttention(nn.Module):
    """Linear ("efficient") attention over the pixels of every frame (Shen et al. 2021): q
    softmaxed over features, k over pixels, `out = (k vᵀ)ᵀ q`, linear in `h·w`."""

    def __init__(self, dim: int, heads: int = 4, dim_head: int = 32) -> None:
        super().__init__()
        self.scale = dim_head**-0.5
        self.heads = heads
        hidden = dim_head * heads
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, height, _ = x.shape
        frames = rearrange(x, "b c f h w -> (b f) c (h w)")
        n, pixels = frames.shape[0], frames.shape[-1]
        # The 1x1 convolutions as batched matrix products, one each for q, k and v, so that each
        # comes out contiguous as (n·heads, d, pixels) (oneDNN's 1x1 convolution into 3·heads·32
        # channels was 4x slower here, and slicing one qkv tensor costs copies in every product).
        q, k, v = (
            torch.bmm(w.expand(n, -1, -1), frames).view(n, self.heads, -1, pixels)
            for w in self.to_qkv.weight.view(-1, c).chunk(3)
        )
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = torch.matmul(k, v.transpose(-1, -2))  # (n, g, d, e)
        out = torch.matmul(context.transpose(-1, -2), q)  # (n, g, e, pixels)
        weight, bias = self.to_out.weight, self.to_out.bias
        assert bias is not None  # to_out has a bias, as the reference's
        out = torch.baddbmm(
            bias[None, :, None], weight.view(c, -1).expand(out.shape[0], -1, -1), out.flatten(1, 2)
        )
        return rearrange(out, "(b f) c (h w) -> b c f h w", b=b, h=height)


class Attention(nn.Module):
    """Softmax attention over sequence-first tokens `(n, B, dim)` (B independent sequences of n
    tokens), through `scaled_dot_product_attention`: `softmax(q kᵀ / sqrt(d) + bias) v`.

    `rotary_emb` rotates q and k by their position (used over frames). The rotation `R_i` of
    position i is linear, so it is folded into the projection: `q_i = (R_i W_q) x_i`, one batched
    matrix product over positions instead of a projection plus elementwise rotations of the (much
    wider) q and k. `pos_bias` `(heads, n, n)` is added to the logits. `focus_present_mask` `(b,)`
    bool, with `B = b·s` (b outermost), makes a flagged sample attend only to its own position (all
    flagged: the attention reduces to `to_out(v)`).
    """

    def __init__(
        self,
        dim: int,
        heads: int = 4,
        dim_head: int = 32,
        rotary_emb: RotaryEmbedding | None = None,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.rotary_emb = rotary_emb
        hidden = dim_head * heads
        self.to_qkv = nn.Linear(dim, hidden * 3, bias=False)
        self.to_out = nn.Linear(hidden, dim, bias=False)

    def _rotations(self, n: int, device: torch.device) -> torch.Tensor:
        """`R` `(n, d, d)` with `R[i] @ q = rotary_emb.rotate_queries_or_keys(q)` at position i,
        read off by rotating the identity (so the library's convention is kept exactly)."""
        assert self.rotary_emb is not None
        d = self.dim_head
        eye = torch.eye(d, device=device)[:, None].expand(d, n, d)  # eye[j, i] = e_j at i
        return self.rotary_emb.rotate_queries_or_keys(eye).permute(1, 2, 0)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projections q, k, v, each `(n, B, heads·d)`; q and k rotated per position when rotary.
        Three products rather than one split: each output is contiguous, and the backward needs
        no concatenation of the three gradients."""
        w_q, w_k, w_v = self.to_qkv.weight.chunk(3)  # (g·d, c) each
        v = F.linear(x, w_v)
        if self.rotary_emb is None:
            return F.linear(x, w_q), F.linear(x, w_k), v
        n = x.shape[0]
        rotations = self._rotations(n, x.device).to(w_q.dtype)  # (n, d, d)

        def rotated(weight: torch.Tensor) -> torch.Tensor:
            heads = rearrange(weight, "(g d) c -> g d c", g=self.heads)
            per_position = torch.einsum("nde,gec->ngdc", rotations, heads).flatten(1, 2)
            return torch.bmm(x, per_position.transpose(1, 2).to(x.dtype))

        return rotated(w_q), rotated(w_k), v

    def forward(
        self,
        x: torch.Tensor,
        pos_bias: torch.Tensor | None = None,
        focus_present_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        n, batch, _ = x.shape
        if focus_present_mask is not None and bool(focus_present_mask.all()):
            w_v = self.to_qkv.weight.chunk(3)[2]
            out: torch.Tensor = self.to_out(F.linear(x, w_v))
            return out
        q, k, v = (rearrange(t, "n B (g d) -> B g n d", g=self.heads) for t in self._qkv(x))
        # A 4-D mask keeps SDPA on its fused CPU kernel (long sequences; see `_attend`).
        bias = pos_bias.to(q.dtype)[None] if pos_bias is not None else None
        if focus_present_mask is not None and bool(focus_present_mask.any()):
            b = focus_present_mask.shape[0]
            eye = torch.eye(n, dtype=torch.bool, device=x.device)
            allowed = eye | ~rearrange(focus_present_mask, "b -> b 1 1 1 1")  # (b, 1, 1, n, n)
            base = bias[0] if bias is not None else q.new_zeros(n, n)
            masked = base.masked_fill(~allowed, float("-inf"))
            bias = masked.expand(b, batch // b, self.heads, n, n).reshape(batch, self.heads, n, n)
        out = self.to_out(rearrange(_attend(q, k, v, bias), "B g n d -> n B (g d)"))
        return out


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """`softmax(q kᵀ / sqrt(d) + bias) v` for `(B, g, n, d)` inputs and a `(1 | B, g, n, n)` bias
    (`mp_layers.attend`: batched products for short sequences, SDPA for long ones)."""
    return attend(q, k, v, bias)


def _pre_norm(tokens: torch.Tensor, norm: LayerNorm | None) -> torch.Tensor:
    """`LayerNorm` applied in token layout `(..., c)`: the same function, one fused pass."""
    if norm is None:
        return tokens
    return F.layer_norm(tokens, tokens.shape[-1:], norm.gamma.reshape(-1), None, norm.eps)


TOKEN_LAYOUTS = {"frames": "f (b h w) c", "pixels": "(h w) (b f) c"}


class Across(nn.Module):
    """Apply a token module over the frames of every pixel (`over="frames"`: `(b, c, f, h, w)` ↔
    `(f, b·h·w, c)`) or over the pixels of every frame (`over="pixels"`: ↔ `(h·w, b·f, c)`),
    sequence-first. `pre_norm` (given by `PreNorm`) is applied after the rearrangement."""

    def __init__(self, fn: nn.Module, over: str) -> None:
        super().__init__()
        self.fn = fn
        self.tokens = TOKEN_LAYOUTS[over]

    def forward(
        self, x: torch.Tensor, pre_norm: LayerNorm | None = None, **kwargs: torch.Tensor | None
    ) -> torch.Tensor:
        b, h = x.shape[0], x.shape[3]
        tokens = _pre_norm(rearrange(x, f"b c f h w -> {self.tokens}"), pre_norm)
        return rearrange(self.fn(tokens, **kwargs), f"{self.tokens} -> b c f h w", b=b, h=h)


def downsample(dim: int) -> nn.Conv3d:
    """Halve height and width (never frames): a 1x4x4 convolution with stride 1x2x2."""
    return nn.Conv3d(dim, dim, (1, 4, 4), (1, 2, 2), (0, 1, 1))


def upsample(dim: int) -> nn.ConvTranspose3d:
    """Double height and width (never frames): a 1x4x4 transposed convolution, stride 1x2x2."""
    return nn.ConvTranspose3d(dim, dim, (1, 4, 4), (1, 2, 2), (0, 1, 1))
