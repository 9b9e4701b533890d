"""Phenaki's sampling: iterative MaskGIT decoding of a video's tokens, continued from prime frames.

Sampling starts from all-masked tokens and, over `steps` iterations, fills them and re-masks the
least trusted ones. Two rules:

- `"reference"` (phenaki-pytorch): tokens are Gumbel-sampled at a temperature that anneals to 0;
  without a critic the score of a token is `1 - p(token)` for the tokens just sampled and `-1e4` for
  earlier ones (never re-masked); with a critic the score is its logit plus annealed uniform noise,
  and any token can be re-masked. Step `s >= 1` re-masks `max(1, round(N γ(s / T)))` tokens.
- `"maskgit"` (the official MaskGIT decoder): tokens are sampled at temperature 1, their
  confidence is `log p + τ (1 - r) g` with Gumbel noise `g`, `r = (s + 1) / T` and
  `τ = starting_temperature`; known tokens are never re-masked; `clamp(floor(N γ(r)), 1, unknown
  - 1)` tokens stay masked.

Prime frames are tokenised by the causal tokenizer and kept fixed; the new frames' tokens are
generated after them, so a clip continues another one (`phenaki.story.make_video` chains scenes).
`Phenaki.sample` is the public entry point; `sample_video` does the work on its parts.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from phenaki.cvivit import CViViT
from phenaki.maskgit import MaskGit
from phenaki.masking import MaskSchedule, gumbel_sample, mask_schedule

__all__ = ["TokenDecoder", "sample_video"]

Decoding = Literal["reference", "maskgit"]


def _noise_scale(schedule: str, step: int, steps: int) -> float:
    """Token-Critic's noise multiplier at sampling step `step` of `steps`."""
    if schedule == "fixed":
        return 1.0
    if schedule == "decay":
        return (steps - step - 1) / steps
    return (step + 1) / steps


class TokenDecoder:
    """The iterative decoder of new tokens after fixed prime tokens (see the module docstring).

    `maskgit` predicts the tokens (guided by `cond_scale` through its
    `forward_with_cond_scale`), the optional `critic` scores them for the reference rule, `steps`
    iterations follow the mask `schedule`, and `critic_noise_anneal_schedule` ("fixed", "decay",
    "increase") scales the noise on the critic's scores.
    """

    def __init__(
        self,
        *,
        maskgit: MaskGit,
        critic: nn.Module | None,
        steps: int,
        schedule: MaskSchedule,
        critic_noise_anneal_schedule: str,
    ) -> None:
        self.maskgit = maskgit
        self.critic = critic
        self.steps = steps
        self.schedule: MaskSchedule = schedule
        self.critic_noise_anneal_schedule = critic_noise_anneal_schedule

    def decode(
        self,
        prime_ids: Tensor,
        grid: tuple[int, int, int],
        n: int,
        text: dict[str, Any],
        *,
        cond_scale: float,
        starting_temperature: float,
        noise_k: float,
        generator: torch.Generator | None,
        decoding: str,
    ) -> Tensor:
        """The `n` new token ids `(b, n)` after `prime_ids (b, p)`, over the whole `grid`;
        `text`: MaskGit's `context` and `text_mask`, or nothing."""
        batch, steps = prime_ids.shape[0], self.steps
        device = next(self.maskgit.parameters()).device
        mask_id = self.maskgit.mask_id
        ids = torch.full((batch, n), mask_id, dtype=torch.long, device=device)
        scores = torch.zeros(batch, n, device=device)
        masked = torch.ones(batch, n, dtype=torch.bool, device=device)
        start = prime_ids.shape[1]

        def embeds_of(current: Tensor) -> Tensor:
            """Guided final embeddings of the new tokens (MaskGit's head is linear and
            bias-free: projecting them gives the guided logits)."""
            full = torch.cat((prime_ids, current), dim=1)
            out: Tensor = self.maskgit.forward_with_cond_scale(
                full, cond_scale=cond_scale, video_patch_shape=grid, return_embeds=True, **text
            )
            return out[:, start:]

        for step in range(steps):
            if decoding != "reference":
                logits = self.maskgit.to_logits(embeds_of(ids))
                ids = self._maskgit_step(ids, logits, step, n, starting_temperature, generator)
                continue
            if step > 0:
                count = max(1, round(n * float(mask_schedule(step / steps, self.schedule))))
                chosen = scores.topk(min(count, n), dim=-1).indices
                masked = torch.zeros_like(masked).scatter_(1, chosen, True)
                ids = ids.masked_fill(masked, mask_id)
            # logits, samples and scores only where tokens are (re)drawn: the vocabulary-wide
            # head and the Gumbel noise are most of a step's cost
            logits = self.maskgit.to_logits(embeds_of(ids)[masked])  # (masked, vocabulary)
            temperature = starting_temperature * (steps - step - 1) / steps
            sampled = gumbel_sample(logits, temperature, generator)
            ids = ids.masked_scatter(masked, sampled)
            if self.critic is not None:
                critic_scores = self._guided_critic(prime_ids, ids, grid, cond_scale, text)
                noise = torch.rand(scores.shape, generator=generator, device=device) - 0.5
                scale = _noise_scale(self.critic_noise_anneal_schedule, step, steps)
                scores = critic_scores + noise_k * noise * scale
            else:
                picked = logits.gather(-1, sampled[:, None])[:, 0]
                probs = torch.exp(picked - logits.logsumexp(dim=-1))
                scores = torch.full_like(scores, -1e4).masked_scatter(masked, 1 - probs)
        return ids

    def _guided_critic(
        self,
        prime_ids: Tensor,
        ids: Tensor,
        grid: tuple[int, ...],
        cond_scale: float,
        text: dict[str, Any],
    ) -> Tensor:
        """The critic's guided scores `(b, n)` of the new tokens."""
        critic: Any = self.critic
        critic_text = text if critic.has_cross_attn else {}
        full = torch.cat((prime_ids, ids), dim=1)
        out: Tensor = critic.forward_with_cond_scale(
            full, cond_scale=cond_scale, video_patch_shape=grid, **critic_text
        )
        return out[:, prime_ids.shape[1] :]

    def _maskgit_step(
        self,
        ids: Tensor,
        logits: Tensor,
        step: int,
        n: int,
        temperature: float,
        generator: torch.Generator | None,
    ) -> Tensor:
        """One step of the official MaskGIT decoder (see the module docstring)."""
        unknown = ids == self.maskgit.mask_id
        sampled = torch.where(unknown, gumbel_sample(logits, 1.0, generator), ids)
        ratio = (step + 1) / self.steps
        log_probs = logits.log_softmax(dim=-1).gather(-1, sampled[..., None])[..., 0]
        uniform = torch.rand(log_probs.shape, generator=generator, device=ids.device)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0)).clamp_min(1e-20))
        confidence = log_probs + temperature * (1 - ratio) * gumbel
        confidence = confidence.masked_fill(~unknown, math.inf)
        remaining = unknown.sum(dim=-1, keepdim=True)
        keep_masked = torch.floor(n * mask_schedule(ratio, self.schedule)).long()
        keep_masked = torch.minimum(torch.clamp(remaining - 1, min=0), keep_masked.clamp_min(1))
        if step == self.steps - 1:
            keep_masked = torch.zeros_like(keep_masked)
        order = confidence.argsort(dim=-1).argsort(dim=-1)  # rank of each token, lowest first
        return sampled.masked_fill(order < keep_masked, self.maskgit.mask_id)


def sample_video(
    decoder: TokenDecoder,
    cvivit: CViViT,
    *,
    num_frames: int,
    context: Tensor | None,
    text_mask: Tensor | None,
    prime_frames: Tensor | None,
    batch_size: int,
    cond_scale: float,
    starting_temperature: float,
    noise_k: float,
    generator: torch.Generator | None,
    decoding: str,
) -> tuple[Tensor, int]:
    """Video `(b, c, prime + num_frames, H, W)` (the prime's reconstruction first) and the prime's
    length in frames: the prime frames `(b, c, 1 + j * pt, H, W)` are tokenised, the new frames'
    tokens decoded after them by `decoder`, and the whole grid decoded by the tokenizer. The text
    (`context (b, m, d)`, `text_mask (b, m)`) sets the batch when given."""
    device = next(decoder.maskgit.parameters()).device
    if context is not None:
        batch_size = context.shape[0]
    prime_ids = torch.empty(batch_size, 0, dtype=torch.long, device=device)
    prime_steps, prime_length = 0, 0
    if prime_frames is not None:
        if prime_frames.shape[0] != batch_size:
            raise ValueError(
                f"prime_frames: expected a batch of {batch_size}, got {prime_frames.shape[0]}"
            )
        prime_ids = cvivit(prime_frames.to(device), return_only_codebook_ids=True)
        prime_steps, prime_length = prime_ids.shape[1], prime_frames.shape[2]
        prime_ids = prime_ids.flatten(1)
    steps_new, h, w = cvivit.get_video_patch_shape(
        num_frames, include_first_frame=prime_frames is None
    )
    text: dict[str, Any] = (
        {"context": context, "text_mask": text_mask} if context is not None else {}
    )
    ids = decoder.decode(
        prime_ids,
        (prime_steps + steps_new, h, w),
        steps_new * h * w,
        text,
        cond_scale=cond_scale,
        starting_temperature=starting_temperature,
        noise_k=noise_k,
        generator=generator,
        decoding=decoding,
    )
    video = cvivit.decode_from_codebook_indices(
        rearrange(torch.cat((prime_ids, ids), dim=1), "b (t h w) -> b t h w", h=h, w=w)
    )
    return video, prime_length
