"""The token-transformer trunk that `MaskGit` and `TokenCritic` share.

Both read a `(t', h, w)` grid of C-ViViT token ids (`[0, num_tokens]`, the last id is the mask):
`h_0 = E_tok[x] + E_pos[0..n)`, a `phenaki.attention.Transformer` with PEG (and cross-attention to
text embeddings when conditional), and a linear head `to_logits`. `TokenTransformer` holds those
layers (as `token_emb`, `pos_emb`, optionally `continuous_pos_bias`, `transformer`, `to_logits`:
the state-dict keys of both models), the checks of their inputs, condition dropout and
classifier-free guidance (Ho & Salimans 2022) `ℓ = ℓ_∅ + s (ℓ_c - ℓ_∅)` in one batched forward.

Token inputs are ids `(b, n)` with `video_patch_shape=(t', h, w)`, or `(b, t', h, w)`. Text
embeddings are `(b, m, dim_context)` with an optional `text_mask (b, m)` (True = keep);
`video_mask (b, n)` masks self-attention keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from phenaki.attention import ContinuousPositionBias, Transformer

__all__ = ["TokenInputs", "TokenTransformer", "guided"]

PatchShape = tuple[int, int, int]
# (token ids (b, n), patch shape, context, text mask, video mask), all checked
TokenInputs = tuple[Tensor, PatchShape, Tensor | None, Tensor | None, Tensor | None]


# ------------------------------------------------------------------ construction checks


def check_transformer_kwargs(
    owner: str, kwargs: dict[str, Any], reserved: tuple[str, ...], need_context: bool
) -> None:
    """`transformer_kwargs` set none of the `reserved` names, hold `depth` and, for
    cross-attention, `dim_context`."""
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


def check_scalars(owner: str, **values: int) -> None:
    """Every named value is `>= 1`."""
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{owner}: expected {name} >= 1, got {value}")


# ------------------------------------------------------------------ input checks


def _check_drop_prob(cond_drop_prob: float) -> None:
    if not 0.0 <= cond_drop_prob <= 1.0:
        raise ValueError(f"cond_drop_prob: expected a value in [0, 1], got {cond_drop_prob}")


def _flat_ids(
    owner: str, x: Tensor, video_patch_shape: tuple[int, ...] | None
) -> tuple[Tensor, PatchShape]:
    """Integer ids `(b, n)` with a patch shape, or `(b, t, h, w)` -> ids `(b, n)` and the grid."""
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{owner}: expected integer token ids, got {x.dtype}")
    if x.ndim == 4:
        grid = (x.shape[1], x.shape[2], x.shape[3])
        if video_patch_shape is not None and tuple(video_patch_shape) != grid:
            raise ValueError(
                f"video_patch_shape: expected None or {grid} for ids of shape {tuple(x.shape)}, "
                f"got {tuple(video_patch_shape)}"
            )
        return rearrange(x, "b t h w -> b (t h w)"), grid
    if x.ndim == 2:
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
        return x, grid
    raise ValueError(
        f"{owner}: expected token ids of shape (b, n) or (b, t, h, w), got {tuple(x.shape)}"
    )


def _check_ids(owner: str, x: Tensor, grid: PatchShape, num_tokens: int, max_seq_len: int) -> None:
    n = x.shape[1]
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


def _check_text(
    owner: str,
    x: Tensor,
    context: Tensor | None,
    text_mask: Tensor | None,
    dim_context: int | None,
) -> tuple[Tensor | None, Tensor | None]:
    """The context and its bool text mask (all True over the text when not given)."""
    batch = x.shape[0]
    if context is None:
        if text_mask is not None:
            raise ValueError("text_mask: expected None without a context, got a tensor")
        return None, None
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
    return context, text_mask.bool()


# ------------------------------------------------------------------ guidance


def _keep_rows(batch: int, drop_prob: float, device: torch.device) -> Tensor:
    """`(b,)` bool: True for the rows whose condition is kept (each dropped with `drop_prob`)."""
    if drop_prob <= 0:
        return torch.ones(batch, dtype=torch.bool, device=device)
    if drop_prob >= 1:
        return torch.zeros(batch, dtype=torch.bool, device=device)
    return torch.rand(batch, device=device) >= drop_prob


def _doubled(inputs: TokenInputs) -> TokenInputs:
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


def guided(fn: Callable[[TokenInputs], Tensor], inputs: TokenInputs, cond_scale: float) -> Tensor:
    """`fn` guided with scale `s = cond_scale`: `fn_∅ + s (fn_c - fn_∅)` from one forward of the
    doubled `2b` batch; the plain `fn(inputs)` when `s = 1` or without a context."""
    if cond_scale == 1 or inputs[2] is None:
        return fn(inputs)
    return _guide(fn(_doubled(inputs)), cond_scale)


# ------------------------------------------------------------------ trunk


class TokenTransformer(nn.Module):
    """Token + learned absolute position embeddings, an optional 3-D continuous position bias over
    `(t', h, w)`, an optional gradient shrink, a `Transformer` with PEG, and `to_logits`
    (`Linear(dim, num_logits)`). The base of `MaskGit` and `TokenCritic`, which check their
    arguments and pass `transformer_kwargs` on (`dim_context` among them when `conditional`).

    `_embed(inputs)`: checked inputs -> final embeddings `(b, n, dim)`.
    """

    _owner = "TokenTransformer"  # the model named in error messages

    def __init__(
        self,
        *,
        dim: int,
        num_tokens: int,
        max_seq_len: int,
        conditional: bool,
        num_logits: int,
        logits_bias: bool,
        position_bias: bool = False,
        gradient_shrink_alpha: float | None = None,
        **transformer_kwargs: Any,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.num_tokens = num_tokens
        self.mask_id = num_tokens
        self.max_seq_len = max_seq_len
        self.dim_context: int | None = transformer_kwargs["dim_context"] if conditional else None
        self.gradient_shrink_alpha = gradient_shrink_alpha
        self.token_emb = nn.Embedding(num_tokens + 1, dim)
        self.pos_emb = nn.Embedding(max_seq_len, dim)
        self.continuous_pos_bias: ContinuousPositionBias | None = None
        if position_bias:
            self.continuous_pos_bias = ContinuousPositionBias(
                dim=transformer_kwargs["dim_head"], heads=transformer_kwargs["heads"], num_dims=3
            )
        self.transformer = Transformer(dim, peg=True, **transformer_kwargs)
        self.to_logits = nn.Linear(dim, num_logits, bias=logits_bias)

    def _check_inputs(
        self,
        x: Tensor,
        video_patch_shape: tuple[int, ...] | None,
        context: Tensor | None,
        text_mask: Tensor | None,
        video_mask: Tensor | None,
        cond_drop_prob: float = 0.0,
    ) -> TokenInputs:
        """Validate the dropout probability, token ids, patch shape, context and masks; return
        ids flattened to `(b, n)`, the patch shape, the context, the text mask (all True over the
        text when not given) and the video mask, both as bool."""
        _check_drop_prob(cond_drop_prob)
        x, grid = _flat_ids(self._owner, x, video_patch_shape)
        _check_ids(self._owner, x, grid, self.num_tokens, self.max_seq_len)
        if video_mask is not None:
            if video_mask.shape != x.shape:
                raise ValueError(
                    f"video_mask: expected shape {tuple(x.shape)}, got {tuple(video_mask.shape)}"
                )
            video_mask = video_mask.bool()
        context, text_mask = _check_text(self._owner, x, context, text_mask, self.dim_context)
        return x, grid, context, text_mask, video_mask

    @staticmethod
    def _drop_text(inputs: TokenInputs, cond_drop_prob: float) -> TokenInputs:
        """Condition dropout: each row's text is dropped (its mask row set to False) with
        probability `cond_drop_prob`."""
        x, grid, context, text_mask, video_mask = inputs
        if text_mask is not None and cond_drop_prob > 0:
            keep = _keep_rows(x.shape[0], cond_drop_prob, x.device)
            text_mask = text_mask & rearrange(keep, "b -> b 1")
        return x, grid, context, text_mask, video_mask

    def _embed(self, inputs: TokenInputs) -> Tensor:
        """Checked inputs -> final embeddings `(b, n, dim)`."""
        x, grid, context, text_mask, video_mask = inputs
        batch, n = x.shape
        h = self.token_emb(x) + self.pos_emb(torch.arange(n, device=x.device))
        alpha = self.gradient_shrink_alpha
        if alpha is not None:
            h = h * alpha + h.detach() * (1 - alpha)
        bias = None
        if self.continuous_pos_bias is not None:
            bias = self.continuous_pos_bias(*grid, device=x.device)
        out: Tensor = self.transformer(
            h,
            video_shape=(batch, *grid),
            attn_bias=bias,
            context=context,
            self_attn_mask=video_mask,
            cross_attn_context_mask=text_mask,
        )
        return out
