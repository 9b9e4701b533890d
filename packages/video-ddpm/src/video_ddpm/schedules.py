"""Noise schedules of the Gaussian diffusion and the quantities derived from them.

Notation: `β_t` the noise schedule, `α_t = 1 - β_t`, `ᾱ_t = Π_{s<=t} α_s`, for `t = 0 … T-1`
(and `ᾱ_{-1} = 1`, the data). A schedule returns float64 betas `(T,)`; `schedule_buffers` derives
from them every per-step coefficient the forward process, the posterior and the samplers use.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from mp_layers.typecheck import typechecked

__all__ = [
    "BETA_SCHEDULES",
    "SCHEDULES",
    "alphas_cumprod_at",
    "cosine_beta_schedule",
    "extract",
    "linear_beta_schedule",
    "schedule_buffers",
    "sigmoid_beta_schedule",
]

BETA_SCHEDULES = ("cosine", "linear", "sigmoid")


def check_timesteps(timesteps: int) -> None:
    """ValueError unless `timesteps >= 1`."""
    if timesteps < 1:
        raise ValueError(f"timesteps: expected an int >= 1, got {timesteps}")


def _betas_from_alphas_cumprod(alphas_cumprod: Tensor, max_beta: float) -> Tensor:
    """`β_t = 1 - ᾱ(t+1) / ᾱ(t)` from a continuous `ᾱ` sampled at T + 1 points, clipped."""
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(0, max_beta)


# ---------------------------------------------------------------------------------------------
# beta schedules


@typechecked
def cosine_beta_schedule(timesteps: int, s: float = 0.008) -> Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021): `ᾱ(t) = cos²((t/T + s) / (1 + s) · π/2)`.

    Returns float64 betas `(timesteps,)`, clipped to [0, 0.9999].
    """
    check_timesteps(timesteps)
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    alphas_cumprod = torch.cos((x / timesteps + s) / (1 + s) * math.pi * 0.5) ** 2
    return _betas_from_alphas_cumprod(alphas_cumprod, 0.9999)


@typechecked
def linear_beta_schedule(timesteps: int) -> Tensor:
    """Linear schedule (Ho et al. 2020): β from `1e-4 · 1000/T` to `0.02 · 1000/T`.

    Returns float64 betas `(timesteps,)`. For T <= 20 the end point would reach 1 or more, so the
    betas are clipped to 0.9999 (as the cosine schedule is) to keep ᾱ positive.
    """
    check_timesteps(timesteps)
    scale = 1000 / timesteps
    betas = torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
    return betas.clamp(max=0.9999)


@typechecked
def sigmoid_beta_schedule(
    timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0
) -> Tensor:
    """Sigmoid schedule (Chen 2023): `ᾱ(t) ∝ σ(end/τ) - σ(((end - start) t/T + start) / τ)`.

    Returns float64 betas `(timesteps,)`, clipped to [0, 0.999].
    """
    check_timesteps(timesteps)
    if not start < end:
        raise ValueError(f"start, end: expected start < end, got {start}, {end}")
    if tau <= 0:
        raise ValueError(f"tau: expected a float > 0, got {tau}")
    t = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64) / timesteps
    v_start = torch.tensor(start / tau, dtype=torch.float64).sigmoid()
    v_end = torch.tensor(end / tau, dtype=torch.float64).sigmoid()
    alphas_cumprod = (v_end - ((t * (end - start) + start) / tau).sigmoid()) / (v_end - v_start)
    return _betas_from_alphas_cumprod(alphas_cumprod, 0.999)


SCHEDULES: dict[str, Callable[[int], Tensor]] = {
    "cosine": cosine_beta_schedule,
    "linear": linear_beta_schedule,
    "sigmoid": sigmoid_beta_schedule,
}
"""Name (`GaussianDiffusion(beta_schedule=...)`) -> schedule, in `BETA_SCHEDULES` order."""


# ---------------------------------------------------------------------------------------------
# derived quantities


def schedule_buffers(betas: Tensor) -> dict[str, Tensor]:
    """Every per-step quantity of the schedule `betas (T,)`, each `(T,)` in betas' dtype.

    The names are the reference's buffer names: `ᾱ_t`, `ᾱ_{t-1}`, `sqrt(ᾱ_t)`,
    `sqrt(1 - ᾱ_t)`, `log(1 - ᾱ_t)`, `sqrt(1/ᾱ_t)`, `sqrt(1/ᾱ_t - 1)`, and the posterior
    `q(x_{t-1} | x_t, x_0) = N(coef1_t x_0 + coef2_t x_t, β̃_t I)` with
    `β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)`, `coef1_t = β_t sqrt(ᾱ_{t-1}) / (1 - ᾱ_t)`,
    `coef2_t = (1 - ᾱ_{t-1}) sqrt(α_t) / (1 - ᾱ_t)`.
    """
    alphas = 1 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    alphas_cumprod_prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)
    posterior_variance = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
    return {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1 - alphas_cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1 / alphas_cumprod - 1).sqrt(),
        "posterior_variance": posterior_variance,
        # clipped: the posterior variance is 0 at t = 0
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * alphas_cumprod_prev.sqrt() / (1 - alphas_cumprod),
        "posterior_mean_coef2": (1 - alphas_cumprod_prev) * alphas.sqrt() / (1 - alphas_cumprod),
    }


def extract(a: Tensor, t: Tensor, ndim: int) -> Tensor:
    """Gather `a[t]` for a batch of timesteps `t (b,)`, shaped `(b, 1, …, 1)` with `ndim` dims."""
    return a.gather(-1, t).reshape(t.shape[0], *((1,) * (ndim - 1)))


def alphas_cumprod_at(alphas_cumprod: Tensor, t: Tensor, ndim: int) -> Tensor:
    """`ᾱ_t` for timesteps `t (b,)` shaped `(b, 1, …, 1)`, with `ᾱ_{-1} = 1` where `t < 0`."""
    alpha = extract(alphas_cumprod, t.clamp(min=0), ndim)
    is_data = (t < 0).view(-1, *((1,) * (ndim - 1)))
    return torch.where(is_data, torch.ones_like(alpha), alpha)
