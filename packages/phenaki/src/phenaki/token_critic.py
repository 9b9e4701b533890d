"""`TokenCritic` (Token-Critic, Lezama et al. 2022): a separate transformer that scores each token
of a (partially generated) grid, one logit per token, `> 0` meaning "this token is wrong".

It sits on the token-transformer trunk it shares with MaskGit (`phenaki.token_transformer`):
token + position embeddings, a `Transformer` with PEG (no position bias, no gradient shrink),
cross-attention to the text when `has_cross_attn`, and `Linear(dim, 1)`. The reference raised
TypeError when called with a context and no `cond_drop_prob` (defect P14).
"""

from __future__ import annotations

from typing import Any

from einops import rearrange
from torch import Tensor

from mp_layers.hub import HubModel
from mp_layers.typecheck import typechecked
from phenaki.token_transformer import (
    TokenInputs,
    TokenTransformer,
    check_scalars,
    check_transformer_kwargs,
    guided,
)

__all__ = ["TokenCritic"]


class TokenCritic(TokenTransformer, HubModel):
    """Token-Critic (Lezama et al. 2022): a separate transformer scoring each token of a
    (partially generated) grid, logit `> 0` meaning "this token is wrong".

    Token + position embeddings, a `Transformer` with PEG (no position bias, no gradient shrink),
    cross-attention to the text when `has_cross_attn` (`transformer_kwargs` then needs
    `dim_context`; it always needs `depth`), and `Linear(dim, 1)`.

    `forward(x, text_mask, cond_drop_prob, context, video_mask, video_patch_shape)` -> `(b, n)`.
    """

    _owner = "TokenCritic"

    @typechecked
    def __init__(
        self,
        *,
        dim: int,
        num_tokens: int,
        max_seq_len: int,
        has_cross_attn: bool = False,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        **transformer_kwargs: Any,
    ) -> None:
        check_scalars("TokenCritic", dim=dim, num_tokens=num_tokens, max_seq_len=max_seq_len)
        check_transformer_kwargs(
            "TokenCritic", transformer_kwargs, ("peg",), need_context=has_cross_attn
        )
        super().__init__(
            dim=dim,
            num_tokens=num_tokens,
            max_seq_len=max_seq_len,
            conditional=has_cross_attn,
            num_logits=1,
            logits_bias=True,
            has_cross_attn=has_cross_attn,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            **transformer_kwargs,
        )
        self.config: dict[str, Any] = {
            "dim": dim,
            "num_tokens": num_tokens,
            "max_seq_len": max_seq_len,
            "has_cross_attn": has_cross_attn,
            "attn_dropout": attn_dropout,
            "ff_dropout": ff_dropout,
            **transformer_kwargs,
        }
        self.has_cross_attn = has_cross_attn

    def _logits(self, inputs: TokenInputs) -> Tensor:
        """Checked inputs -> logits `(b, n)`."""
        return rearrange(self.to_logits(self._embed(inputs)), "b n 1 -> b n")

    @typechecked
    def forward(
        self,
        x: Tensor,
        text_mask: Tensor | None = None,
        cond_drop_prob: float | None = None,
        context: Tensor | None = None,
        video_mask: Tensor | None = None,
        video_patch_shape: tuple[int, ...] | None = None,
    ) -> Tensor:
        """Token ids `(b, n)` + `video_patch_shape`, or `(b, t', h, w)` -> logits `(b, n)`.

        `cond_drop_prob=None` means 0 (the reference compared None with 0 and raised TypeError
        when called with a context: defect P14).
        """
        drop = 0.0 if cond_drop_prob is None else cond_drop_prob
        inputs = self._check_inputs(x, video_patch_shape, context, text_mask, video_mask, drop)
        return self._logits(self._drop_text(inputs, drop))

    @typechecked
    def forward_with_cond_scale(
        self,
        x: Tensor,
        *,
        cond_scale: float = 3.0,
        text_mask: Tensor | None = None,
        context: Tensor | None = None,
        video_mask: Tensor | None = None,
        video_patch_shape: tuple[int, ...] | None = None,
    ) -> Tensor:
        """Guided logits `ℓ_∅ + s (ℓ_c - ℓ_∅)` in one `2b` forward (plain forward when `s = 1` or
        without a context)."""
        inputs = self._check_inputs(x, video_patch_shape, context, text_mask, video_mask)
        return guided(self._logits, inputs, cond_scale)
