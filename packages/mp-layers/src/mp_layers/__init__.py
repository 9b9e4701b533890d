"""mp-layers: the magnitude-preserving building blocks of EDM2 for PyTorch.

Functions (`mp_layers.functional`): `normalize`, `pixel_norm`, `mp_silu`, `mp_sum`, `mp_cat`,
`dropout`. Modules: `MPSiLU`, `Gain`, `Dropout`, `MPSum`, `GatedMPSum` (identity at init), `MPCat`, `PixelNorm`, the
forced-weight-normalised `MPLinear`, `MPConv1d`, `MPConv2d`, `MPConv3d`, `MPFourierEmbedding`, and the token-sequence blocks
`MPAttention`, `MPFeedForward`, `MPTransformer`. Conventions: video `(b, c, t, h, w)`, image
`(b, c, h, w)`, tokens `(b, n, d)`; every `t` is the weight of the second (branch) argument.
"""

from importlib.metadata import version as _version

from mp_layers.attention import (
    MPAttention,
    MPFeedForward,
    MPTransformer,
    MPTransformerLayer,
    attend,
)
from mp_layers.embedding import MPFourierEmbedding
from mp_layers.functional import dropout, mp_cat, mp_silu, mp_sum, normalize, pixel_norm
from mp_layers.layers import Dropout, Gain, GatedMPSum, MPCat, MPSiLU, MPSum, PixelNorm
from mp_layers.weights import MPConv1d, MPConv2d, MPConv3d, MPLinear

__version__: str = _version("mp-layers")

__all__ = [
    "Dropout",
    "Gain",
    "GatedMPSum",
    "MPAttention",
    "MPCat",
    "MPConv1d",
    "MPConv2d",
    "MPConv3d",
    "MPFeedForward",
    "MPFourierEmbedding",
    "MPLinear",
    "MPSiLU",
    "MPSum",
    "MPTransformer",
    "MPTransformerLayer",
    "PixelNorm",
    "__version__",
    "attend",
    "dropout",
    "mp_cat",
    "mp_silu",
    "mp_sum",
    "normalize",
    "pixel_norm",
]
