"""DDPM and DDIM sampling with a `mp_layers.conditioning.Condition` (known frames or pixels by
replacement or reconstruction guidance, super-resolution) and temporal windows (MultiDiffusion).

At step t the network is an EDM denoiser: with `z_t = a y + s n` (`a = sqrt(ᾱ_t)`,
`s = sqrt(1 - ᾱ_t)`), `x = z_t / a` is the clean video plus noise of `sigma = s / a`, and the
network's x_0 prediction is `D(x; sigma)`. The condition corrects that estimate
(`mp_layers.conditioning.ConditionedDenoiser`: the paper's
`x~_b = x^_b - (w_r a / 2) grad_{z_b} ||x_a - x^_a||^2` is `D~_b = D_b - (w_r / 2) grad_{x_b} ...`),
and the step then uses it as the sampler always does: the posterior mean at x~_0 (DDPM) or
`sqrt(ᾱ') x~_0 + sqrt(1 - ᾱ' - σ²) ε~` with `ε~` re-derived from x~_0 (DDIM). Thresholding
(`clip_denoised`) applies to the network's estimate, before the correction.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mp_layers.conditioning import Condition, ConditionalSampling, Sampler, conditioned_denoiser
from video_ddpm.schedules import alphas_cumprod_at
from video_ddpm.tensor_utils import randn, randn_like, timesteps_like, unnormalize_to_zero_to_one

__all__ = ["SamplingWithConditions", "sample_conditioned"]


def sample_conditioned(
    diffusion: Any,
    shape: tuple[int, int, int, int, int],
    times: list[tuple[int, int]],
    *,
    ancestral: bool,
    cond: Tensor | None,
    cond_scale: float,
    eta: float,
    clip_denoised: bool,
    generator: torch.Generator | None,
    condition: Condition | None,
    window: int | None,
    overlap: int | None,
) -> Tensor:
    """Sample videos of `shape` in [0, 1] over the `(t, t_next)` pairs `times` (-1 = data):
    ancestral DDPM steps (`ancestral`, t_next = t - 1) or DDIM steps of stochasticity `eta`."""
    betas = diffusion.betas
    device = betas.device
    x = randn(shape, device=device, dtype=betas.dtype, generator=generator)
    step: dict[str, Tensor] = {}

    def denoise(x_edm: Tensor, sigma: float, frames: slice) -> Tensor:
        """The network's x_0 estimate at the current step, on the frames of one window."""
        _, x_start = diffusion.model_predictions(
            x_edm * step["a"], step["t"], cond, cond_scale, clip_denoised
        )
        return x_start

    guided = conditioned_denoiser(denoise, shape, condition, window, overlap, generator, device)
    with torch.no_grad():  # reconstruction guidance turns gradients on where it needs them
        for t_int, t_next_int in times:
            t, t_next = timesteps_like(t_int, x), timesteps_like(t_next_int, x)
            alpha = alphas_cumprod_at(diffusion.alphas_cumprod, t, x.ndim)
            step.update(t=t, a=alpha.sqrt())
            sigma = float(((1 - alpha) / alpha).sqrt().flatten()[0])
            x_start = guided(x / alpha.sqrt(), sigma).to(x.dtype)
            if ancestral:
                mean, _, log_variance = diffusion.q_posterior(x_start, x, t)
                if t_int > 0:
                    mean = mean + (0.5 * log_variance).exp() * randn_like(x, generator)
                x = mean
                continue
            noise = diffusion.predict_noise_from_start(x, t, x_start)
            alpha_next = alphas_cumprod_at(diffusion.alphas_cumprod, t_next, x.ndim)
            std = eta * ((1 - alpha_next) / (1 - alpha) * (1 - alpha / alpha_next)).sqrt()
            c = (1 - alpha_next - std**2).clamp(min=0).sqrt()
            x = alpha_next.sqrt() * x_start + c * noise
            if eta > 0:
                x = x + std * randn_like(x, generator)
    return unnormalize_to_zero_to_one(x).clamp(0, 1)


class SamplingWithConditions(ConditionalSampling):
    """`GaussianDiffusion`'s `extend_video`, `interpolate_video`, `upsample_video` and
    `sample_long` (`mp_layers.conditioning.ConditionalSampling`) over its `sample`."""

    num_frames: int
    sample: Any

    @property
    def _window_frames(self) -> int:
        return self.num_frames

    def _conditional_sampler(self, **sample_kwargs: Any) -> Sampler:
        def sample(
            batch_size: int,
            frames: int,
            image_size: int | None,
            condition: Condition | None,
            window: int | None,
            overlap: int | None,
        ) -> Tensor:
            videos: Tensor = self.sample(
                batch_size=batch_size,
                num_frames=frames,
                image_size=image_size,
                condition=condition,
                window=window,
                overlap=overlap,
                **sample_kwargs,
            )
            return videos

        return sample
