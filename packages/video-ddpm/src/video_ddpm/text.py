"""Text conditioning: turn captions into one embedding vector each.

`TextEncoder` is `mp_layers.text_encoder.TextEncoder` with Video Diffusion Models' defaults: a
frozen BERT (``bert-base-cased``, as the reference), mean pooling, ``(batch, dim)`` float32
embeddings, the encoder given as one positional argument (a name or folder, an ``nn.Module`` or a
plain callable), a cache of 4096 captions, and ``video-ddpm[text]`` as the install hint.

Differences from the reference (video-diffusion-pytorch 0.6.1, ``text.py``):

- weights load through ``transformers`` on first call (never at import or construction), from a
  Hugging Face name or a local folder, instead of ``torch.hub`` (which always needs the network);
- the encoder runs on the device the caller asks for, never ``.cuda()`` on its own;
- tokens are truncated to the model's maximum length, so long captions no longer crash;
- one pooling per encoder instance, so training and sampling cannot disagree;
- embeddings of captions already seen are cached (LRU), so a training loop over a few dozen
  captions runs the encoder once per caption;
- it is a plain object, not an ``nn.Module``: a diffusion model holding it never puts the encoder's
  weights in its ``state_dict`` or optimizer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from mp_layers.text import default_text_encoder_path, target_device
from mp_layers.text_encoder import POOLINGS as POOLINGS  # importable from here, as in 0.1.0
from mp_layers.text_encoder import TextEncoder as _TextEncoder
from mp_layers.typecheck import typechecked

__all__ = ["TextEncoder", "default_text_encoder_path"]


class TextEncoder(_TextEncoder):
    """Frozen text encoder: ``texts -> (b, dim)`` float32 embeddings.

    Args:
        encoder: one of
            - a Hugging Face encoder name (``"bert-base-cased"``) or a local folder (``str`` or
              ``os.PathLike``), loaded lazily on the first call with ``AutoTokenizer`` and
              ``AutoModel`` (``T5EncoderModel`` for T5 configs; encoder-decoder models use their
              encoder);
            - an ``nn.Module`` such as a ``transformers`` model, called as
              ``module(input_ids=(b, n), attention_mask=(b, n))`` and returning the last hidden
              state ``(b, n, dim)`` (as ``.last_hidden_state`` or first output); needs
              ``tokenizer=``;
            - a plain callable ``fn(texts: list[str]) -> (b, dim)`` tensor, used as is (no
              tokenizer, no pooling); needs ``dim=``.
        pooling: how token states ``(b, n, dim)`` become one vector ``(b, dim)``:
            ``"mean"`` averages the real (unpadded) tokens *excluding the first one* ([CLS]), as
            the reference does (so [SEP] is included), with ``eps = 1e-8`` in the denominator;
            ``"cls"`` takes the first token's state. Not applied to a plain callable.
        tokenizer: a Hugging Face tokenizer (callable with ``padding``, ``truncation``,
            ``max_length``, ``return_tensors="pt"``). Required with an ``nn.Module``; with a name
            or folder it replaces the loaded one.
        max_length: tokens kept per text (longer texts are truncated). Default: the tokenizer's
            ``model_max_length`` capped at the model's ``max_position_embeddings``.
        dim: the embedding width. Required with a plain callable; otherwise read from the model's
            config (``hidden_size``) and, when given, checked against it.
        cache_size: how many captions' embeddings to keep (on CPU, least recently used evicted);
            ``0`` disables the cache.
        local_files_only: passed to ``from_pretrained``. Default: ``True`` for an existing local
            folder, transformers' default (which honours ``HF_HUB_OFFLINE``) for a name.

    Call it with ``texts`` (one string or a sequence of them) and optionally ``device=`` (default
    CPU); the encoder moves to that device and runs in eval mode under ``torch.no_grad()``.

    Copies (``copy.deepcopy``, e.g. an EMA copy of the model holding it) share this encoder: it is
    frozen, so one set of weights and one cache serve every copy. Pickling drops weights loaded by
    name or folder (they reload lazily) and the cache.
    """

    extra = "video-ddpm[text]"
    remedy = (
        "pass the path of a folder saved with save_pretrained (for an offline default, "
        "video_ddpm.text.default_text_encoder_path()) or download the model first"
    )
    _module_words = "nn.Module encoder"
    _function_words = "a plain callable encoder"

    @typechecked
    def __init__(
        self,
        encoder: str | os.PathLike[str] | nn.Module | Callable[..., Any] = "bert-base-cased",
        *,
        pooling: str = "mean",
        tokenizer: object | None = None,
        max_length: int | None = None,
        dim: int | None = None,
        cache_size: int = 4096,
        local_files_only: bool | None = None,
    ) -> None:
        name: str | os.PathLike[str] | None = None
        module: nn.Module | None = None
        function: Callable[..., Any] | None = None
        if isinstance(encoder, (str, os.PathLike)):
            name = encoder
        elif isinstance(encoder, nn.Module):
            module = encoder
        else:
            function = encoder
        super().__init__(
            name,
            module=module,
            function=function,
            pooling=pooling,
            tokenizer=tokenizer,
            max_length=max_length,
            dim=dim,
            cache_size=cache_size,
            local_files_only=local_files_only,
        )

    @property
    def encoder_name(self) -> str | None:
        """The Hugging Face name or folder given, or ``None`` for an injected encoder."""
        return self.name_or_path

    @typechecked
    def __call__(
        self, texts: str | Sequence[str], *, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Embed ``texts``: a string or ``b`` strings -> ``(b, dim)`` float32 on ``device``.

        ``device`` defaults to CPU; the encoder moves there (and stays) if it is elsewhere.
        """
        return self._pooled(self._batch(texts), target_device(device))
