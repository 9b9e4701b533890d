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

import math
from typing import Any, Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from mp_layers.typecheck import typechecked
from phenaki.attention import ContinuousPositionBias, Transformer

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

MaskSchedule = Literal["cosine", "linear", "sqrt"]
PatchShape = tuple[int, int, int]
# (token ids (b, n), patch shape, context, text mask, video mask), all checked
_Inputs = tuple[Tensor, PatchShape, Tensor | None, Tensor | None, Tensor | None]


# ------------------------------------------------------------------ helpers


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


def _keep_rows(batch: int, drop_prob: float, device: torch.device) -> Tensor:
    """`(b,)` bool: True for the rows whose condition is kept (each dropped with `drop_prob`)."""
    if drop_prob <= 0:
        return torch.ones(batch, dtype=torch.bool, device=device)
    if drop_prob >= 1:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    return torch.rand(batch, device=device) >= drop_prob


def _check_drop_prob(cond_drop_prob: float) -> None:
    if not 0.0 <= cond_drop_prob <= 1.0:
        raise ValueError(f"cond_drop_prob: expected a value in [0, 1], got {cond_drop_prob}")


def _check_transformer_kwargs(
    owner: str, kwargs: dict[str, Any], reserved: tuple[str, ...], need_context: bool
) -> None:
    taken = sorted(set(kwargs) & set(reserved))
    if taken:
        raise TypeError(
            f"{owner}: transformer_kwargs may not set {taken}; {owner} sets {list(reserved)} itself"
        )
    if "depth" not in kwargs:
        raise ValueError(
            f"{owner}: expected depth (the number of transformer layers) in transformer_kwargs, "
            f"got {sorted(kwargs)}"
        )
    if need_context and kwargs.get("dim_context") is None:
        raise ValueError(
            f"{owner}: expected dim_context (the width of the text embeddings) in "
            f"transformer_kwargs for cross-attention, got {sorted(kwargs)}"
        )


def _check_scalars(owner: str, **values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{owner}: expected {name} >= 1, got {value}")


def _check_inputs(
    owner: str,
    x: Tensor,
    video_patch_shape: tuple[int, ...] | None,
    num_tokens: int,
    max_seq_len: int,
    context: Tensor | None,
    text_mask: Tensor | None,
    video_mask: Tensor | None,
    dim_context: int | None,
) -> _Inputs:
    """Validate token ids, patch shape, context and masks; return ids flattened to `(b, n)`, the
    patch shape, the context, the text mask (all True over the text when not given) and the
    video mask, both as bool."""
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{owner}: expected integer token ids, got {x.dtype}")
    if x.ndim == 4:
        grid = (x.shape[1], x.shape[2], x.shape[3])
        if video_patch_shape is not None and tuple(video_patch_shape) != grid:
            raise ValueError(
                f"video_patch_shape: expected None or {grid} for ids of shape {tuple(x.shape)}, "
                f"got {tuple(video_patch_shape)}"
            )
        x = rearrange(x, "b t h w -> b (t h w)")
    elif x.ndim == 2:
        if video_patch_shape is None or len(video_patch_shape) != 3:
            raise ValueError(
                f"video_patch_shape: expected (t, h, w) for ids of shape (b, n), got "
                f"{video_patch_shape}"
            )
        grid = (video_patch_shape[0], video_patch_shape[1], video_patch_shape[2])
        if math.prod(grid) != x.shape[1]:
            raise ValueError(
                f"video_patch_shape: expected t * h * w = n = {x.shape[1]}, got {grid}"
            )
    else:
        raise ValueError(
            f"{owner}: expected token ids of shape (b, n) or (b, t, h, w), got {tuple(x.shape)}"
        )
    batch, n = x.shape
    if n > max_seq_len:
        raise ValueError(
            f"{owner}: expected at most max_seq_len = {max_seq_len} tokens, got {n} "
            f"(video_patch_shape {grid})"
        )
    if x.numel() and bool(((x < 0) | (x > num_tokens)).any()):
        raise ValueError(
            f"{owner}: expected token ids in [0, {num_tokens}] (num_tokens = {num_tokens} plus the "
            f"mask id), got ids in [{int(x.min())}, {int(x.max())}]; the vocabulary must equal "
            "the tokenizer's codebook size"
        )
    if video_mask is not None:
        if video_mask.shape != (batch, n):
            raise ValueError(
                f"video_mask: expected shape {(batch, n)}, got {tuple(video_mask.shape)}"
            )
        video_mask = video_mask.bool()
    if context is None:
        if text_mask is not None:
            raise ValueError("text_mask: expected None without a context, got a tensor")
        return x, grid, None, None, video_mask
    if dim_context is None:
        raise ValueError(
            f"context: {owner} has no cross-attention, expected None, got a tensor of shape "
            f"{tuple(context.shape)}"
        )
    if context.ndim != 3 or context.shape[0] != batch or context.shape[2] != dim_context:
        raise ValueError(
            f"context: expected shape ({batch}, m, {dim_context}), got {tuple(context.shape)}"
        )
    m = context.shape[1]
    if text_mask is None:
        text_mask = torch.ones(batch, m, dtype=torch.bool, device=x.device)
    elif text_mask.shape != (batch, m):
        raise ValueError(f"text_mask: expected shape {(batch, m)}, got {tuple(text_mask.shape)}")
    return x, grid, context, text_mask.bool(), video_mask


def _doubled(inputs: _Inputs) -> _Inputs:
    """The batch twice: conditional first, then with every text row masked (only the null
    key/values are left to the cross-attention)."""
    x, grid, context, text_mask, video_mask = inputs
    if context is None or text_mask is None:  # callers check for a context first
        raise RuntimeError("_doubled: expected a context and a text mask")
    return (
        torch.cat((x, x)),
        grid,
        torch.cat((context, context)),
        torch.cat((text_mask, torch.zeros_like(text_mask))),
        None if video_mask is None else torch.cat((video_mask, video_mask)),
    )


def _guide(out: Tensor, cond_scale: float) -> Tensor:
    """Classifier-free guidance `ℓ_∅ + s (ℓ_c - ℓ_∅)` of a doubled batch `[ℓ_c; ℓ_∅]`."""
    cond, null = out.chunk(2)
    return null + (cond - null) * cond_scale


# ------------------------------------------------------------------ MaskGit


class MaskGit(nn.Module):
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
        super().__init__()
        _check_scalars(
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
        _check_transformer_kwargs(
            "MaskGit",
            transformer_kwargs,
            ("peg", "has_cross_attn", "attn_num_null_kv"),
            need_context=not unconditional,
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
        self.dim = dim
        self.num_tokens = num_tokens
        self.mask_id = num_tokens
        self.max_seq_len = max_seq_len
        self.unconditional = unconditional
        self.dim_context: int | None = None if unconditional else transformer_kwargs["dim_context"]
        self.gradient_shrink_alpha = gradient_shrink_alpha
        self.token_emb = nn.Embedding(num_tokens + 1, dim)
        self.pos_emb = nn.Embedding(max_seq_len, dim)
        self.continuous_pos_bias = ContinuousPositionBias(dim=dim_head, heads=heads, num_dims=3)
        self.transformer = Transformer(
            dim,
            peg=True,
            attn_num_null_kv=2,
            has_cross_attn=not unconditional,
            dim_head=dim_head,
            heads=heads,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            **transformer_kwargs,
        )
        self.to_logits = nn.Linear(dim, num_tokens, bias=False)

    def _inputs(
        self,
        x: Tensor,
        video_patch_shape: tuple[int, ...] | None,
        context: Tensor | None,
        text_mask: Tensor | None,
        video_mask: Tensor | None,
    ) -> _Inputs:
        return _check_inputs(
            "MaskGit",
            x,
            video_patch_shape,
            self.num_tokens,
            self.max_seq_len,
            context,
            text_mask,
            video_mask,
            self.dim_context,
        )

    def _embed(self, inputs: _Inputs) -> Tensor:
        """Checked inputs -> final embeddings `(b, n, dim)`."""
        x, grid, context, text_mask, video_mask = inputs
        batch, n = x.shape
        h = self.token_emb(x) + self.pos_emb(torch.arange(n, device=x.device))
        alpha = self.gradient_shrink_alpha
        h = h * alpha + h.detach() * (1 - alpha)
        bias = self.continuous_pos_bias(*grid, device=x.device)
        return self.transformer(
            h,
            video_shape=(batch, *grid),
            attn_bias=bias,
            context=context,
            self_attn_mask=video_mask,
            cross_attn_context_mask=text_mask,
        )

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
        _check_drop_prob(cond_drop_prob)
        inputs = self._inputs(x, video_patch_shape, context, text_mask, video_mask)
        x, grid, context, text_mask, video_mask = inputs
        if text_mask is not None and cond_drop_prob > 0:
            keep = _keep_rows(x.shape[0], cond_drop_prob, x.device)
            text_mask = text_mask & rearrange(keep, "b -> b 1")
        h = self._embed((x, grid, context, text_mask, video_mask))
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
        inputs = self._inputs(x, video_patch_shape, context, text_mask, video_mask)
        if cond_scale == 1 or inputs[2] is None:
            h = self._embed(inputs)
            return h if return_embeds else self.to_logits(h)
        # The head is linear and bias-free, so guiding the embeddings and then projecting equals
        # guiding the logits, with half the (vocabulary-wide) head products.
        h = _guide(self._embed(_doubled(inputs)), cond_scale)
        return h if return_embeds else self.to_logits(h)


# ------------------------------------------------------------------ critics


class TokenCritic(nn.Module):
    """Token-Critic (Lezama et al. 2022): a separate transformer scoring each token of a
    (partially generated) grid, logit `> 0` meaning "this token is wrong".

    Token + position embeddings, a `Transformer` with PEG (no position bias, no gradient shrink),
    cross-attention to the text when `has_cross_attn` (`transformer_kwargs` then needs
    `dim_context`; it always needs `depth`), and `Linear(dim, 1)`.

    `forward(x, text_mask, cond_drop_prob, context, video_mask, video_patch_shape)` -> `(b, n)`.
    """

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
        super().__init__()
        _check_scalars("TokenCritic", dim=dim, num_tokens=num_tokens, max_seq_len=max_seq_len)
        _check_transformer_kwargs(
            "TokenCritic", transformer_kwargs, ("peg",), need_context=has_cross_attn
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
        self.dim = dim
        self.num_tokens = num_tokens
        self.mask_id = num_tokens
        self.max_seq_len = max_seq_len
        self.has_cross_attn = has_cross_attn
        self.dim_context: int | None = transformer_kwargs["dim_context"] if has_cross_attn else None
        self.token_emb = nn.Embedding(num_tokens + 1, dim)
        self.pos_emb = nn.Embedding(max_seq_len, dim)
        self.transformer = Transformer(
            dim,
            peg=True,
            has_cross_attn=has_cross_attn,
            attn_dropout=attn_dropout,
            ff_dropout=ff_dropout,
            **transformer_kwargs,
        )
        self.to_logits = nn.Linear(dim, 1)

    def _inputs(
        self,
        x: Tensor,
        video_patch_shape: tuple[int, ...] | None,
        context: Tensor | None,
        text_mask: Tensor | None,
        video_mask: Tensor | None,
    ) -> _Inputs:
        return _check_inputs(
            "TokenCritic",
            x,
            video_patch_shape,
            self.num_tokens,
            self.max_seq_len,
            context,
            text_mask,
            video_mask,
            self.dim_context,
        )

    def _logits(self, inputs: _Inputs) -> Tensor:
        x, grid, context, text_mask, video_mask = inputs
        batch, n = x.shape
        h = self.token_emb(x) + self.pos_emb(torch.arange(n, device=x.device))
        h = self.transformer(
            h,
            video_shape=(batch, *grid),
            context=context,
            self_attn_mask=video_mask,
            cross_attn_context_mask=text_mask,
        )
        return rearrange(self.to_logits(h), "b n 1 -> b n")

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
        _check_drop_prob(drop)
        x, grid, context, text_mask, video_mask = self._inputs(
            x, video_patch_shape, context, text_mask, video_mask
        )
        if text_mask is not None and drop > 0:
            text_mask = text_mask & rearrange(_keep_rows(x.shape[0], drop, x.device), "b -> b 1")
        return self._logits((x, grid, context, text_mask, video_mask))

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
        inputs = self._inputs(x, video_patch_shape, context, text_mask, video_mask)
        if cond_scale == 1 or inputs[2] is None:
            return self._logits(inputs)
        return _guide(self._logits(_doubled(inputs)), cond_scale)


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
        inputs = self.maskgit._inputs(x, video_patch_shape, context, text_mask, video_mask)
        if cond_scale == 1 or inputs[2] is None:
            return self._pred(self.maskgit._embed(inputs))
        return _guide(self._pred(self.maskgit._embed(_doubled(inputs))), cond_scale)
