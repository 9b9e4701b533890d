"""`GaussianForwardProcess`: the forward process of a noise schedule and its closed forms.

Notation (`video_ddpm.schedules`): `β_t` the noise schedule, `α_t = 1 - β_t`,
`ᾱ_t = Π_{s<=t} α_s`, for `t = 0 … T-1`.

- Forward process: `q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I)`.
- Posterior: `q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I)` with
  `μ̃_t = β_t sqrt(ᾱ_{t-1}) / (1 - ᾱ_t) x_0 + (1 - ᾱ_{t-1}) sqrt(α_t) / (1 - ᾱ_t) x_t` and
  `β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)` (`ᾱ_{-1} = 1`).
- Conversions between the noise ε, the data x_0 and v (`v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0`,
  Salimans & Ho 2022), given x_t.

No network: `video_ddpm.GaussianDiffusion` is this process around a denoiser.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mp_layers.typecheck import typechecked
from video_ddpm.schedules import extract, schedule_buffers

__all__ = ["GaussianForwardProcess"]


class GaussianForwardProcess(nn.Module):
    """The Gaussian forward process of the schedule `betas (T,)` (float64, as the schedules of
    `video_ddpm.schedules` return them), with its closed forms; every tensor `(b, …)` with
    timesteps `t (b,)`.

    The schedule's quantities (`schedule_buffers`) are float32 buffers under the reference's
    names, so they are saved with the model and move with it.
    """

    @typechecked
    def __init__(self, *, betas: Tensor) -> None:
        super().__init__()
        for name, value in schedule_buffers(betas).items():
            self.register_buffer(name, value.to(torch.float32))

    # the schedule's buffers, typed for mypy
    betas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    log_one_minus_alphas_cumprod: Tensor
    sqrt_recip_alphas_cumprod: Tensor
    sqrt_recipm1_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor

    @typechecked
    def q_mean_variance(self, x_start: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and log variance of `q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I)`."""
        mean = extract(self.sqrt_alphas_cumprod, t, x_start.ndim) * x_start
        variance = extract(1 - self.alphas_cumprod, t, x_start.ndim)
        log_variance = extract(self.log_one_minus_alphas_cumprod, t, x_start.ndim)
        return mean, variance, log_variance

    @typechecked
    def q_sample(self, x_start: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """Sample `x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε`; x_start `(b, …)`, t `(b,)`."""
        noise = torch.randn_like(x_start) if noise is None else noise
        return (
            extract(self.sqrt_alphas_cumprod, t, x_start.ndim) * x_start
            + extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.ndim) * noise
        )

    @typechecked
    def q_posterior(self, x_start: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log variance of `q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I)`.

        `μ̃_t = coef1_t x_0 + coef2_t x_t`, `β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)`.
        """
        mean = (
            extract(self.posterior_mean_coef1, t, x_t.ndim) * x_start
            + extract(self.posterior_mean_coef2, t, x_t.ndim) * x_t
        )
        variance = extract(self.posterior_variance, t, x_t.ndim)
        log_variance = extract(self.posterior_log_variance_clipped, t, x_t.ndim)
        return mean, variance, log_variance

    @typechecked
    def predict_start_from_noise(self, x_t: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """`x_0 = sqrt(1/ᾱ_t) x_t - sqrt(1/ᾱ_t - 1) ε`."""
        return (
            extract(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
            - extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * noise
        )

    @typechecked
    def predict_noise_from_start(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """`ε = (sqrt(1/ᾱ_t) x_t - x_0) / sqrt(1/ᾱ_t - 1)`."""
        return (extract(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t - x0) / extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim
        )

    @typechecked
    def predict_v(self, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """`v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0` (Salimans & Ho 2022)."""
        return (
            extract(self.sqrt_alphas_cumprod, t, x_start.ndim) * noise
            - extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.ndim) * x_start
        )

    @typechecked
    def predict_start_from_v(self, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """`x_0 = sqrt(ᾱ_t) x_t - sqrt(1 - ᾱ_t) v`."""
        return (
            extract(self.sqrt_alphas_cumprod, t, x_t.ndim) * x_t
            - extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.ndim) * v
        )
