"""C-ViViT's building blocks: patch embeddings, pixel heads and the factorised space-time passes.

A video `(b, c, F, H, W)` becomes a token grid `(b, t', h', w', d)`: the first frame is patched on
its own (`p1 x p2`), the rest as tubelets (`pt x p1 x p2`), each through a "dual PatchNorm"
embedding. The encoder runs a spatial transformer per time step (2-D continuous position bias)
then a causal temporal transformer per spatial location (ALiBi, causal PEG), so the codes of a
tubelet never depend on later frames (Villegas et al. 2022, sec. 2.1); the decoder mirrors it and
two linear heads return pixels.
"""

from __future__ import annotations

from typing import Any

from einops import rearrange
from einops.layers.torch import Rearrange
from torch import Tensor, nn
from vector_quantize_pytorch import VectorQuantize

from phenaki.attention import Transformer
from phenaki.cvivit_geometry import PatchGeometry
from phenaki.quantize import FactorizedLFQ

__all__ = [
    "decode_space_time",
    "encode_space_time",
    "pixel_heads",
    "quantizer",
    "to_pair",
    "token_embeddings",
]

Size = int | tuple[int, int]


def to_pair(value: Size, name: str) -> tuple[int, int]:
    """`(height, width)` of an int or a pair of positive ints."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name}: expected a positive int or (height, width), got {value!r}")
    return pair[0], pair[1]


def _patch_embedding(pattern: str, inputs: int, dim: int, **sizes: int) -> nn.Sequential:
    """Rearrange into patches -> LayerNorm -> Linear -> LayerNorm ("dual PatchNorm")."""
    return nn.Sequential(
        Rearrange(pattern, **sizes), nn.LayerNorm(inputs), nn.Linear(inputs, dim), nn.LayerNorm(dim)
    )


def token_embeddings(geometry: PatchGeometry, dim: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The patch embeddings of the first frame `(b, c, 1, H, W) -> (b, 1, h', w', d)` and of the
    tubelets after it `(b, c, k pt, H, W) -> (b, k, h', w', d)`."""
    (ph, pw), pt, frame_inputs = geometry.patch, geometry.temporal_patch_size, geometry.frame_inputs
    first = _patch_embedding(
        "b c 1 (h p1) (w p2) -> b 1 h w (c p1 p2)", frame_inputs, dim, p1=ph, p2=pw
    )
    rest = _patch_embedding(
        "b c (t pt) (h p1) (w p2) -> b t h w (c pt p1 p2)",
        frame_inputs * pt,
        dim,
        p1=ph,
        p2=pw,
        pt=pt,
    )
    return first, rest


def pixel_heads(geometry: PatchGeometry, dim: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The linear heads back to pixels: first frame `(b, 1, h', w', d) -> (b, c, 1, H, W)` and
    tubelets `(b, k, h', w', d) -> (b, c, k pt, H, W)`."""
    (ph, pw), pt, frame_inputs = geometry.patch, geometry.temporal_patch_size, geometry.frame_inputs
    first = nn.Sequential(
        nn.Linear(dim, frame_inputs),
        Rearrange("b 1 h w (c p1 p2) -> b c 1 (h p1) (w p2)", p1=ph, p2=pw),
    )
    rest = nn.Sequential(
        nn.Linear(dim, frame_inputs * pt),
        Rearrange(
            "b t h w (c pt p1 p2) -> b c (t pt) (h p1) (w p2)",
            p1=ph,
            p2=pw,
            pt=pt,
        ),
    )
    return first, rest


def quantizer(
    *, dim: int, codebook_size: int, lookup_free: bool, lfq_kwargs: dict[str, Any]
) -> nn.Module:
    """The bottleneck: `FactorizedLFQ` (lookup-free, token-last unless `lfq_kwargs` say
    otherwise) or a cosine-similarity `VectorQuantize`. `lfq_kwargs` gets the default set."""
    if lookup_free:
        lfq_kwargs.setdefault("channel_first", False)
        return FactorizedLFQ(dim=dim, codebook_size=codebook_size, **lfq_kwargs)
    return VectorQuantize(dim=dim, codebook_size=codebook_size, use_cosine_sim=True)


def encode_space_time(
    spatial: Transformer, temporal: Transformer, tokens: Tensor, spatial_bias: Tensor
) -> Tensor:
    """Spatial transformer per time step, then causal temporal transformer per location:
    `(b, t', h', w', d)` -> the same shape."""
    b, t, h, w, _ = tokens.shape
    video_shape = (b, t, h, w)
    x = rearrange(tokens, "b t h w d -> (b t) (h w) d")
    x = spatial(x, attn_bias=spatial_bias, video_shape=video_shape)
    x = rearrange(x, "(b t) (h w) d -> (b h w) t d", b=b, h=h, w=w)
    x = temporal(x, video_shape=video_shape)
    return rearrange(x, "(b h w) t d -> b t h w d", b=b, h=h, w=w)


def decode_space_time(
    temporal: Transformer, spatial: Transformer, tokens: Tensor, spatial_bias: Tensor
) -> Tensor:
    """The encoder's mirror: causal temporal transformer per location, then spatial transformer
    per time step: `(b, t', h', w', d)` -> the same shape."""
    b, t, h, w, _ = tokens.shape
    video_shape = (b, t, h, w)
    x = rearrange(tokens, "b t h w d -> (b h w) t d")
    x = temporal(x, video_shape=video_shape)
    x = rearrange(x, "(b h w) t d -> (b t) (h w) d", b=b, h=h, w=w)
    x = spatial(x, attn_bias=spatial_bias, video_shape=video_shape)
    return rearrange(x, "(b t) (h w) d -> b t h w d", b=b, h=h, w=w)
