"""Noise schedules, the denoising loss and DDIM sampling of the `lumiere-video` demo.

The demo's base model (`lumiere.demo.models`) is trained on single frames with a diffusers
`DDPMScheduler`; the same noise schedule trains the temporal layers of the inflated model on
clips, and a `DDIMScheduler` built from that schedule samples both. Images are in [-1, 1] inside
the diffusion, [0, 1] outside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

__all__ = [
    "PREDICTION_TYPES",
    "class_labels",
    "ddim_sample",
    "ddim_scheduler",
    "diffusion_loss",
    "diffusion_loss_at",
    "frames_as_images",
    "make_noise_scheduler",
    "model_output",
    "sample_frames_independently",
    "video_noise",
]

# What the DDIM sampler takes over from the training scheduler's configuration (the schedule and
# the parameterisation); the rest (spacing, clipping) is the sampler's own.
_SCHEDULE_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "prediction_type",
)
PREDICTION_TYPES = ("epsilon", "v_prediction")


def make_noise_scheduler(
    *, prediction_type: str = "epsilon", beta_schedule: str = "squaredcos_cap_v2"
) -> Any:
    """The training noise scheduler: a diffusers `DDPMScheduler` with 1000 steps."""
    from diffusers import DDPMScheduler

    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type: expected one of {PREDICTION_TYPES}, got {prediction_type!r}"
        )
    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule=beta_schedule, prediction_type=prediction_type
    )


def ddim_scheduler(train_scheduler: Any) -> Any:
    """A `DDIMScheduler` with `train_scheduler`'s noise schedule and parameterisation; trailing
    timestep spacing (the first step starts at the last training timestep) and x0 clipping."""
    from diffusers import DDIMScheduler

    config = {key: train_scheduler.config[key] for key in _SCHEDULE_KEYS}
    return DDIMScheduler(**config, timestep_spacing="trailing", clip_sample=True)


def model_output(output: Any) -> Tensor:
    """The tensor of a diffusers-style output: `.sample`, the first element of a tuple, or the
    tensor itself."""
    if isinstance(output, Tensor):
        return output
    if hasattr(output, "sample"):
        sample: Tensor = output.sample
        return sample
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(f"model output: expected a tensor, a tuple or a `.sample`, got {type(output)}")


def diffusion_loss(
    model: Callable[..., Any], clean: Tensor, labels: Tensor, scheduler: Any
) -> Tensor:
    """Denoising loss of `model(noisy, timestep=t, class_labels=labels)` on `clean` images
    `(b, 3, h, w)` or videos `(b, 3, t, h, w)` in [-1, 1]: one uniform timestep per sample (per
    video: all frames of a clip share it), the MSE against the noise (`epsilon`) or against
    `v = sqrt(ab) * noise - sqrt(1 - ab) * x0` (`v_prediction`, Salimans & Ho 2022)."""
    batch = clean.shape[0]
    steps = scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (batch,), device=clean.device)
    return _denoising_mse(model, clean, torch.randn_like(clean), timesteps, labels, scheduler)


def diffusion_loss_at(
    model: Callable[..., Any],
    clean: Tensor,
    labels: Tensor,
    scheduler: Any,
    timestep: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """`diffusion_loss` at one fixed `timestep` for every sample, the noise drawn from
    `generator` (on `clean`'s device): the same noise and timestep on every call with an
    equally seeded generator, so held-out losses compare between runs and checkpoints
    (`mp_layers.training.fixed_noise_losses`)."""
    steps = scheduler.config.num_train_timesteps
    if not 0 <= timestep < steps:
        raise ValueError(f"timestep: expected an int in [0, {steps}), got {timestep}")
    noise = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
    timesteps = torch.full((clean.shape[0],), timestep, device=clean.device, dtype=torch.long)
    return _denoising_mse(model, clean, noise, timesteps, labels, scheduler)


def _denoising_mse(
    model: Callable[..., Any],
    clean: Tensor,
    noise: Tensor,
    timesteps: Tensor,
    labels: Tensor,
    scheduler: Any,
) -> Tensor:
    noisy = scheduler.add_noise(clean, noise, timesteps)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(clean, noise, timesteps)
    else:
        target = noise
    prediction = model_output(model(noisy, timestep=timesteps, class_labels=labels))
    return torch.nn.functional.mse_loss(prediction.float(), target.float())


@torch.no_grad()
def ddim_sample(
    model: Callable[..., Any],
    noise: Tensor,
    labels: Tensor,
    scheduler: Any,
    *,
    steps: int = 50,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Deterministic DDIM (eta = 0) from `noise` (images `(b, 3, h, w)` or videos
    `(b, 3, t, h, w)`) with `model(x, timestep=t, class_labels=labels)`; returns [0, 1]."""
    sampler = ddim_scheduler(scheduler)
    sampler.set_timesteps(steps, device=noise.device)
    sample = noise * sampler.init_noise_sigma
    batch = noise.shape[0]
    for index, timestep in enumerate(sampler.timesteps):
        prediction = model_output(
            model(sample, timestep=timestep.expand(batch), class_labels=labels)
        )
        sample = sampler.step(prediction, timestep, sample).prev_sample
        if progress is not None:
            progress(index)
    return ((sample.clamp(-1, 1) + 1) / 2).float()


def class_labels(num_classes: int, per_class: int, device: torch.device | str = "cpu") -> Tensor:
    """`(num_classes * per_class,)` labels in class-major order (one sample-sheet row per class)."""
    return torch.arange(num_classes, device=device).repeat_interleave(per_class)


def video_noise(
    batch: int, frames: int, size: int, *, seed: int, device: torch.device | str = "cpu"
) -> Tensor:
    """Independent Gaussian noise `(batch, 3, frames, size, size)` from a seeded CPU generator
    (the same on every device), moved to `device`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, frames, size, size, generator=generator).to(device)


def sample_frames_independently(
    unet: nn.Module,
    noise: Tensor,
    labels: Tensor,
    scheduler: Any,
    *,
    steps: int = 50,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """The base image model's "video": every frame of `noise (b, 3, t, h, w)` denoised on its own
    (independent noise, the clip's label) by DDIM. Returns `(b, 3, t, h, w)` in [0, 1]."""
    frames = noise.shape[2]
    images = ddim_sample(
        unet,
        rearrange(noise, "b c t h w -> (b t) c h w"),
        repeat(labels, "b -> (b t)", t=frames),
        scheduler,
        steps=steps,
        progress=progress,
    )
    return rearrange(images, "(b t) c h w -> b c t h w", t=frames)


def frames_as_images(video: Tensor) -> Tensor:
    """The frames of a batch of clips `(b, 3, t, h, w)` in [0, 1] as images `(b t, 3, h, w)` in
    [-1, 1]."""
    return rearrange(video * 2 - 1, "b c t h w -> (b t) c h w")
