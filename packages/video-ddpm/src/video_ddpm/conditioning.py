"""Conditioning of the Gaussian diffusion: condition checks, text embedding and guidance.

A condition is None, a float tensor `(b, cond_dim)` (e.g. a one-hot class) or a list of strings,
embedded `(b, dim)` by a text encoder: any callable `encoder(texts, device=...)`, or one created on
first use from a name (a `video_ddpm.text.TextEncoder`). The encoder lives outside the module tree
(`TextEncoderSlot`), so its weights never reach a state dict or an optimizer. Classifier-free
guidance is the network's: `guided_output` calls `denoise_fn.forward_with_cond_scale`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, nn

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "Cond",
    "TextEncoderLike",
    "TextEncoderSlot",
    "check_cond",
    "check_cond_tensor",
    "embed_texts",
    "guided_output",
    "resolve_text_encoder",
]

Cond = Tensor | list[str] | tuple[str, ...] | None
TextEncoderLike = Callable[..., Any]

DEFAULT_TEXT_ENCODER = "bert-base-cased"
"""The reference's text encoder: created when `denoise_fn.use_bert_text_cond` and none is given."""


class TextEncoderSlot:
    """Holds the text encoder outside the module tree, so its weights never enter `state_dict`,
    `parameters()` or an optimizer. Copies (e.g. an EMA model) share the one frozen encoder."""

    def __init__(self, encoder: TextEncoderLike | None) -> None:
        self.encoder = encoder

    def __deepcopy__(self, memo: dict[int, Any]) -> TextEncoderSlot:
        return self


# ---------------------------------------------------------------------------------------------
# checks


def check_cond_tensor(cond: Tensor, *, cond_dim: int | None, batch: int | None) -> None:
    """A float `(batch, cond_dim)` tensor (either left unchecked when None)."""
    if not cond.is_floating_point() or cond.ndim != 2:
        raise ValueError(
            f"cond: expected a float tensor (b, cond_dim), got {cond.dtype} {tuple(cond.shape)}"
        )
    if cond_dim is not None and cond.shape[-1] != cond_dim:
        raise ValueError(
            f"cond: expected embedding width denoise_fn.cond_dim={cond_dim}, got {cond.shape[-1]}"
        )
    if batch is not None and cond.shape[0] != batch:
        raise ValueError(f"cond: expected batch size {batch}, got {cond.shape[0]}")


def _check_texts(texts: list[str] | tuple[str, ...]) -> None:
    if not texts or not all(isinstance(text, str) for text in texts):
        raise TypeError(f"cond: expected a non-empty list of str, got {texts!r}")


def check_cond(cond: Cond, denoise_fn: nn.Module, batch: int | None = None) -> None:
    """The checks a condition passes before any embedding: a conditional network, and a tensor
    `(batch, denoise_fn.cond_dim)` or a non-empty list of strings (embedded texts are checked by
    `check_cond_tensor` once embedded)."""
    if cond is None:
        return
    if not getattr(denoise_fn, "has_cond", True):
        raise ValueError("cond: the network is unconditional (has_cond=False), got a condition")
    if isinstance(cond, Tensor):
        check_cond_tensor(cond, cond_dim=getattr(denoise_fn, "cond_dim", None), batch=batch)
    else:
        _check_texts(cond)


# ---------------------------------------------------------------------------------------------
# text embedding


def resolve_text_encoder(
    slot: TextEncoderSlot, *, name: str | None, denoise_fn: nn.Module, use_cls: bool
) -> TextEncoderLike:
    """The encoder in `slot`, created there on first use from `name` (never at construction):
    `name`, else `DEFAULT_TEXT_ENCODER` when `denoise_fn.use_bert_text_cond`, pooled with "cls"
    when `use_cls` else "mean"."""
    if slot.encoder is not None:
        return slot.encoder
    if name is None and getattr(denoise_fn, "use_bert_text_cond", False):
        name = DEFAULT_TEXT_ENCODER
    if name is None:
        raise ValueError(
            "cond: got a list of strings, but no text_encoder was given and "
            "denoise_fn.use_bert_text_cond is not set; expected a tensor (b, cond_dim)"
        )
    from video_ddpm.text import TextEncoder  # lazy: transformers is an optional extra

    pooling = "cls" if use_cls else "mean"
    with torch.inference_mode(False):
        slot.encoder = TextEncoder(name, pooling=pooling)
    return slot.encoder


def embed_texts(
    encoder: TextEncoderLike, texts: list[str] | tuple[str, ...], device: torch.device
) -> Tensor:
    """Embed texts with the (frozen) encoder, without gradients: `(len(texts), dim)`."""
    with torch.no_grad():
        embedded = encoder(list(texts), device=device)
    if not isinstance(embedded, Tensor) or embedded.ndim != 2 or len(embedded) != len(texts):
        given = tuple(embedded.shape) if isinstance(embedded, Tensor) else type(embedded)
        raise ValueError(f"text_encoder: expected a tensor ({len(texts)}, dim), got {given}")
    return embedded


# ---------------------------------------------------------------------------------------------
# guidance


def guided_output(
    denoise_fn: nn.Module, x: Tensor, t: Tensor, cond: Tensor | None, cond_scale: float
) -> Tensor:
    """The network's prediction at `x (b, c, f, h, w)`, `t (b,)` with classifier-free guidance
    `null + (cond - null) · cond_scale` (Ho & Salimans 2022), through its
    `forward_with_cond_scale`."""
    guided = cast(Callable[..., Tensor], denoise_fn.forward_with_cond_scale)
    return guided(x, t, cond=cond, cond_scale=cond_scale)
