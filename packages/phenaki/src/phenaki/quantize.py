"""Lookup-free quantisation with its entropy loss in closed form.

`FactorizedLFQ` is vector-quantize-pytorch's `LFQ` (same constructor, parameters, codes, indices,
`indices_to_codes`, evaluation path) whose training forward computes the entropy loss of MAGVIT-v2
(Yu et al. 2023, eq. 5) without the `(tokens, 2^K)` distance, softmax and log tensors the library
builds over every code.

With codes `c ∈ {-s, s}^K` and the library's `p(c | z) = softmax_c(2 τ z·c)`, the distribution of
a token factorises over its K bits: `p(c | z) = Π_k σ(4 τ s z_k c_k / s)`. Hence

- per-token entropy: `H(p(·|z)) = Σ_k H_b(σ(4 τ s z_k))`, O(K) per token;
- codebook (batch) entropy: with the bits split into halves A and B, `p(c|z_i) = P_A[i, a] P_B[i, b]`
  and `mean_i p(c | z_i) = (P_Aᵀ P_B)[a, b] / n`: one `(2^|A| x n) @ (n x 2^|B|)` matrix product
  instead of `n x 2^K` exponentials, logarithms and products, and a backward that is two products.

Both are exact (the library clamps probabilities at 1e-5 inside its logarithm, so its value differs
by at most that clamp's effect). Options the closed form does not cover (spherical codes, rotations,
several codebooks, token sub-sampling for the entropy, the softplus variant) use the library's
forward unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from vector_quantize_pytorch import LFQ
from vector_quantize_pytorch.lookup_free_quantization import Return, maybe_distributed_mean

__all__ = ["FactorizedLFQ"]


def _binary_entropy(logits: Tensor) -> Tensor:
    """`H_b(σ(u)) = -σ(u) log σ(u) - σ(-u) log σ(-u)`, elementwise and exact for any `u`."""
    p = torch.sigmoid(logits)
    return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits))


def _half_probabilities(log_p: Tensor, log_q: Tensor) -> Tensor:
    """`(n, k)` log-probabilities of bits being 1 (`log_p`) and 0 (`log_q`) -> `(n, 2^k)`
    probabilities of every k-bit pattern (the first bit most significant, as LFQ's indices)."""
    k = log_p.shape[-1]
    bits = (
        torch.arange(2**k, device=log_p.device)[:, None]
        >> torch.arange(k - 1, -1, -1, device=log_p.device)
    ) & 1
    bits = bits.to(log_p.dtype)  # (2^k, k)
    return torch.exp(log_p @ bits.T + log_q @ (1 - bits).T)


class FactorizedLFQ(LFQ):
    """`vector_quantize_pytorch.LFQ` with the entropy loss computed in closed form (see the
    module docstring). `forward(x (b, n, dim), inv_temperature=100., mask=None (b, n))` returns
    the library's `(quantized, indices, aux_loss)`."""

    def _closed_form_applies(self) -> bool:
        return (
            self.num_codebooks == 1
            and self.frac_per_sample_entropy >= 1.0
            and not self.orthogonal_rotation
            and not self.experimental_softplus_entropy_loss
            and self.maybe_l2norm.__name__ == "identity"
            and not self.channel_first
        )

    def forward(
        self,
        x: Tensor,
        inv_temperature: float = 100.0,
        return_loss_breakdown: bool = False,
        mask: Tensor | None = None,
    ) -> Any:
        if not self.training or return_loss_breakdown or not self._closed_form_applies():
            return super().forward(
                x,
                inv_temperature=inv_temperature,
                return_loss_breakdown=return_loss_breakdown,
                mask=mask,
            )
        z = self.project_in(x)
        if self.soft_clamp_input_value is not None:
            z = (z / self.soft_clamp_input_value).tanh() * self.soft_clamp_input_value
        dtype = z.dtype
        z = z.float() if self.force_quantization_f32 else z
        scale = self.codebook_scale
        quantized = torch.where(z > 0, torch.full_like(z, scale), torch.full_like(z, -scale))
        indices = ((quantized > 0).long() * self.mask.long()).sum(dim=-1)
        activated = self.activation(z)
        out = activated + (quantized - activated).detach()

        tokens = z if mask is None else z[mask]
        tokens = tokens.reshape(-1, z.shape[-1])
        logits = (4 * inv_temperature * scale) * tokens  # p(bit = +s) = σ(logits)
        per_sample_entropy = _binary_entropy(logits).sum(dim=-1).mean()
        log_p, log_q = F.logsigmoid(logits), F.logsigmoid(-logits)
        half = z.shape[-1] // 2
        high = _half_probabilities(log_p[:, :half], log_q[:, :half])
        low = _half_probabilities(log_p[:, half:], log_q[:, half:])
        avg_prob = maybe_distributed_mean((high.T @ low).flatten() / tokens.shape[0])
        codebook_entropy = -(avg_prob * avg_prob.clamp_min(1e-30).log()).sum()
        aux = (
            per_sample_entropy - self.diversity_gamma * codebook_entropy
        ) * self.entropy_loss_weight
        if self.commitment_loss_weight > 0:
            commit = F.mse_loss(z, quantized.detach(), reduction="none")
            commit = (commit if mask is None else commit[mask]).mean()
            aux = aux + commit * self.commitment_loss_weight
        out = self.project_out(out.to(dtype))
        return Return(out, indices, aux)
