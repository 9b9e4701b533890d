"""A `karras-unet3d` run on the user's own videos: the conditioning `--cond auto` picks, valid
guidance defaults, and the report that fits real data (no MovingShapes figure):

- the held-out EDM loss at fixed noise levels `sigma in (0.2, 1, 5)` with fixed noise, weighted
  by EDM's `lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2` (EDM eq. 8; 1 for
  a denoiser that only keeps the noisy input at large sigma), comparable between runs;
- unconditional samples against the held-out real clips: motion, colour histogram distance, and
  a sheet of real clips above samples (GIF and MP4).
"""

from __future__ import annotations

from typing import Any

import torch

from karras_unet3d.diffusion import EDM2Diffusion
from mp_layers.typecheck import typechecked

__all__ = ["EVAL_CLIPS", "SIGMAS", "default_guidance", "report_real_data", "resolve_cond"]

EVAL_CLIPS = 8
SIGMAS = (0.2, 1.0, 5.0)
CONDITIONS = ("auto", "class", "none")


@typechecked
def resolve_cond(cond: str, synthetic: bool) -> str:
    """ "class" (MovingShapes' labels) or "none": `--cond auto` is class labels for MovingShapes
    and none for videos (this model has no text conditioning, so captions are not used)."""
    if cond not in CONDITIONS:
        raise ValueError(f"--cond: expected one of {CONDITIONS}, got {cond!r}")
    if cond == "auto":
        return "class" if synthetic else "none"
    if cond == "class" and not synthetic:
        raise ValueError(
            "--cond class: expected class-labelled data (--data synthetic), got videos without "
            "labels; use --cond auto or none"
        )
    return cond


@typechecked
def default_guidance(conditional: bool, guidance: float | None) -> float:
    """`guidance`, or 1.5 for a class-conditional model and 1.0 (no guidance) otherwise; a
    weight other than 1 for an unconditional model is refused (it has no guide)."""
    if guidance is None:
        return 1.5 if conditional else 1.0
    if not conditional and guidance != 1.0:
        raise ValueError(
            f"--guidance {guidance}: an unconditional model has no guidance; expected 1.0 "
            "(or train with --cond class on --data synthetic)"
        )
    return guidance


def held_out_losses(model: EDM2Diffusion, clips: torch.Tensor) -> dict[str, float]:
    """`lambda(sigma) * E ||D(y + sigma n; sigma) - y||^2` of the clips (in [0, 1]) at `SIGMAS`,
    noise drawn from a generator fixed per level; unconditional (null labels)."""
    from mp_layers.training import fixed_noise_losses

    sigma_data = model.sigma_data
    labels = None
    if model.net.num_classes:  # the null label: the unconditional branch
        labels = torch.zeros(clips.shape[0], model.net.num_classes, device=clips.device)

    def loss_at(videos: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
        y = videos.to(torch.float32) * 2 - 1
        noise = torch.randn(y.shape, generator=generator, device=y.device)
        denoised = model.denoise(y + sigma * noise, sigma, class_labels=labels)
        weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
        return weight * (denoised - y).square().mean()

    losses = fixed_noise_losses(loss_at, clips, SIGMAS)
    return {f"sigma={level}": value for level, value in losses.items()}


@typechecked
def report_real_data(
    trainer: Any,
    summary: dict[str, Any],
    model: EDM2Diffusion,
    held_out: Any,
    *,
    held_out_text: str,
    sample_steps: int,
    seed: int,
) -> torch.Tensor:
    """The real-data report of a finished run (main process): held-out losses at `SIGMAS`, then
    `EVAL_CLIPS` unconditional samples against the held-out clips
    (`mp_layers.training.report_against_real`). Returns the samples."""
    from mp_layers.training import held_out_clips, report_against_real

    device = next(model.parameters()).device
    clips = held_out_clips(held_out, EVAL_CLIPS)
    losses = held_out_losses(model, clips["video"].to(device))
    summary["held_out_loss"] = losses
    summary["held_out"] = held_out_text
    print(
        f"held-out loss at fixed noise ({len(clips['video'])} clips; {held_out_text}): "
        + ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
    )
    trainer.log({f"held_out/loss_{k}": v for k, v in losses.items()})
    generator = torch.Generator(device=device).manual_seed(seed)
    samples = model.sample(
        len(clips["video"]), num_steps=sample_steps, guidance=1.0, generator=generator
    ).cpu()
    report_against_real(trainer, summary, samples, clips["video"])
    return samples
