"""C-ViViT's training objective: how its reconstruction, perceptual and adversarial losses combine.

The generator loss is `MSE + perceptual + quantiser aux + w * GAN` over valid frames, with the
adaptive weight `w = |grad_L (MSE + perceptual)| / |grad_L GAN|` (VQGAN, Esser et al. 2021, eq. 7)
over the last layers `L` of both pixel heads. The discriminator judges one random valid frame per
clip (a frame discriminator, as the reference) or whole clips with invalid frames zeroed (a 3-D
video discriminator that judges motion); its loss may add the gradient penalty. The primitives
(hinge and BCE losses, `adaptive_weight`, `gradient_penalty`, `pick_frames`) are in
`phenaki.losses`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from phenaki.discriminator import FrameDiscriminator, VideoDiscriminator
from phenaki.losses import adaptive_weight, gradient_penalty, pick_frames
from phenaki.perceptual import PerceptualLoss

__all__ = [
    "adversarial_networks",
    "discriminator_loss",
    "generator_loss",
    "judged_clips",
    "reconstruction_loss",
]

PairLoss = Callable[[Tensor, Tensor], Tensor]


def adversarial_networks(
    *,
    vgg: nn.Module | None,
    perceptual_weight: float,
    discriminator: str,
    discr_base_dim: int,
    image_size: tuple[int, int],
    channels: int,
    attn_res_layers: tuple[int, ...],
) -> tuple[PerceptualLoss | None, nn.Module]:
    """The frozen perceptual loss (None when `perceptual_weight` is 0) and the discriminator:
    `"frame"` (2-D, self-attending at the `attn_res_layers` feature sizes) or `"video"` (3-D)."""
    perceptual = PerceptualLoss(vgg) if perceptual_weight > 0 else None
    if discriminator == "frame":
        return perceptual, FrameDiscriminator(
            dim=discr_base_dim,
            image_size=image_size,
            channels=channels,
            attn_res_layers=attn_res_layers,
        )
    return perceptual, VideoDiscriminator(
        dim=discr_base_dim, image_size=image_size, channels=channels
    )


def _frames_at(video: Tensor, index: Tensor) -> Tensor:
    """Frame `index[i]` of clip `i`: `(b, c, f, h, w)` -> `(b, c, h, w)`."""
    return video[torch.arange(video.shape[0], device=video.device), :, index]


def judged_clips(
    video: Tensor, recon: Tensor, mask: Tensor | None, discriminator_type: str
) -> tuple[Tensor, Tensor]:
    """What the discriminator sees of the real and reconstructed clips: one random valid frame
    per clip (`"frame"`: `(b, c, h, w)`), or the whole clips with invalid frames zeroed
    (`"video"`: `(b, c, f, h, w)`)."""
    if discriminator_type == "frame":
        real, index = pick_frames(video, mask)
        return real, _frames_at(recon, index)
    if mask is None:
        return video, recon
    keep = rearrange(mask, "b f -> b 1 f 1 1").to(video.dtype)
    return video * keep, recon * keep


def reconstruction_loss(video: Tensor, recon: Tensor, mask: Tensor | None) -> Tensor:
    """Mean squared error over the valid frames (`mask (b, f)`, all frames when None)."""
    if mask is None:
        return F.mse_loss(recon, video)
    error = (recon - video).pow(2).mean(dim=(1, 3, 4))  # (b, f)
    return error[mask].mean()


def generator_loss(
    video: Tensor,
    recon: Tensor,
    mask: Tensor | None,
    aux_loss: Tensor,
    *,
    discr: nn.Module | None,
    gen_loss: Callable[[Tensor], Tensor],
    perceptual: PairLoss | None,
    perceptual_weight: float,
    discriminator_type: str,
    heads: Sequence[Tensor],
) -> Tensor:
    """The autoencoder's loss (see the module docstring); without a discriminator `MSE + aux`,
    and without autograd the GAN term is left out. `heads`: the last layers' weights."""
    recon_loss = reconstruction_loss(video, recon, mask)
    if discr is None:
        return recon_loss + aux_loss
    real, fake = judged_clips(video, recon, mask, discriminator_type)
    nll = recon_loss
    if perceptual is not None:
        real_frames, fake_frames = real, fake
        if discriminator_type == "video":  # the perceptual loss is per frame
            real_frames, index = pick_frames(video, mask)
            fake_frames = _frames_at(recon, index)
        nll = nll + perceptual_weight * perceptual(real_frames, fake_frames)
    adversarial = gen_loss(discr(fake))
    if not (torch.is_grad_enabled() and adversarial.requires_grad):
        return nll + aux_loss
    weight = adaptive_weight(nll, adversarial, heads)
    return nll + aux_loss + weight * adversarial


def discriminator_loss(
    video: Tensor,
    recon: Tensor,
    mask: Tensor | None,
    *,
    discr: nn.Module,
    discr_loss: PairLoss,
    discriminator_type: str,
    apply_grad_penalty: bool,
) -> Tensor:
    """The discriminator's loss `discr_loss(fake logits, real logits)`, plus the gradient penalty
    `10 * (|grad D(real)| - 1)^2` with `apply_grad_penalty`."""
    real, fake = judged_clips(video, recon, mask, discriminator_type)
    real = real.detach().requires_grad_(apply_grad_penalty)
    # The penalty differentiates through the discriminator twice: its attention must run on
    # SDPA's math kernel (the fused CPU and flash kernels have no double backward).
    with sdpa_kernel(SDPBackend.MATH) if apply_grad_penalty else contextlib.nullcontext():
        real_logits, fake_logits = discr(real), discr(fake.detach())
    loss = discr_loss(fake_logits, real_logits)
    if apply_grad_penalty:
        loss = loss + gradient_penalty(real, real_logits)
    return loss
