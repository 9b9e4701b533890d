"""lumiere-video: inflate a frozen (text-to-)image U-Net into a space-time video U-Net (Lumiere,
arXiv 2401.12945), with plain or magnitude-preserving (EDM2) temporal blocks.

Wrappers: `Lumiere`, `MPLumiere`. Temporal blocks (`lumiere.blocks`, `lumiere.mp_blocks`):
`ConvolutionInflationBlock`, `AttentionInflationBlock`, `TemporalDownsample`, `TemporalUpsample`
and their magnitude-preserving versions `MPConvolutionInflationBlock`,
`MPAttentionInflationBlock`, `MPTemporalDownsample`, `MPTemporalUpsample`. Videos are
`(b, c, t, h, w)`; every block also takes frames `(b·t, c, h, w)` with `batch_size=b`.
Adapters (the temporal blocks without the base): `TemporalBlocks` (`save_pretrained`,
`from_pretrained`, `push_to_hub`), through `Lumiere.save_temporal` / `from_temporal`.
"""

from importlib.metadata import version as _version

from lumiere.adapter import TemporalBlocks
from lumiere.blocks import (
    AttentionInflationBlock,
    ConvolutionInflationBlock,
    TemporalDownsample,
    TemporalUpsample,
)
from lumiere.mp_blocks import (
    MPAttentionInflationBlock,
    MPConvolutionInflationBlock,
    MPTemporalDownsample,
    MPTemporalUpsample,
)
from lumiere.wrapper import Lumiere, MPLumiere

__version__: str = _version("lumiere-video")

__all__ = [
    "AttentionInflationBlock",
    "ConvolutionInflationBlock",
    "Lumiere",
    "MPAttentionInflationBlock",
    "MPConvolutionInflationBlock",
    "MPLumiere",
    "MPTemporalDownsample",
    "MPTemporalUpsample",
    "TemporalBlocks",
    "TemporalDownsample",
    "TemporalUpsample",
    "__version__",
]
