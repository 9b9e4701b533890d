"""The building blocks of `Unet3D` (Ho et al. 2022, section 3): norms, FiLM ResNet blocks, spatial
linear attention, and softmax attention over frames or over pixels.

Module and parameter names follow video-diffusion-pytorch 0.6.1 / 0.7.0 (`Residual.fn`,
`PreNorm.norm`/`.fn`, `Block.proj`/`.norm`, `ResnetBlock.mlp`/`.block1`/`.block2`/`.res_conv`,
`to_qkv`/`to_out`), so the reference's state dicts load unchanged. Feature maps are videos
`(b, c, f, h, w)`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from rotary_embedding_torch import RotaryEmbedding
from torch import nn


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

    def forward(self, x: torch.Tensor, **kwargs: torch.Tensor | None) -> torch.Tensor:
        out: torch.Tensor = self.fn(self.norm(x), **kwargs)
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
        b, _, _, height, width = x.shape
        frames = rearrange(x, "b c f h w -> (b f) c h w")
        qkv = rearrange(self.to_qkv(frames), "n (k g d) x y -> k n g d (x y)", k=3, g=self.heads)
        q = qkv[0].softmax(dim=-2) * self.scale
        k = qkv[1].softmax(dim=-1)
        context = torch.matmul(k, qkv[2].transpose(-1, -2))  # (n, g, d, e)
        out = torch.matmul(context.transpose(-1, -2), q)  # (n, g, e, pixels)
        out = rearrange(out, "n g e (x y) -> n (g e) x y", x=height, y=width)
        return rearrange(self.to_out(out), "(b f) c h w -> b c f h w", b=b)


class Attention(nn.Module):
    """Softmax attention over the sequence axis of `(b, s, n, dim)` (s independent sequences of
    n tokens), through `scaled_dot_product_attention`: `softmax(q kᵀ / sqrt(d) + bias) v`.

    `rotary_emb` rotates q and k by their position (used over frames); `pos_bias` `(heads, n, n)`
    is added to the logits; `focus_present_mask` `(b,)` bool makes a flagged sample attend only to
    its own position (all flagged: the attention reduces to `to_out(v)`)."""

    def __init__(
        self,
        dim: int,
        heads: int = 4,
        dim_head: int = 32,
        rotary_emb: RotaryEmbedding | None = None,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.rotary_emb = rotary_emb
        hidden = dim_head * heads
        self.to_qkv = nn.Linear(dim, hidden * 3, bias=False)
        self.to_out = nn.Linear(hidden, dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        pos_bias: torch.Tensor | None = None,
        focus_present_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, s, n, _ = x.shape
        qkv = self.to_qkv(x)
        if focus_present_mask is not None and bool(focus_present_mask.all()):
            return self.to_out(qkv.chunk(3, dim=-1)[2])
        q, k, v = rearrange(qkv, "b s n (k g d) -> k (b s) g n d", k=3, g=self.heads)
        if self.rotary_emb is not None:
            q = self.rotary_emb.rotate_queries_or_keys(q)
            k = self.rotary_emb.rotate_queries_or_keys(k)
        bias = pos_bias.to(q.dtype) if pos_bias is not None else None
        if focus_present_mask is not None and bool(focus_present_mask.any()):
            eye = torch.eye(n, dtype=torch.bool, device=x.device)
            allowed = eye | ~rearrange(focus_present_mask, "b -> b 1 1 1 1")  # (b, 1, 1, n, n)
            base = bias if bias is not None else q.new_zeros(n, n)
            bias = base.masked_fill(~allowed, float("-inf")).expand(b, s, self.heads, n, n)
            bias = bias.reshape(b * s, self.heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.to_out(rearrange(out, "(b s) g n d -> b s n (g d)", b=b))


class AcrossFrames(nn.Module):
    """Apply a token module over the frames of every pixel: `(b, c, f, h, w)` ↔ `(b, h·w, f, c)`."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, **kwargs: torch.Tensor | None) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = self.fn(rearrange(x, "b c f h w -> b (h w) f c"), **kwargs)
        return rearrange(out, "b (h w) f c -> b c f h w", h=h, w=w)


class AcrossPixels(nn.Module):
    """Apply a token module over the pixels of every frame: `(b, c, f, h, w)` ↔ `(b, f, h·w, c)`."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, **kwargs: torch.Tensor | None) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = self.fn(rearrange(x, "b c f h w -> b f (h w) c"), **kwargs)
        return rearrange(out, "b f (h w) c -> b c f h w", h=h, w=w)


def downsample(dim: int) -> nn.Conv3d:
    """Halve height and width (never frames): a 1x4x4 convolution with stride 1x2x2."""
    return nn.Conv3d(dim, dim, (1, 4, 4), (1, 2, 2), (0, 1, 1))


def upsample(dim: int) -> nn.ConvTranspose3d:
    """Double height and width (never frames): a 1x4x4 transposed convolution, stride 1x2x2."""
    return nn.ConvTranspose3d(dim, dim, (1, 4, 4), (1, 2, 2), (0, 1, 1))
