"""`GaussianDiffusion`: Gaussian diffusion for video (Ho et al. 2020, 2022) around a denoiser.

The forward process `q` of the schedule and its closed forms are `GaussianForwardProcess`'s
(`video_ddpm.forward_process`, the notation too). This module adds the network: its predictions
(ε "pred_noise", x_0 "pred_x0" or v "pred_v", turned into both ε and x_0 by `model_predictions`),
the single sampling steps (ancestral and DDIM), the sampling entry points (whose loops are
`video_ddpm.sampling`'s functions), the conditions (`video_ddpm.conditioning`) and the training
loss.

Videos enter and leave in [0, 1], shaped `(batch, channels, frames, height, width)`; the diffusion
works in [-1, 1]. Behaviour follows video-diffusion-pytorch 0.6.1 with its defects fixed: the null
condition is trained (condition dropout by default), the text pooling is the same in training and
sampling, and `interpolate` starts at step t, takes the condition and maps to and from [0, 1].
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from mp_layers.conditioning import Condition
from mp_layers.typecheck import typechecked
from video_ddpm.checks import check_choice, check_image_size, check_network, check_t, check_videos
from video_ddpm.conditional_sampling import SamplingWithConditions
from video_ddpm.conditioning import (
    Cond,
    TextEncoderLike,
    TextEncoderSlot,
    check_cond,
    check_cond_tensor,
    embed_texts,
    guided_output,
    resolve_text_encoder,
)
from video_ddpm.forward_process import GaussianForwardProcess
from video_ddpm.sampling import SAMPLER_FUNCTIONS, check_sampler_options, sample_ddim, sample_ddpm
from video_ddpm.saving import PretrainedMixin
from video_ddpm.schedules import BETA_SCHEDULES, SCHEDULES, alphas_cumprod_at, check_timesteps
from video_ddpm.tensor_utils import (
    normalize_to_neg_one_to_one,
    randn_like,
    timesteps_like,
    unnormalize_to_zero_to_one,
)

__all__ = ["LOSS_TYPES", "OBJECTIVES", "GaussianDiffusion"]

OBJECTIVES = ("pred_noise", "pred_x0", "pred_v")
LOSS_TYPES = ("l1", "l2")


class GaussianDiffusion(GaussianForwardProcess, PretrainedMixin, SamplingWithConditions):
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

    `save_pretrained(folder)` / `from_pretrained(folder_or_repo_id)` / `push_to_hub(repo_id)`
    (`video_ddpm.saving.PretrainedMixin`, on `mp_layers.hub`): the network is saved in the
    subfolder `denoise_fn/`; 0.1.0 folders load.

    Conditioning and long videos (`mp_layers.conditioning.ConditionalSampling`, keyword
    arguments of `sample` passed through, as in karras-unet3d): `extend_video`,
    `interpolate_video`, `upsample_video`, `sample_long`; or `sample(condition=...,
    window=...)` directly.
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
        height, width = check_image_size(image_size)
        check_timesteps(timesteps)
        check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
        check_choice("objective", objective, OBJECTIVES)
        check_choice("loss_type", loss_type, LOSS_TYPES)
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
        check_network(denoise_fn, channels, (height, width))
        super().__init__(betas=SCHEDULES[beta_schedule](timesteps))

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
        self._text_slot = TextEncoderSlot(None)
        if isinstance(text_encoder, (str, os.PathLike)):
            self.text_encoder_name = os.fspath(text_encoder)
        else:
            self._text_slot.encoder = text_encoder

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
    # predictions

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
        out = guided_output(self.denoise_fn, x, t, cond, cond_scale)
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
    # single sampling steps

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
        t = timesteps_like(t, x)
        with torch.inference_mode():
            mean, _, log_variance = self.p_mean_variance(x, t, clip_denoised, cond, cond_scale)
            if noise is None:
                noise = randn_like(x, generator)
            nonzero = (t != 0).to(x.dtype).view(-1, *((1,) * (x.ndim - 1)))
            return mean + nonzero * (0.5 * log_variance).exp() * noise

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
        alpha = alphas_cumprod_at(self.alphas_cumprod, t, x.ndim)
        alpha_next = alphas_cumprod_at(self.alphas_cumprod, t_next, x.ndim)
        sigma = eta * ((1 - alpha_next) / (1 - alpha) * (1 - alpha / alpha_next)).sqrt()
        c = (1 - alpha_next - sigma**2).clamp(min=0).sqrt()
        return alpha_next.sqrt() * x_start + c * pred_noise, sigma

    # -----------------------------------------------------------------------------------------
    # sampling (the loops are video_ddpm.sampling's)

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
        """Ancestral sampling over all T steps from pure noise of `shape`; returns [0, 1] videos
        (`video_ddpm.sampling.sample_ddpm`)."""
        return sample_ddpm(
            self,
            shape,
            cond=cond,
            cond_scale=cond_scale,
            clip_denoised=clip_denoised,
            generator=generator,
        )

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
        """DDIM sampling in `steps` (1 … T, default T) steps; returns [0, 1] videos of `shape`
        (`video_ddpm.sampling.sample_ddim`).

        η = 0 is deterministic given the generator; η = 1 with steps = T is ancestral sampling.
        """
        return sample_ddim(
            self,
            shape,
            cond=cond,
            cond_scale=cond_scale,
            steps=steps,
            eta=eta,
            clip_denoised=clip_denoised,
            generator=generator,
        )

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
        image_size: int | None = None,
        condition: Condition | None = None,
        window: int | None = None,
        overlap: int | None = None,
    ) -> Tensor:
        """Sample videos `(b, channels, num_frames, h, w)` in [0, 1].

        The batch size is `len(cond)` when a condition is given, else `batch_size`. "ddpm" runs all
        T ancestral steps (steps must be None or T, eta 0); "ddim" runs `steps` (default T) DDIM
        steps with stochasticity `eta`. `num_frames` defaults to the training frame count and may
        exceed it; `image_size` (square frames) defaults to the training size.

        `condition` (`mp_layers.conditioning.Condition`, videos in [0, 1]): known frames or
        pixels kept and the rest generated by replacement or reconstruction guidance, or a
        low-resolution video to match; with classifier-free guidance at the same time.
        `window`: denoise `window` frames at a time, windows sharing `overlap` frames (default
        `window // 2`) averaged at every step (MultiDiffusion), for longer clips.
        """
        steps = check_sampler_options(sampler, steps, eta, self.num_timesteps)
        frames = self.num_frames if num_frames is None else num_frames
        if frames < 1 or batch_size < 1:
            raise ValueError(
                f"num_frames, batch_size: expected ints >= 1, got {frames}, {batch_size}"
            )
        embedded = self.embed_cond(cond, self.betas.device)
        batch = embedded.shape[0] if embedded is not None else batch_size
        frame_shape = self.frame_shape if image_size is None else (image_size, image_size)
        shape = (batch, self.channels, frames, *frame_shape)
        sample_fn = SAMPLER_FUNCTIONS[sampler]
        return sample_fn(
            self,
            shape,
            cond=embedded,
            cond_scale=cond_scale,
            steps=steps,
            eta=eta,
            generator=generator,
            condition=condition,
            window=window,
            overlap=overlap,
        )

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
        embedded = self.embed_cond(cond, x1.device, batch=x1.shape[0])
        with torch.inference_mode():
            time = timesteps_like(t, x1)
            noised = [
                self.q_sample(normalize_to_neg_one_to_one(x), time, randn_like(x, generator))
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
        self._check_inputs(videos, cond, noise, t)
        b = videos.shape[0]
        if t is None:
            t = torch.randint(0, self.num_timesteps, (b,), device=videos.device)
        x_start = normalize_to_neg_one_to_one(videos)
        noise = torch.randn_like(x_start) if noise is None else noise
        x_noisy = self.q_sample(x_start, t, noise)
        embedded = self.embed_cond(cond, videos.device, batch=b)
        if getattr(self.denoise_fn, "has_cond", False):
            kwargs.setdefault("null_cond_prob", self.cond_drop_prob)
        out = self.denoise_fn(x_noisy, t, cond=embedded, **kwargs)
        target = self._target(x_start, t, noise)
        if self.loss_type == "l1":
            return F.l1_loss(out.to(target.dtype), target)
        return F.mse_loss(out.to(target.dtype), target)

    def _check_inputs(
        self, videos: Tensor, cond: Cond, noise: Tensor | None, t: Tensor | None
    ) -> None:
        """The checks of `forward`: videos `(b, channels, num_frames, h, w)` in [0, 1], t `(b,)`
        in [0, T - 1], noise of the videos' shape, a condition the network takes."""
        self._check_videos("videos", videos, frames=self.num_frames)
        b = videos.shape[0]
        if t is not None:
            check_t(t, b, self.num_timesteps)
        if noise is not None and noise.shape != videos.shape:
            raise ValueError(
                f"noise: expected shape {tuple(videos.shape)}, got {tuple(noise.shape)}"
            )
        check_cond(cond, self.denoise_fn, b)

    def _check_videos(self, name: str, videos: Tensor, *, frames: int | None) -> None:
        check_videos(
            name, videos, channels=self.channels, frame_shape=self.frame_shape, frames=frames
        )

    def _target(self, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        if self.objective == "pred_noise":
            return noise
        if self.objective == "pred_x0":
            return x_start
        return self.predict_v(x_start, t, noise)

    # -----------------------------------------------------------------------------------------
    # conditions

    def embed_cond(
        self, cond: Cond, device: torch.device, batch: int | None = None
    ) -> Tensor | None:
        """The condition as a float tensor `(b, cond_dim)` on `device` (None for None); texts are
        embedded by the text encoder (`text_encoder`). `batch`, when given, is the expected b."""
        check_cond(cond, self.denoise_fn, batch)
        if cond is None or isinstance(cond, Tensor):
            return None if cond is None else cond.to(device)
        embedded = embed_texts(self._resolve_text_encoder(), cond, device)
        check_cond_tensor(
            embedded, cond_dim=getattr(self.denoise_fn, "cond_dim", None), batch=batch
        )
        return embedded.to(device)

    def _resolve_text_encoder(self) -> TextEncoderLike:
        """The text encoder, created on first use from a name (never at construction)."""
        return resolve_text_encoder(
            self._text_slot,
            name=self.text_encoder_name,
            denoise_fn=self.denoise_fn,
            use_cls=self.text_use_bert_cls,
        )
