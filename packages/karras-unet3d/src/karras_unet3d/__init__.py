"""karras-unet3d: the EDM2 magnitude-preserving 3-D U-Net for video diffusion.

- `KarrasUnet3D`: the U-Net (EDM2 config G, figure 21, in 3-D), every layer from mp-layers.
- `MPFeedForward`, `MPImageTransformer`, `SpaceTimeAttention`: MP blocks on feature maps
  `(b, c, t, h, w)`.
- `EDM2Diffusion`: EDM preconditioning, the EDM2 loss with learned uncertainty, the Heun sampler
  with classifier-free guidance and autoguidance; `karras_sigmas`, `edm2_learning_rate`,
  `edm2_lr_lambda`.
- `post_hoc_ema` / `synthesize_ema`: post-hoc EMA through ema-pytorch (extra `[train]`).
"""

from importlib.metadata import version as _version

from karras_unet3d.attention import MPFeedForward, MPImageTransformer, SpaceTimeAttention
from karras_unet3d.diffusion import EDM2Diffusion, edm2_learning_rate, edm2_lr_lambda, karras_sigmas
from karras_unet3d.unet import KarrasUnet3D

__version__: str = _version("karras-unet3d")
__all__: list[str] = [
    "EDM2Diffusion",
    "KarrasUnet3D",
    "MPFeedForward",
    "MPImageTransformer",
    "SpaceTimeAttention",
    "__version__",
    "edm2_learning_rate",
    "edm2_lr_lambda",
    "karras_sigmas",
]
