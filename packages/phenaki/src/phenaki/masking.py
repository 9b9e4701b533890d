"""MaskGIT's masking and sampling helpers: which tokens to mask, how many, and how to draw them.

Training masks a random subset `M` of the valid tokens (`get_mask_subset_with_prob`), a fraction
`γ(r)` of them for a random `r ∈ [0, 1)` (`mask_schedule`, MaskGIT, Chang et al. 2022, 3.3).
Sampling draws tokens by the Gumbel-max trick (`gumbel_sample`), and a token critic learns which
masked positions MaskGit got wrong (`critic_labels`, Token-Critic, Lezama et al. 2022).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor

from mp_layers.typecheck import typechecked

__all__ = [
    "MaskSchedule",
    "critic_labels",
    "get_mask_subset_with_prob",
    "gumbel_sample",
    "mask_schedule",
]

MaskSchedule = Literal["cosine", "linear", "sqrt"]


@typechecked
def get_mask_subset_with_prob(
    mask: Tensor, prob: float | Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """A random subset of the valid positions of each row, to be replaced by the mask token.

    `mask (b, n)` bool marks the valid (non-padding) tokens, `prob` is a float or a `(b,)` tensor
    in [0, 1]. Row `i` gets `k_i = max(1, round(prob_i * v_i))` positions drawn uniformly without
    replacement among its `v_i` valid ones (`round` is half-to-even; a row with no valid token
    gets none). The reference ranked all positions and ignored where the padding was, so about
    half of the masked positions landed on padding (defect P3). Returns `(b, n)` bool.
    """
    if mask.ndim != 2 or mask.dtype != torch.bool:
        raise ValueError(
            f"mask: expected a bool tensor of shape (b, n), got {mask.dtype} of shape "
            f"{tuple(mask.shape)}"
        )
    batch, n = mask.shape
    device = mask.device
    if isinstance(prob, Tensor):
        if prob.shape not in ((), (batch,)) or prob.is_complex() or not prob.is_floating_point():
            raise ValueError(
                f"prob: expected a float or a float tensor of shape ({batch},), got "
                f"{prob.dtype} of shape {tuple(prob.shape)}"
            )
        if bool(((prob < 0) | (prob > 1)).any()):
            raise ValueError(f"prob: expected values in [0, 1], got {prob.tolist()}")
        probs = prob.to(device=device, dtype=torch.float32)
    else:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob: expected a value in [0, 1], got {prob}")
        probs = torch.full((), float(prob), device=device)
    valid = mask.sum(dim=-1).float()
    count = (probs * valid).round().clamp(min=1).minimum(valid)  # 0 for rows without valid tokens
    scores = torch.rand(batch, n, device=device, generator=generator)
    scores = scores.masked_fill(~mask, 2.0)  # padding ranks after every valid position
    rank = scores.argsort(dim=-1).argsort(dim=-1)  # rank of each position in its row
    return (rank < rearrange(count, "b -> b 1")) & mask


@typechecked
def mask_schedule(ratio: Tensor | float, schedule: MaskSchedule = "cosine") -> Tensor:
    """The fraction of tokens masked, `γ(r)` for `r ∈ [0, 1]` (MaskGIT, Chang et al. 2022, 3.3):

    cosine `γ(r) = cos(π r / 2)`, linear `γ(r) = 1 - r`, square root `γ(r) = 1 - sqrt(r)`. Each
    decreases from `γ(0) = 1` (everything masked) to `γ(1) = 0`. Returns a tensor of `ratio`'s
    shape.
    """
    r = ratio if isinstance(ratio, Tensor) else torch.tensor(float(ratio))
    if not r.is_floating_point():
        r = r.float()
    if bool(((r < 0) | (r > 1)).any()):
        raise ValueError(f"ratio: expected values in [0, 1], got {r.tolist()}")
    if schedule == "cosine":
        return torch.cos(r * (math.pi / 2))
    if schedule == "linear":
        return 1 - r
    return 1 - r.sqrt()


@typechecked
def gumbel_sample(
    logits: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Sample from `softmax(logits / τ)` over the last dimension by the Gumbel-max trick:
    `argmax(logits / τ + g)` with `g = -log(-log u)`, `u ~ U(0, 1)`. `τ = 0` is the argmax.

    `logits (..., k)` -> ids `(...)` (int64). The noise is drawn in float32.
    """
    if temperature < 0:
        raise ValueError(f"temperature: expected >= 0, got {temperature}")
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits: expected shape (..., k) with k >= 1, got {tuple(logits.shape)}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    u = torch.rand(logits.shape, device=logits.device, generator=generator)
    noise = -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float32).tiny)))
    return (logits.float() / temperature + noise).argmax(dim=-1)


@typechecked
def critic_labels(predicted: Tensor, truth: Tensor, masked: Tensor) -> Tensor:
    """Token-critic targets: 1.0 where a masked position was predicted wrong, 0.0 elsewhere.

    The critic sees MaskGit's predictions at the masked positions and the ground truth at the
    others, so only masked positions can be wrong: `label = [masked ∧ predicted ≠ truth]`. (The
    reference used `predicted ≠ truth` everywhere, labelling real tokens "wrong" wherever MaskGit
    would have mispredicted them: defect P4.) `predicted`, `truth` and `masked` (bool) share one
    shape; returns float32 of that shape.
    """
    if predicted.shape != truth.shape or masked.shape != truth.shape:
        raise ValueError(
            f"predicted, truth, masked: expected one shape, got {tuple(predicted.shape)}, "
            f"{tuple(truth.shape)} and {tuple(masked.shape)}"
        )
    if masked.dtype != torch.bool:
        raise ValueError(f"masked: expected a bool tensor, got {masked.dtype}")
    return ((predicted != truth) & masked).float()
