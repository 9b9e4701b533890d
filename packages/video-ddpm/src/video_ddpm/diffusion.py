"""Gaussian diffusion for video (Ho et al. 2020, 2022), with DDPM and DDIM samplers.

Notation: `β_t` the noise schedule, `α_t = 1 - β_t`, `ᾱ_t = Π_{s<=t} α_s`, for `t = 0 … T-1`.

- Forward process: `q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I)`.
- Posterior: `q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I)` with
  `μ̃_t = β_t sqrt(ᾱ_{t-1}) / (1 - ᾱ_t) x_0 + (1 - ᾱ_{t-1}) sqrt(α_t) / (1 - ᾱ_t) x_t` and
  `β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)` (`ᾱ_{-1} = 1`).
- The network predicts ε ("pred_noise"), x_0 ("pred_x0") or v ("pred_v",
  `v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0`, Salimans & Ho 2022); `model_predictions` turns any of
  them into both ε and x_0.
- DDIM (Song et al. 2021): `x_{t'} = sqrt(ᾱ_{t'}) x_0 + sqrt(1 - ᾱ_{t'} - σ_t²) ε + σ_t z` with
  `σ_t = η sqrt((1 - ᾱ_{t'}) / (1 - ᾱ_t)) sqrt(1 - ᾱ_t / ᾱ_{t'})`; η = 1 and t' = t - 1 is the
  ancestral (DDPM) step, η = 0 is deterministic.

Videos enter and leave in [0, 1], shaped `(batch, channels, frames, height, width)`; the diffusion
works in [-1, 1]. Behaviour follows video-diffusion-pytorch 0.6.1 with its defects fixed: the null
condition is trained (condition dropout by default), the text pooling is the same in training and
sampling, and `interpolate` starts at step t, takes the condition and maps to and from [0, 1].
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from mp_layers.typecheck import typechecked

__all__ = [
    "GaussianDiffusion",
    "cosine_beta_schedule",
    "linear_beta_schedule",
    "sigmoid_beta_schedule",
]


Cond = Tensor | list[str] | tuple[str, ...] | None
TextEncoderLike = Callable[..., Any]

BETA_SCHEDULES = ("cosine", "linear", "sigmoid")
OBJECTIVES = ("pred_noise", "pred_x0", "pred_v")
LOSS_TYPES = ("l1", "l2")
SAMPLERS = ("ddpm", "ddim")
DEFAULT_TEXT_ENCODER = "bert-base-cased"
RANGE_TOLERANCE = 1e-3


# ---------------------------------------------------------------------------------------------
# schedules


def _betas_from_alphas_cumprod(alphas_cumprod: Tensor, max_beta: float) -> Tensor:
    """`β_t = 1 - ᾱ(t+1) / ᾱ(t)` from a continuous `ᾱ` sampled at T + 1 points, clipped."""
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(0, max_beta)


@typechecked
def cosine_beta_schedule(timesteps: int, s: float = 0.008) -> Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021): `ᾱ(t) = cos²((t/T + s) / (1 + s) · π/2)`.

    Returns float64 betas `(timesteps,)`, clipped to [0, 0.9999].
    """
    _check_timesteps(timesteps)
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    alphas_cumprod = torch.cos((x / timesteps + s) / (1 + s) * math.pi * 0.5) ** 2
    return _betas_from_alphas_cumprod(alphas_cumprod, 0.9999)


@typechecked
def linear_beta_schedule(timesteps: int) -> Tensor:
    """Linear schedule (Ho et al. 2020): β from `1e-4 · 1000/T` to `0.02 · 1000/T`.

    Returns float64 betas `(timesteps,)`. For T <= 20 the end point would reach 1 or more, so the
    betas are clipped to 0.9999 (as the cosine schedule is) to keep ᾱ positive.
    """
    _check_timesteps(timesteps)
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
    _check_timesteps(timesteps)
    if not start < end:
        raise ValueError(f"start, end: expected start < end, got {start}, {end}")
    if tau <= 0:
        raise ValueError(f"tau: expected a float > 0, got {tau}")
    t = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64) / timesteps
    v_start = torch.tensor(start / tau, dtype=torch.float64).sigmoid()
    v_end = torch.tensor(end / tau, dtype=torch.float64).sigmoid()
    alphas_cumprod = (v_end - ((t * (end - start) + start) / tau).sigmoid()) / (v_end - v_start)
    return _betas_from_alphas_cumprod(alphas_cumprod, 0.999)


_SCHEDULES: dict[str, Callable[[int], Tensor]] = {
    "cosine": cosine_beta_schedule,
    "linear": linear_beta_schedule,
    "sigmoid": sigmoid_beta_schedule,
}


# ---------------------------------------------------------------------------------------------
# small helpers


def _check_timesteps(timesteps: int) -> None:
    if timesteps < 1:
        raise ValueError(f"timesteps: expected an int >= 1, got {timesteps}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


def extract(a: Tensor, t: Tensor, ndim: int) -> Tensor:
    """Gather `a[t]` for a batch of timesteps `t (b,)`, shaped `(b, 1, …, 1)` with `ndim` dims."""
    return a.gather(-1, t).reshape(t.shape[0], *((1,) * (ndim - 1)))


def normalize_to_neg_one_to_one(x: Tensor) -> Tensor:
    """[0, 1] → [-1, 1]."""
    return x * 2 - 1


def unnormalize_to_zero_to_one(x: Tensor) -> Tensor:
    """[-1, 1] → [0, 1]."""
    return (x + 1) * 0.5


def _randn(
    shape: tuple[int, ...],
    *,
    device: torch.device,
    dtype: torch.dtype,
    generator: torch.Generator | None,
) -> Tensor:
    """Standard normal noise, drawn from `generator` (on its own device) when one is given."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return noise.to(device)


class _TextEncoderSlot:
    """Holds the text encoder outside the module tree, so its weights never enter `state_dict`,
    `parameters()` or an optimizer. Copies (e.g. an EMA model) share the one frozen encoder."""

    def __init__(self, encoder: TextEncoderLike | None) -> None:
        self.encoder = encoder

    def __deepcopy__(self, memo: dict[int, Any]) -> _TextEncoderSlot:
        return self


# ---------------------------------------------------------------------------------------------
# the diffusion model


class GaussianDiffusion(nn.Module):
    """Gaussian diffusion around a video denoiser (Ho et al. 2022).

    `denoise_fn(x, time, cond=None, null_cond_prob=0., **kwargs)` maps noisy videos `(b, c, f, h, w)`
    and timesteps `(b,)` to the objective's prediction of the same shape, and has
    `forward_with_cond_scale(x, time, cond=None, cond_scale=1.)` (classifier-free guidance).
    Optional attributes read from it: `channels`, `has_cond`, `cond_dim`, `use_bert_text_cond`,
    `downsample_factor`.

    Text conditions (a list of strings) are embedded by `text_encoder`: None (a BERT,
    `bert-base-cased`, created on first use when `denoise_fn.use_bert_text_cond`), a model name
    or path (a `video_ddpm.text.TextEncoder`, pooled with "cls" when `text_use_bert_cls`, else
    "mean"), or any callable `encoder(texts, device=...) -> (b, dim)`.
    """

    @typechecked
    def __init__(
        self,
        denoise_fn: nn.Module,
        *,
        image_size: int | tuple[int, int] | list[int],
        num_frames: int,
        text_use_bert_cls: bool = False,
        channels: int = 3,
        timesteps: int = 1000,
        loss_type: str = "l1",
        use_dynamic_thres: bool = False,
        dynamic_thres_percentile: float = 0.9,
        beta_schedule: str = "cosine",
        objective: str = "pred_noise",
        cond_drop_prob: float = 0.1,
        text_encoder: str | os.PathLike[str] | TextEncoderLike | None = None,
    ) -> None:
        super().__init__()
        height, width = _check_image_size(image_size)
        _check_timesteps(timesteps)
        _check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
        _check_choice("objective", objective, OBJECTIVES)
        _check_choice("loss_type", loss_type, LOSS_TYPES)
        if num_frames < 1:
            raise ValueError(f"num_frames: expected an int >= 1, got {num_frames}")
        if channels < 1:
            raise ValueError(f"channels: expected an int >= 1, got {channels}")
        if not 0 < dynamic_thres_percentile <= 1:
            raise ValueError(
                f"dynamic_thres_percentile: expected a float in (0, 1], got {dynamic_thres_percentile}"
            )
        if not 0 <= cond_drop_prob <= 1:
            raise ValueError(f"cond_drop_prob: expected a float in [0, 1], got {cond_drop_prob}")
        _check_network(denoise_fn, channels, (height, width))

        self.denoise_fn = denoise_fn
        self.image_size = image_size if isinstance(image_size, int) else (height, width)
        self.frame_shape = (height, width)
        self.num_frames = num_frames
        self.channels = channels
        self.num_timesteps = timesteps
        self.text_use_bert_cls = text_use_bert_cls
        self.loss_type = loss_type
        self.use_dynamic_thres = use_dynamic_thres
        self.dynamic_thres_percentile = float(dynamic_thres_percentile)
        self.beta_schedule = beta_schedule
        self.objective = objective
        self.cond_drop_prob = float(cond_drop_prob)
        self.text_encoder_name: str | None = None
        self._text_slot = _TextEncoderSlot(None)
        if isinstance(text_encoder, (str, os.PathLike)):
            self.text_encoder_name = os.fspath(text_encoder)
        else:
            self._text_slot.encoder = text_encoder
        self._register_schedule(_SCHEDULES[beta_schedule](timesteps))

    def _register_schedule(self, betas: Tensor) -> None:
        """Register the schedule's float64 quantities as float32 buffers (reference names)."""
        alphas = 1 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)
        posterior_variance = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
        buffers = {
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
            "posterior_mean_coef2": (1 - alphas_cumprod_prev)
            * alphas.sqrt()
            / (1 - alphas_cumprod),
        }
        for name, value in buffers.items():
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

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
    ) -> GaussianDiffusion:
        """`video_ddpm.load_pretrained`: a model saved by `save_pretrained`, `video-ddpm train`
        (a run's checkpoint folder holds weights, its run folder `config.json`) or converted from
        the reference by `video-ddpm convert`."""
        from video_ddpm.pretrained import load_pretrained

        return load_pretrained(folder, map_location=map_location)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """`video_ddpm.save_pretrained(self, folder)`: `model.safetensors` + `config.json`."""
        from video_ddpm.pretrained import save_pretrained

        return save_pretrained(self, folder)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's plain arguments, JSON-serialisable (`GaussianDiffusion(net, **config)`)."""
        config: dict[str, Any] = {
            "image_size": self.image_size
            if isinstance(self.image_size, int)
            else list(self.image_size),
            "num_frames": self.num_frames,
            "text_use_bert_cls": self.text_use_bert_cls,
            "channels": self.channels,
            "timesteps": self.num_timesteps,
            "loss_type": self.loss_type,
            "use_dynamic_thres": self.use_dynamic_thres,
            "dynamic_thres_percentile": self.dynamic_thres_percentile,
            "beta_schedule": self.beta_schedule,
            "objective": self.objective,
            "cond_drop_prob": self.cond_drop_prob,
        }
        if self.text_encoder_name is not None:
            config["text_encoder"] = self.text_encoder_name
        return config

    @property
    def text_encoder(self) -> TextEncoderLike | None:
        """The text encoder (None until first needed when it is created lazily)."""
        return self._text_slot.encoder

    # -----------------------------------------------------------------------------------------
    # forward process and conversions

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

    def _threshold(self, x_start: Tensor) -> Tensor:
        """Static clamp to [-1, 1], or dynamic (Imagen): `s = max(1, quantile_p(|x_0|))` per
        sample, `x_0 = clamp(x_0, -s, s) / s`."""
        if not self.use_dynamic_thres:
            return x_start.clamp(-1, 1)
        flat = rearrange(x_start, "b ... -> b (...)").abs().float()
        s = torch.quantile(flat, self.dynamic_thres_percentile, dim=-1).clamp(min=1)
        s = s.to(x_start.dtype).view(-1, *((1,) * (x_start.ndim - 1)))
        return x_start.clamp(-s, s) / s

    @typechecked
    def model_predictions(
        self,
        x: Tensor,
        t: Tensor,
        cond: Tensor | None = None,
        cond_scale: float = 1.0,
        clip_denoised: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """The network's output at `x (b, c, f, h, w)`, `t (b,)` as `(pred_noise, x_start)`.

        With `clip_denoised`, x_start is thresholded and ε re-derived from it, so the pair stays
        consistent with `x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε`.
        """
        guided = cast(Callable[..., Tensor], self.denoise_fn.forward_with_cond_scale)
        out = guided(x, t, cond=cond, cond_scale=cond_scale)
        if self.objective == "pred_noise":
            pred_noise, x_start = out, self.predict_start_from_noise(x, t, out)
        elif self.objective == "pred_x0":
            pred_noise, x_start = self.predict_noise_from_start(x, t, out), out
        else:
            x_start = self.predict_start_from_v(x, t, out)
            pred_noise = self.predict_noise_from_start(x, t, x_start)
        if clip_denoised:
            x_start = self._threshold(x_start)
            pred_noise = self.predict_noise_from_start(x, t, x_start)
        return pred_noise, x_start

    # -----------------------------------------------------------------------------------------
    # ancestral (DDPM) sampling

    @typechecked
    def p_mean_variance(
        self,
        x: Tensor,
        t: Tensor,
        clip_denoised: bool,
        cond: Tensor | None = None,
        cond_scale: float = 1.0,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and log variance of `p(x_{t-1} | x_t)`: the posterior at the predicted x_0."""
        _, x_start = self.model_predictions(x, t, cond, cond_scale, clip_denoised)
        return self.q_posterior(x_start, x, t)

    @typechecked
    def p_sample(
        self,
        x: Tensor,
        t: Tensor | int,
        cond: Tensor | None = None,
        cond_scale: float = 1.0,
        clip_denoised: bool = True,
        *,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """One ancestral step `x_{t-1} = μ + exp(½ log β̃_t) z` (no noise where t == 0).

        x `(b, c, f, h, w)` in [-1, 1]; t an int or `(b,)` long tensor.
        """
        t = self._time(t, x)
        with torch.inference_mode():
            mean, _, log_variance = self.p_mean_variance(x, t, clip_denoised, cond, cond_scale)
            if noise is None:
                noise = _randn(tuple(x.shape), device=x.device, dtype=x.dtype, generator=generator)
            nonzero = (t != 0).to(x.dtype).view(-1, *((1,) * (x.ndim - 1)))
            return mean + nonzero * (0.5 * log_variance).exp() * noise

    @typechecked
    def p_sample_loop(
        self,
        shape: tuple[int, int, int, int, int],
        cond: Cond = None,
        cond_scale: float = 1.0,
        *,
        clip_denoised: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Ancestral sampling over all T steps from pure noise of `shape`; returns [0, 1] videos."""
        cond = self._embed_cond(cond, self.betas.device, batch=shape[0])
        with torch.inference_mode():
            x = self._initial_noise(shape, generator)
            for i in reversed(range(self.num_timesteps)):
                x = self.p_sample(x, i, cond, cond_scale, clip_denoised, generator=generator)
            return unnormalize_to_zero_to_one(x).clamp(0, 1)

    # -----------------------------------------------------------------------------------------
    # DDIM sampling

    def _alpha_cumprod_at(self, t: Tensor, ndim: int) -> Tensor:
        """`ᾱ_t` shaped for broadcasting, with `ᾱ_{-1} = 1`."""
        alpha = extract(self.alphas_cumprod, t.clamp(min=0), ndim)
        is_data = (t < 0).view(-1, *((1,) * (ndim - 1)))
        return torch.where(is_data, torch.ones_like(alpha), alpha)

    @typechecked
    def ddim_step_mean_std(
        self,
        x: Tensor,
        t: Tensor,
        t_next: Tensor,
        eta: float = 0.0,
        cond: Tensor | None = None,
        cond_scale: float = 1.0,
        clip_denoised: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of the DDIM step from `t` to `t_next` (`(b,)`, -1 = data).

        `mean = sqrt(ᾱ') x_0 + sqrt(1 - ᾱ' - σ²) ε`,
        `σ = η sqrt((1 - ᾱ') / (1 - ᾱ)) sqrt(1 - ᾱ / ᾱ')` where ᾱ' = ᾱ_{t_next}.
        """
        pred_noise, x_start = self.model_predictions(x, t, cond, cond_scale, clip_denoised)
        alpha = self._alpha_cumprod_at(t, x.ndim)
        alpha_next = self._alpha_cumprod_at(t_next, x.ndim)
        sigma = eta * ((1 - alpha_next) / (1 - alpha) * (1 - alpha / alpha_next)).sqrt()
        c = (1 - alpha_next - sigma**2).clamp(min=0).sqrt()
        return alpha_next.sqrt() * x_start + c * pred_noise, sigma

    def _ddim_time_pairs(self, steps: int) -> list[tuple[int, int]]:
        """`(t, t_next)` pairs from `linspace(-1, T - 1, steps + 1)` reversed (-1 = data)."""
        times = torch.linspace(-1, self.num_timesteps - 1, steps + 1, dtype=torch.float64)
        ints = list(reversed(times.floor().long().tolist()))
        return list(itertools.pairwise(ints))

    @typechecked
    def ddim_sample(
        self,
        shape: tuple[int, int, int, int, int],
        cond: Cond = None,
        cond_scale: float = 1.0,
        steps: int | None = None,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        *,
        clip_denoised: bool = True,
    ) -> Tensor:
        """DDIM sampling in `steps` (1 … T, default T) steps; returns [0, 1] videos of `shape`.

        η = 0 is deterministic given the generator; η = 1 with steps = T is ancestral sampling.
        """
        steps = self._check_steps(steps)
        if eta < 0:
            raise ValueError(f"eta: expected a float >= 0, got {eta}")
        cond = self._embed_cond(cond, self.betas.device, batch=shape[0])
        with torch.inference_mode():
            x = self._initial_noise(shape, generator)
            for t, t_next in self._ddim_time_pairs(steps):
                time, time_next = self._time(t, x), self._time(t_next, x)
                mean, sigma = self.ddim_step_mean_std(
                    x, time, time_next, eta, cond, cond_scale, clip_denoised
                )
                if eta == 0:
                    x = mean
                    continue
                noise = _randn(tuple(x.shape), device=x.device, dtype=x.dtype, generator=generator)
                x = mean + sigma * noise
            return unnormalize_to_zero_to_one(x).clamp(0, 1)

    # -----------------------------------------------------------------------------------------
    # public sampling entry points

    @typechecked
    def sample(
        self,
        cond: Cond = None,
        cond_scale: float = 1.0,
        batch_size: int = 16,
        *,
        sampler: str = "ddpm",
        steps: int | None = None,
        eta: float = 0.0,
        num_frames: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample videos `(b, channels, num_frames, h, w)` in [0, 1].

        The batch size is `len(cond)` when a condition is given, else `batch_size`. "ddpm" runs all
        T ancestral steps (steps must be None or T, eta 0); "ddim" runs `steps` (default T) DDIM
        steps with stochasticity `eta`. `num_frames` defaults to the training frame count and may
        exceed it.
        """
        _check_choice("sampler", sampler, SAMPLERS)
        if sampler == "ddpm" and steps not in (None, self.num_timesteps):
            raise ValueError(
                f"steps: the 'ddpm' sampler runs all {self.num_timesteps} steps, got {steps}; "
                "use sampler='ddim' for fewer"
            )
        if sampler == "ddpm" and eta != 0:
            raise ValueError(f"eta: applies to sampler='ddim' only, got eta={eta} with 'ddpm'")
        steps = self._check_steps(steps)
        frames = self.num_frames if num_frames is None else num_frames
        if frames < 1 or batch_size < 1:
            raise ValueError(
                f"num_frames, batch_size: expected ints >= 1, got {frames}, {batch_size}"
            )
        embedded = self._embed_cond(cond, self.betas.device)
        batch = embedded.shape[0] if embedded is not None else batch_size
        shape = (batch, self.channels, frames, *self.frame_shape)
        if sampler == "ddpm":
            return self.p_sample_loop(shape, embedded, cond_scale, generator=generator)
        return self.ddim_sample(shape, embedded, cond_scale, steps, eta, generator)

    @typechecked
    def interpolate(
        self,
        x1: Tensor,
        x2: Tensor,
        t: int | None = None,
        lam: float = 0.5,
        cond: Cond = None,
        *,
        cond_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Interpolate two videos `(b, c, f, h, w)` in [0, 1] through the latent at step t.

        Both are noised to `x_t` (default t = T - 1), mixed `(1 - lam) x_t¹ + lam x_t²`, then
        denoised by ancestral steps t, t-1, …, 0. Returns [0, 1] videos.
        """
        self._check_videos("x1", x1, frames=None)
        self._check_videos("x2", x2, frames=None)
        if x1.shape != x2.shape:
            raise ValueError(
                f"x1, x2: expected the same shape, got {tuple(x1.shape)}, {tuple(x2.shape)}"
            )
        t = self.num_timesteps - 1 if t is None else t
        if not 0 <= t < self.num_timesteps:
            raise ValueError(f"t: expected an int in [0, {self.num_timesteps - 1}], got {t}")
        if not 0 <= lam <= 1:
            raise ValueError(f"lam: expected a float in [0, 1], got {lam}")
        embedded = self._embed_cond(cond, x1.device, batch=x1.shape[0])
        with torch.inference_mode():
            time = self._time(t, x1)
            noised = [
                self.q_sample(normalize_to_neg_one_to_one(x), time, self._noise_like(x, generator))
                for x in (x1, x2)
            ]
            x = (1 - lam) * noised[0] + lam * noised[1]
            for i in reversed(range(t + 1)):
                x = self.p_sample(x, i, embedded, cond_scale, generator=generator)
            return unnormalize_to_zero_to_one(x).clamp(0, 1)

    # -----------------------------------------------------------------------------------------
    # training

    @typechecked
    def forward(
        self,
        videos: Tensor,
        cond: Cond = None,
        *,
        noise: Tensor | None = None,
        t: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        """Training loss (scalar) for videos `(b, channels, num_frames, h, w)` in [0, 1].

        `t ~ U{0, …, T-1}`, `x_t = q_sample(x_0, t, ε)`; the loss ("l1" or "l2", mean over all
        elements) compares the network's output with ε, x_0 or v per the objective. A conditional
        network gets `null_cond_prob=cond_drop_prob` unless the caller passes one; other kwargs
        (e.g. `focus_present_mask`, `prob_focus_present`) go to the network.
        """
        self._check_videos("videos", videos, frames=self.num_frames)
        b = videos.shape[0]
        if t is None:
            t = torch.randint(0, self.num_timesteps, (b,), device=videos.device)
        else:
            self._check_t(t, b)
        if noise is not None and noise.shape != videos.shape:
            raise ValueError(
                f"noise: expected shape {tuple(videos.shape)}, got {tuple(noise.shape)}"
            )
        x_start = normalize_to_neg_one_to_one(videos)
        noise = torch.randn_like(x_start) if noise is None else noise
        x_noisy = self.q_sample(x_start, t, noise)
        embedded = self._embed_cond(cond, videos.device, batch=b)
        if getattr(self.denoise_fn, "has_cond", False):
            kwargs.setdefault("null_cond_prob", self.cond_drop_prob)
        out = self.denoise_fn(x_noisy, t, cond=embedded, **kwargs)
        target = self._target(x_start, t, noise)
        if self.loss_type == "l1":
            return F.l1_loss(out.to(target.dtype), target)
        return F.mse_loss(out.to(target.dtype), target)

    def _target(self, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        if self.objective == "pred_noise":
            return noise
        if self.objective == "pred_x0":
            return x_start
        return self.predict_v(x_start, t, noise)

    # -----------------------------------------------------------------------------------------
    # conditions

    def _resolve_text_encoder(self) -> TextEncoderLike:
        """The text encoder, created on first use from a name (never at construction)."""
        if self._text_slot.encoder is not None:
            return self._text_slot.encoder
        name = self.text_encoder_name
        if name is None and getattr(self.denoise_fn, "use_bert_text_cond", False):
            name = DEFAULT_TEXT_ENCODER
        if name is None:
            raise ValueError(
                "cond: got a list of strings, but no text_encoder was given and "
                "denoise_fn.use_bert_text_cond is not set; expected a tensor (b, cond_dim)"
            )
        from video_ddpm.text import TextEncoder  # lazy: transformers is an optional extra

        pooling = "cls" if self.text_use_bert_cls else "mean"
        with torch.inference_mode(False):
            self._text_slot.encoder = TextEncoder(name, pooling=pooling)
        return self._text_slot.encoder

    def _embed_cond(
        self, cond: Cond, device: torch.device, batch: int | None = None
    ) -> Tensor | None:
        """The condition as a float tensor `(b, cond_dim)` on `device`; texts are embedded."""
        if cond is None:
            return None
        if not getattr(self.denoise_fn, "has_cond", True):
            raise ValueError("cond: the network is unconditional (has_cond=False), got a condition")
        embedded = cond if isinstance(cond, Tensor) else self._embed_text(cond, device)
        self._check_cond_tensor(embedded, batch)
        return embedded.to(device)

    def _embed_text(self, texts: list[str] | tuple[str, ...], device: torch.device) -> Tensor:
        """Embed texts with the (frozen) text encoder, without gradients: `(len(texts), dim)`."""
        if not texts or not all(isinstance(text, str) for text in texts):
            raise TypeError(f"cond: expected a non-empty list of str, got {texts!r}")
        encoder = self._resolve_text_encoder()
        with torch.no_grad():
            embedded = encoder(list(texts), device=device)
        if not isinstance(embedded, Tensor) or embedded.ndim != 2 or len(embedded) != len(texts):
            given = tuple(embedded.shape) if isinstance(embedded, Tensor) else type(embedded)
            raise ValueError(f"text_encoder: expected a tensor ({len(texts)}, dim), got {given}")
        return embedded

    def _check_cond_tensor(self, cond: Tensor, batch: int | None) -> None:
        cond_dim = getattr(self.denoise_fn, "cond_dim", None)
        if not cond.is_floating_point() or cond.ndim != 2:
            raise ValueError(
                f"cond: expected a float tensor (b, cond_dim), got {cond.dtype} {tuple(cond.shape)}"
            )
        if cond_dim is not None and cond.shape[-1] != cond_dim:
            raise ValueError(
                f"cond: expected embedding width denoise_fn.cond_dim={cond_dim}, "
                f"got {cond.shape[-1]}"
            )
        if batch is not None and cond.shape[0] != batch:
            raise ValueError(f"cond: expected batch size {batch}, got {cond.shape[0]}")

    # -----------------------------------------------------------------------------------------
    # validation and small utilities

    def _check_videos(self, name: str, videos: Tensor, *, frames: int | None) -> None:
        """Float `(b, channels, frames, h, w)` in [0, 1] (within 1e-3)."""
        c, (h, w) = self.channels, self.frame_shape
        f = "f" if frames is None else frames
        expected = f"(b, {c}, {f}, {h}, {w})"
        if not videos.is_floating_point():
            raise TypeError(f"{name}: expected a float video tensor {expected}, got {videos.dtype}")
        shape = tuple(videos.shape)
        ok = len(shape) == 5 and shape[0] >= 1 and shape[1] == c and shape[3:] == (h, w)
        if not ok or (frames is not None and shape[2] != frames):
            raise ValueError(f"{name}: expected video of shape {expected}, got {shape}")
        low, high = torch.stack(torch.aminmax(videos.detach())).tolist()
        if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            raise ValueError(f"{name}: expected values in [0, 1], got [{low:.4g}, {high:.4g}]")

    def _check_t(self, t: Tensor, batch: int) -> None:
        if t.shape != (batch,) or t.is_floating_point() or t.is_complex():
            raise ValueError(
                f"t: expected an integer tensor ({batch},), got {t.dtype} {tuple(t.shape)}"
            )
        if t.min().item() < 0 or t.max().item() >= self.num_timesteps:
            raise ValueError(
                f"t: expected values in [0, {self.num_timesteps - 1}], got {t.tolist()}"
            )

    def _check_steps(self, steps: int | None) -> int:
        steps = self.num_timesteps if steps is None else steps
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"steps: expected an int in [1, {self.num_timesteps}], got {steps}")
        return steps

    def _time(self, t: Tensor | int, x: Tensor) -> Tensor:
        """Timesteps as a `(b,)` long tensor on x's device."""
        if isinstance(t, Tensor):
            return t.to(device=x.device, dtype=torch.long).expand(x.shape[0])
        return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)

    def _initial_noise(self, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        return _randn(shape, device=self.betas.device, dtype=self.betas.dtype, generator=generator)

    def _noise_like(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return _randn(tuple(x.shape), device=x.device, dtype=x.dtype, generator=generator)


def _check_image_size(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or any(s < 1 for s in size):
        raise ValueError(f"image_size: expected an int or (height, width) >= 1, got {image_size!r}")
    return size[0], size[1]


def _check_network(denoise_fn: nn.Module, channels: int, size: tuple[int, int]) -> None:
    """Channels and down-sampling of the network must fit the diffusion's videos."""
    net_channels = getattr(denoise_fn, "channels", None)
    if net_channels is not None and net_channels != channels:
        raise ValueError(
            f"channels: expected denoise_fn.channels={net_channels}, got channels={channels}"
        )
    factor = getattr(denoise_fn, "downsample_factor", 1)
    if any(s % factor for s in size):
        raise ValueError(
            f"image_size: expected a multiple of the network's downsample_factor={factor}, "
            f"got {size}"
        )
    if not callable(getattr(denoise_fn, "forward_with_cond_scale", None)):
        raise TypeError(
            f"denoise_fn: expected a network with forward_with_cond_scale, got {type(denoise_fn).__name__}"
        )
