"""Gaussian diffusion for video (Ho et al. 2020, 2022), with DDPM and DDIM samplers.

The 0.1.0 module path, kept as a re-export of the modules it was split into:

- `video_ddpm.schedules`: the beta schedules and the quantities derived from them;
- `video_ddpm.gaussian_diffusion`: `GaussianDiffusion` (training loss, forward process,
  predictions, single sampling steps);
- `video_ddpm.sampling`: the DDPM and DDIM samplers as functions (`sample_ddpm`, `sample_ddim`);
- `video_ddpm.conditioning`: condition checks, text embedding and guidance;
- `video_ddpm.checks`, `video_ddpm.tensor_utils`: input checks and small tensor helpers.
"""

from __future__ import annotations

# The other names 0.1.0 had here, re-exported (`as` marks the re-export; not in __all__, as then).
from video_ddpm.checks import RANGE_TOLERANCE as RANGE_TOLERANCE
from video_ddpm.conditioning import DEFAULT_TEXT_ENCODER as DEFAULT_TEXT_ENCODER
from video_ddpm.conditioning import Cond as Cond
from video_ddpm.conditioning import TextEncoderLike as TextEncoderLike
from video_ddpm.gaussian_diffusion import LOSS_TYPES as LOSS_TYPES
from video_ddpm.gaussian_diffusion import OBJECTIVES as OBJECTIVES
from video_ddpm.gaussian_diffusion import GaussianDiffusion
from video_ddpm.sampling import SAMPLERS as SAMPLERS
from video_ddpm.schedules import BETA_SCHEDULES as BETA_SCHEDULES
from video_ddpm.schedules import (
    cosine_beta_schedule,
    linear_beta_schedule,
    sigmoid_beta_schedule,
)
from video_ddpm.schedules import extract as extract
from video_ddpm.tensor_utils import normalize_to_neg_one_to_one as normalize_to_neg_one_to_one
from video_ddpm.tensor_utils import unnormalize_to_zero_to_one as unnormalize_to_zero_to_one

__all__ = [
    "GaussianDiffusion",
    "cosine_beta_schedule",
    "linear_beta_schedule",
    "sigmoid_beta_schedule",
]
