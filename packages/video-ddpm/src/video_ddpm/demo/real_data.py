"""A demo run on the user's own videos: the conditioning `--cond auto` finds, the held-out
split, and the report that fits real data (no MovingShapes figure):

- the held-out loss at fixed timesteps `T/10, T/2, 9T/10` with fixed noise (comparable between
  runs and checkpoints of the same schedule), `held_out_loss`;
- samples (prompted by the held-out captions for a text model) against the held-out real clips:
  motion, colour histogram distance, and a sheet of real clips above samples (GIF and MP4).
"""

from __future__ import annotations

from typing import Any

import torch

from video_ddpm.gaussian_diffusion import GaussianDiffusion

__all__ = [
    "EVAL_CLIPS",
    "default_guidance",
    "real_data_prompts",
    "report_real_data",
    "resolve_cond",
]

EVAL_CLIPS = 8
"""Held-out clips the report measures on (fewer when the held-out part is smaller)."""


def resolve_cond(cond: str, data: Any) -> str:
    """`cond`, with "auto" resolved from `data` (`mp_layers.training.data_conditioning`): text
    for MovingShapes (its captions) and for captioned videos, none for videos without captions.
    `cond="class"` needs MovingShapes' labels."""
    from mp_layers.training import data_conditioning

    found = data_conditioning(data)
    if cond == "auto":
        return "text" if found in ("labels", "text") else "none"
    if cond == "class" and found != "labels":
        raise ValueError(
            "--cond class: expected class-labelled data (--data synthetic), got videos without "
            "labels; use --cond auto, text or none"
        )
    if cond == "text" and found == "none":
        raise ValueError(
            "--cond text: expected captions (.txt or .json sidecars, or captions in the shards), "
            "found none; use --cond auto or none"
        )
    return cond


def default_guidance(cond: str, guidance: float | None) -> float:
    """The guidance weight: `guidance`, or 3.0 for a conditional model and 1.0 (none) without a
    condition; a weight other than 1 without a condition is refused."""
    if guidance is None:
        return 3.0 if cond in ("text", "class") else 1.0
    if cond == "none" and guidance != 1.0:
        raise ValueError(
            f"--guidance {guidance}: an unconditional model has no guidance; expected 1.0"
        )
    return guidance


def real_data_prompts(held_out: Any, train: Any, count: int = 4) -> list[str]:
    """Up to `count` distinct non-empty captions of the held-out clips, else of the first
    training clips."""
    from mp_layers.training import held_out_clips

    for data in (held_out, train):
        texts = [t for t in held_out_clips(data, 16)["text"] if t]
        if texts:
            return list(dict.fromkeys(texts))[:count]
    return []


def _held_out_losses(model: GaussianDiffusion, clips: torch.Tensor, cond: Any) -> dict[str, float]:
    from mp_layers.training import fixed_noise_losses

    steps = model.num_timesteps
    levels = sorted({steps // 10, steps // 2, (9 * steps) // 10})
    has_cond = getattr(model.denoise_fn, "has_cond", False)

    def loss_at(videos: torch.Tensor, t: int, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(videos.shape, generator=generator, device=videos.device)
        times = torch.full((videos.shape[0],), t, device=videos.device, dtype=torch.long)
        kwargs = {"null_cond_prob": 0.0} if has_cond else {}
        loss: torch.Tensor = model(videos, cond, noise=noise, t=times, **kwargs)
        return loss

    losses = fixed_noise_losses(loss_at, clips, levels)
    return {f"t={level}": value for level, value in losses.items()}


def report_real_data(
    trainer: Any,
    summary: dict[str, Any],
    model: GaussianDiffusion,
    run_config: dict[str, Any],
    held_out: Any,
    *,
    guidance: float | None,
    sampler: str,
    steps: int | None,
    seed: int,
) -> torch.Tensor:
    """The real-data report of a finished run (main process): held-out losses at fixed
    timesteps, then `EVAL_CLIPS` samples (one per held-out caption, cycled, for a text model)
    against the held-out clips (`mp_layers.training.report_against_real`). Returns the
    samples."""
    from mp_layers.training import held_out_clips, report_against_real

    device = next(model.parameters()).device
    clips = held_out_clips(held_out, EVAL_CLIPS)
    real = clips["video"].to(device)
    cond_kind = run_config.get("cond", "none")
    texts = [t for t in clips["text"]] if cond_kind == "text" else None
    losses = _held_out_losses(model, real, texts)
    summary["held_out_loss"] = losses
    summary["held_out"] = run_config.get("held_out", "")
    print(
        f"held-out loss at fixed noise ({len(real)} clips; {summary['held_out']}): "
        + ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
    )
    trainer.log({f"held_out/loss_{k}": v for k, v in losses.items()})
    cond = None
    if cond_kind == "text":
        prompts = run_config.get("sample_prompts") or [""]
        cond = [prompts[i % len(prompts)] for i in range(len(real))]
        summary["sample_prompts"] = prompts
    generator = torch.Generator(device=device).manual_seed(seed)
    samples = model.sample(
        cond,
        cond_scale=default_guidance(cond_kind, guidance),
        batch_size=len(real),
        sampler=sampler,
        steps=steps,
        generator=generator,
    ).cpu()
    report_against_real(trainer, summary, samples, clips["video"])
    return samples
