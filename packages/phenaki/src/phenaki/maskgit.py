"""MaskGIT over C-ViViT video tokens, the token critics, and the masking and sampling helpers.

Phenaki (Villegas et al. 2022, sec. 2.2) generates the C-ViViT token grid `(t', h, w)` with a
bidirectional MaskGIT transformer (Chang et al. 2022) conditioned on text embeddings by
cross-attention. Training masks a random subset `M` of the tokens `y` (replacing them by
`mask_id = num_tokens`) and minimises `L = -E[Σ_{i ∈ M} log p(y_i | y_{∖M}, text)]`; the fraction
masked is `γ(r)` for a random `r ∈ [0, 1)` (`mask_schedule`). Sampling starts from all masks and
at each of `S` steps re-masks the `γ(s / S) n` least confident tokens.

- `MaskGit`: token + learned absolute position embeddings, CogView's gradient shrink, a 3-D
  continuous position bias over `(t', h, w)`, a `phenaki.attention.Transformer` with PEG and
  cross-attention (2 null key/values, so a dropped text still has keys), and a linear head to
  `num_tokens` logits. `forward_with_cond_scale` is classifier-free guidance (Ho & Salimans 2022)
  `ℓ = ℓ_∅ + s (ℓ_c - ℓ_∅)` in one batched forward.
- `TokenCritic` (Token-Critic, Lezama et al. 2022) and `SelfCritic` (a head on MaskGit's own
  embeddings, after Nijkamp et al. 2021 "SCRIPT"): one logit per token, "this token is wrong".
- `get_mask_subset_with_prob`, `mask_schedule`, `gumbel_sample`, `critic_labels`.

MaskGit and `TokenCritic` share one trunk (`phenaki.token_transformer`: embeddings, transformer,
head, input checks, guidance); `TokenCritic` lives in `phenaki.token_critic` and the helpers in
`phenaki.masking`, all re-exported here.

Token inputs are ids `(b, n)` with `video_patch_shape=(t', h, w)`, or `(b, t', h, w)`; ids lie in
`[0, num_tokens]` (the last one is the mask). Text embeddings are `(b, m, dim_context)` with an
optional `text_mask (b, m)` (True = keep); `video_mask (b, n)` masks self-attention keys.

Defects of the reference fixed here: padding positions were chosen for masking (P3, ~51 % of the
masked positions in a test); critic labels marked unmasked ground-truth tokens "wrong" (P4);
out-of-range ids and over-long sequences ended in device-side asserts (P13); the default text
mask had the video's length, and `TokenCritic` raised TypeError when called with a context and no
`cond_drop_prob` (P14).
"""

from __future__ import annotations

from typing import Any

from einops import rearrange
from torch import Tensor, nn

from mp_layers.hub import HubModel
from mp_layers.typecheck import typechecked
from phenaki.masking import (
    MaskSchedule,
    critic_labels,
    get_mask_subset_with_prob,
    gumbel_sample,
    mask_schedule,
)
from phenaki.token_critic import TokenCritic
from phenaki.token_transformer import PatchShape as PatchShape
from phenaki.token_transformer import (
    TokenTransformer,
    check_scalars,
    check_transformer_kwargs,
    guided,
)

__all__ = [
    "MaskGit",
    "MaskSchedule",
    "SelfCritic",
    "TokenCritic",
    "critic_labels",
    "get_mask_subset_with_prob",
    "gumbel_sample",
    "mask_schedule",
]


class MaskGit(TokenTransformer, HubModel):
    """Bidirectional masked-token transformer over a `(t', h, w)` grid of video tokens.

    `h_0 = E_tok[x] + E_pos[0..n)`, then the gradient shrink of CogView (Ding et al. 2021)
    `h_0 ← α h_0 + (1 - α) sg(h_0)` (the same value, gradients into the embeddings scaled by `α`),
    a `Transformer` (PEG, self-attention with a 3-D continuous position bias, cross-attention to
    the text with 2 null key/values unless `unconditional`, GEGLU FF) and `logits = W h_L`
    (no bias). `transformer_kwargs` must hold `depth` and, unless `unconditional`, `dim_context`;
    they may not set `peg`, `has_cross_attn` or `attn_num_null_kv`.

    `forward(x, cond_drop_prob, text_mask, video_mask, video_patch_shape, return_embeds, context)`
    -> logits `(b, n, num_tokens)` or embeddings `(b, n, dim)`.
    """

    _owner = "MaskGit"

    @typechecked
    def __init__(
        self,
        *,
        dim: int,
        num_tokens: int,
        max_seq_len: int,
        gradient_shrink_alpha: float = 0.1,
        heads: int = 8,
        dim_head: int = 64,
        unconditional: bool = False,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        **transformer_kwargs: Any,
    ) -> None:
        check_scalars(
            "MaskGit",
            dim=dim,
            num_tokens=num_tokens,
            max_seq_len=max_seq_len,
            heads=heads,
            dim_head=dim_head,
        )
        if not 0.0 <= gradient_shrink_alpha <= 1.0:
            raise ValueError(
                f"gradient_shrink_alpha: expected a value in [0, 1], got {gradient_shrink_alpha}"
            )
        check_transformer_kwargs(
            "MaskGit",
            transformer_kwargs,
            ("peg", "has_cross_attn", "attn_num_null_kv"),
            need_context=not unconditional,
        )
        super().__init__(
            dim=dim,
            num_tokens=num_tokens,
            max_seq_len=max_seq_len,
            conditional=not unconditional,
            num_logits=num_tokens,
            logits_bias=False,
            position_bias=True,
            gradient_shrink_alpha=gradient_shrink_alpha,
            attn_num_null_kv=2,
            has_cross_attn=not unconditional,
            dim_head=dim_head,
            heads=heads,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            **transformer_kwargs,
        )
        self.config: dict[str, Any] = {
            "dim": dim,
            "num_tokens": num_tokens,
            "max_seq_len": max_seq_len,
            "gradient_shrink_alpha": gradient_shrink_alpha,
            "heads": heads,
            "dim_head": dim_head,
            "unconditional": unconditional,
            "attn_dropout": attn_dropout,
            "ff_dropout": ff_dropout,
            **transformer_kwargs,
        }
        self.unconditional = unconditional

    @typechecked
    def forward(
        self,
        x: Tensor,
        cond_drop_prob: float = 0.0,
        text_mask: Tensor | None = None,
        video_mask: Tensor | None = None,
        video_patch_shape: tuple[int, ...] | None = None,
        return_embeds: bool = False,
        context: Tensor | None = None,
    ) -> Tensor:
        """Token ids `(b, n)` with `video_patch_shape=(t', h, w)`, or `(b, t', h, w)` -> logits
        `(b, n, num_tokens)` (embeddings `(b, n, dim)` with `return_embeds`).

        `context (b, m, dim_context)`: text embeddings (required for the cross-attention to run;
        an unconditional model takes none); `text_mask (b, m)`, default all True; with
        `cond_drop_prob` each row's text is dropped (its mask row set to False) with that
        probability. `video_mask (b, n)`: self-attention keys to keep.
        """
        inputs = self._check_inputs(
            x, video_patch_shape, context, text_mask, video_mask, cond_drop_prob
        )
        h = self._embed(self._drop_text(inputs, cond_drop_prob))
        return h if return_embeds else self.to_logits(h)

    @typechecked
    def forward_with_cond_scale(
        self,
        x: Tensor,
        *,
        cond_scale: float = 3.0,
        text_mask: Tensor | None = None,
        video_mask: Tensor | None = None,
        video_patch_shape: tuple[int, ...] | None = None,
        return_embeds: bool = False,
        context: Tensor | None = None,
    ) -> Tensor:
        """Classifier-free guidance `ℓ = ℓ_∅ + s (ℓ_c - ℓ_∅)`, `s = cond_scale`, with `ℓ_c` the
        conditional and `ℓ_∅` the text-dropped output, computed in one forward of a `2b` batch.
        With `s = 1`, no context or an unconditional model it is the plain conditional forward.
        """
        inputs = self._check_inputs(x, video_patch_shape, context, text_mask, video_mask)
        # The head is linear and bias-free, so guiding the embeddings and then projecting equals
        # guiding the logits, with half the (vocabulary-wide) head products.
        h = guided(self._embed, inputs, cond_scale)
        return h if return_embeds else self.to_logits(h)


# ------------------------------------------------------------------ self-critic


class SelfCritic(nn.Module):
    """A critic head on MaskGit's own final embeddings (after Nijkamp et al. 2021, "SCRIPT"):
    `logit_i = w · h_L,i + b`, `> 0` meaning "token i is wrong". Gradients reach MaskGit.

    `forward(x, cond_drop_prob, text_mask, video_mask, video_patch_shape, context)` -> `(b, n)`.
    """

    @typechecked
    def __init__(self, maskgit: MaskGit) -> None:
        super().__init__()
        self.maskgit = maskgit
        self.to_pred = nn.Linear(maskgit.dim, 1)

    @property
    def has_cross_attn(self) -> bool:
        """Whether the wrapped MaskGit attends to a text."""
        return not self.maskgit.unconditional

    def _pred(self, h: Tensor) -> Tensor:
        return rearrange(self.to_pred(h), "b n 1 -> b n")

    @typechecked
    def forward(
        self,
        x: Tensor,
        cond_drop_prob: float = 0.0,
        text_mask: Tensor | None = None,
        video_mask: Tensor | None = None,
        video_patch_shape: tuple[int, ...] | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        """Token ids `(b, n)` + `video_patch_shape`, or `(b, t', h, w)` -> logits `(b, n)`."""
        h = self.maskgit(
            x,
            cond_drop_prob=cond_drop_prob,
            text_mask=text_mask,
            video_mask=video_mask,
            video_patch_shape=video_patch_shape,
            return_embeds=True,
            context=context,
        )
        return self._pred(h)

    @typechecked
    def forward_with_cond_scale(
        self,
        x: Tensor,
        *,
        cond_scale: float = 3.0,
        text_mask: Tensor | None = None,
        video_mask: Tensor | None = None,
        video_patch_shape: tuple[int, ...] | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        """Guided logits `ℓ_∅ + s (ℓ_c - ℓ_∅)` in one `2b` forward (plain forward when `s = 1`,
        without a context or over an unconditional MaskGit)."""
        inputs = self.maskgit._check_inputs(x, video_patch_shape, context, text_mask, video_mask)
        return guided(lambda checked: self._pred(self.maskgit._embed(checked)), inputs, cond_scale)
