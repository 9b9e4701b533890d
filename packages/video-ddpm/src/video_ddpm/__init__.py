"""Video Diffusion Models (Ho et al. 2022) for PyTorch: the factorised space-time `Unet3D`,
`GaussianDiffusion` with DDPM and DDIM sampling, ε / x0 / v objectives and trained classifier-free
guidance, text conditioning through any Hugging Face encoder (`TextEncoder`), and checkpoints
that round-trip (`save_pretrained` / `load_pretrained`), including the reference
implementation's (`convert_reference_checkpoint`). Training and the `video-ddpm` CLI come with
the `[train]` extra.
"""

from importlib.metadata import version as _version

from video_ddpm.gaussian_diffusion import GaussianDiffusion
from video_ddpm.pretrained import convert_reference_checkpoint, load_pretrained, save_pretrained
from video_ddpm.schedules import cosine_beta_schedule, linear_beta_schedule, sigmoid_beta_schedule
from video_ddpm.text import TextEncoder, default_text_encoder_path
from video_ddpm.unet import Unet3D

__version__: str = _version("video-ddpm")
__all__: list[str] = [
    "GaussianDiffusion",
    "TextEncoder",
    "Unet3D",
    "convert_reference_checkpoint",
    "cosine_beta_schedule",
    "default_text_encoder_path",
    "linear_beta_schedule",
    "load_pretrained",
    "save_pretrained",
    "sigmoid_beta_schedule",
]
