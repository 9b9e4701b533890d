"""Conditional sampling for video diffusion models: known frames or pixels, replacement and
reconstruction guidance, super-resolution through a measurement, and temporal windows.

Every sampler here is written against one denoiser in EDM form (Karras et al. 2022):
`denoise(x, sigma) -> D(x; sigma)`, where `x = y + sigma * n` is a noisy video `(b, c, f, h, w)`
in the model's data space and `D` its estimate of the clean `y`. A DDPM model at step t is such a
denoiser with `x = z_t / alpha_t` and `sigma = sigma_t / alpha_t` (`z_t = alpha_t y + sigma_t n`),
so karras-unet3d (Heun) and video-ddpm (DDPM/DDIM) share this code.

Given a known part `a` of the video (a mask, True where known) with values `x_a`, the unknown part
`b` is generated in one of two ways (Ho et al. 2022, "Video Diffusion Models", section 3.1):

- replacement: before each denoiser call the known part of the input is replaced by a noisy
  version of the known values, `x_a <- x_a + sigma * n_a`, and the known part of the estimate by
  the values themselves. The model sees the known frames, but nothing makes the estimate of `b`
  agree with them, which the paper shows gives incoherent continuations.
- reconstruction guidance: on top of replacement, the estimate of `b` is corrected by the
  gradient of the reconstruction error of `a`,

      D~_b = D_b - (w_r / 2) * grad_{x_b} || x_a - D_a(x) ||^2        (a sum over pixels)

  which is the paper's `x~_b = x^_b - (w_r alpha_t / 2) grad_{z_b} ||x_a - x^_a(z_t)||^2` in
  EDM form (`z = alpha x`). The paper uses `w_r` of 9 to 50. One backward pass per call.

Super-resolution is guidance through a measurement: `x_a = low_res`, `D_a = measure(D)` with a
differentiable `measure` (`area_downsample`), and no replacement (no pixel is known).

`WindowedDenoiser` makes a model of F frames denoise N > F frames: the frames are cut into
windows of F with an overlap, every window is denoised, and each frame's estimate is the mean of
its windows' (MultiDiffusion, Bar-Tal et al. 2023, with uniform weights), at every step.
"""

from mp_layers.conditioning.condition import (
    METHODS,
    Condition,
    area_downsample,
    frame_mask,
    interpolation,
    known_frames,
    super_resolution,
)
from mp_layers.conditioning.denoisers import (
    ConditionedDenoiser,
    Denoiser,
    WindowedDenoiser,
    conditioned_denoiser,
    temporal_windows,
)
from mp_layers.conditioning.uses import (
    ConditionalSampling,
    Sampler,
    extend,
    interpolate,
    upsample,
)

__all__ = [
    "METHODS",
    "Condition",
    "ConditionalSampling",
    "ConditionedDenoiser",
    "Denoiser",
    "Sampler",
    "WindowedDenoiser",
    "area_downsample",
    "conditioned_denoiser",
    "extend",
    "frame_mask",
    "interpolate",
    "interpolation",
    "known_frames",
    "super_resolution",
    "temporal_windows",
    "upsample",
]
