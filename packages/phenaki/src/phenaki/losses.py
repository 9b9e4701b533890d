"""GAN losses, the gradient penalty, VQGAN's adaptive weight and the frame picker of C-ViViT.

Logits are discriminator outputs of any shape (usually `(b,)`); every loss is a scalar mean.

- hinge: `L_D = mean(relu(1 + D(fake))) + mean(relu(1 - D(real)))`, `L_G = -mean(D(fake))`.
- non-saturating BCE: `L_D = mean(-log(1 - σ(D(fake)))) + mean(-log σ(D(real)))`,
  `L_G = mean(-log σ(D(fake)))`, computed with `-log σ(x) = softplus(-x)` and
  `-log(1 - σ(x)) = softplus(x)`, so they stay finite for any logit (the reference's BCE losses
  called an undefined `log` and crashed: defect P7).
- `gradient_penalty`: `weight * mean_b (||∂ Σ D(x) / ∂ x_b||_2 - 1)^2` (WGAN-GP, Gulrajani et al.
  2017), on a graph that trains.
- `adaptive_weight`: `λ = ||∇_L num|| / (||∇_L den|| + eps)`, clamped to `max_weight` (VQGAN eq. 7,
  Esser et al. 2021), with the norm taken over all the given layers `L` together, so that image
  batches (which reach only the first-frame head of the decoder) get a non-zero weight (the
  reference took the norm against the video head only, which turned the GAN loss silently off
  for images: defect P6).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from mp_layers.typecheck import typechecked

__all__ = [
    "adaptive_weight",
    "bce_discr_loss",
    "bce_gen_loss",
    "gradient_penalty",
    "hinge_discr_loss",
    "hinge_gen_loss",
    "pick_frames",
]


@typechecked
def hinge_discr_loss(fake: Tensor, real: Tensor) -> Tensor:
    """Hinge discriminator loss `mean(relu(1 + fake)) + mean(relu(1 - real))` over logits."""
    return F.relu(1 + fake).mean() + F.relu(1 - real).mean()


@typechecked
def hinge_gen_loss(fake: Tensor) -> Tensor:
    """Hinge generator loss `-mean(fake)` over the discriminator's logits on generated samples."""
    return -fake.mean()


@typechecked
def bce_discr_loss(fake: Tensor, real: Tensor) -> Tensor:
    """Binary cross-entropy discriminator loss over logits, fake labelled 0 and real 1:
    `mean(-log(1 - σ(fake))) + mean(-log σ(real)) = mean(softplus(fake)) + mean(softplus(-real))`.
    """
    return F.softplus(fake).mean() + F.softplus(-real).mean()


@typechecked
def bce_gen_loss(fake: Tensor) -> Tensor:
    """Non-saturating generator loss `mean(-log σ(fake)) = mean(softplus(-fake))`."""
    return F.softplus(-fake).mean()


@typechecked
def gradient_penalty(inputs: Tensor, outputs: Tensor, weight: float = 10.0) -> Tensor:
    """WGAN-GP penalty `weight * mean_b (||g_b||_2 - 1)^2` with `g = ∂ Σ outputs / ∂ inputs`.

    `inputs` `(b, ...)` must require grad and `outputs` (any shape, usually `(b,)` logits) must be
    computed from it. The gradient is taken with `create_graph=True`, so the penalty
    back-propagates into the discriminator's parameters; the graph of `outputs` is retained (the
    caller usually back-propagates the discriminator loss through it as well).
    """
    if weight < 0:
        raise ValueError(f"gradient_penalty: expected weight >= 0, got {weight}")
    if not inputs.requires_grad or not outputs.requires_grad:
        raise ValueError(
            "gradient_penalty: expected inputs that require grad and outputs computed from them, "
            f"got inputs.requires_grad={inputs.requires_grad}, "
            f"outputs.requires_grad={outputs.requires_grad}"
        )
    (gradients,) = torch.autograd.grad(
        outputs=outputs,
        inputs=inputs,
        grad_outputs=torch.ones_like(outputs),
        create_graph=True,
        retain_graph=True,
    )
    norms = rearrange(gradients, "b ... -> b (...)").norm(p=2, dim=1)
    return weight * (norms - 1).pow(2).mean()


def _gradient_norm(loss: Tensor, layers: Sequence[Tensor], name: str) -> Tensor:
    """`sqrt(Σ_l ||∂ loss / ∂ l||^2)` in float32; a layer that `loss` does not reach counts 0."""
    if loss.numel() != 1:
        raise ValueError(
            f"adaptive_weight: expected a scalar {name}, got shape {tuple(loss.shape)}"
        )
    if not loss.requires_grad:
        raise ValueError(
            f"adaptive_weight: expected {name} to be attached to the graph (requires_grad=True), "
            "got a tensor that does not require grad"
        )
    grads = torch.autograd.grad(loss, list(layers), retain_graph=True, allow_unused=True)
    total = torch.zeros((), device=loss.device, dtype=torch.float32)
    for grad in grads:
        if grad is not None:
            total = total + grad.detach().float().pow(2).sum().to(total.device)
    return total.sqrt()


@typechecked
def adaptive_weight(
    numerator_loss: Tensor,
    denominator_loss: Tensor,
    layers: Sequence[Tensor],
    *,
    max_weight: float = 1e4,
    eps: float = 1e-8,
) -> Tensor:
    """VQGAN's adaptive weight (Esser et al. 2021, eq. 7), a detached float32 scalar:

        λ = min(||∇_L numerator_loss|| / (||∇_L denominator_loss|| + eps), max_weight),
        ||∇_L loss|| = sqrt(Σ_{l ∈ L} ||∂ loss / ∂ l||_2^2),

    with `L = layers` (usually the weights of every last decoder layer). A layer a loss does not
    reach contributes zero to that loss's norm. Gradients are taken with `retain_graph=True`, so
    both losses can still be back-propagated afterwards. Typical use:
    `loss = recon + perceptual + adaptive_weight(perceptual, gen, heads) * gen`.
    """
    if len(layers) == 0:
        raise ValueError("adaptive_weight: expected at least one layer, got none")
    if not all(layer.requires_grad for layer in layers):
        raise ValueError(
            "adaptive_weight: expected layers that require grad, got requires_grad="
            f"{[layer.requires_grad for layer in layers]}"
        )
    if max_weight <= 0 or eps < 0:
        raise ValueError(
            f"adaptive_weight: expected max_weight > 0 and eps >= 0, got {max_weight} and {eps}"
        )
    numerator = _gradient_norm(numerator_loss, layers, "numerator_loss")
    denominator = _gradient_norm(denominator_loss, layers, "denominator_loss")
    return (numerator / (denominator.to(numerator.device) + eps)).clamp(max=max_weight).detach()


@typechecked
def pick_frames(
    video: Tensor,
    frame_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One uniformly random valid frame per clip.

    `video` `(b, c, f, h, w)`; `frame_mask` `(b, f)` bool, True = a real frame (None: all frames
    are valid); `generator` (on the video's device) makes the draw reproducible. The random
    numbers are drawn on the video's device. Returns `(images (b, c, h, w), indices (b,))` with
    `images[i] = video[i, :, indices[i]]` (differentiable with respect to `video`).
    """
    if video.ndim != 5:
        raise ValueError(
            f"pick_frames: expected a video of shape (b, c, f, h, w), got {tuple(video.shape)}"
        )
    b, _, f = video.shape[:3]
    if frame_mask is None:
        frame_mask = torch.ones(b, f, dtype=torch.bool, device=video.device)
    if frame_mask.dtype != torch.bool or frame_mask.shape != (b, f):
        raise ValueError(
            f"pick_frames: expected a bool frame_mask of shape {(b, f)}, got "
            f"{frame_mask.dtype} of shape {tuple(frame_mask.shape)}"
        )
    frame_mask = frame_mask.to(video.device)
    empty = ~frame_mask.any(dim=1)
    if bool(empty.any()):
        raise ValueError(
            "pick_frames: expected at least one valid frame per clip, got none in clips "
            f"{empty.nonzero().flatten().tolist()}"
        )
    indices = torch.multinomial(frame_mask.float(), 1, generator=generator).squeeze(1)
    frames = rearrange(video, "b c f h w -> b f c h w")
    images = frames[torch.arange(b, device=video.device), indices]
    return images, indices
