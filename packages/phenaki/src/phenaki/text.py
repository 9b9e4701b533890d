"""Text conditioning for Phenaki: captions -> token embeddings and their padding mask.

`TextEncoder` is `mp_layers.text_encoder.TextEncoder` with Phenaki's defaults: a frozen T5
encoder (``google/t5-v1_1-base``, as the reference; any other Hugging Face encoder, an injected
``nn.Module`` with its tokenizer or a plain function also work), no pooling — the last hidden
states ``(b, m, d)`` (float32) with a ``(b, m)`` bool mask, ``True`` on real tokens —, at most
`DEFAULT_MAX_LENGTH` tokens when the model sets no limit, a cache of 256 captions and
``phenaki[text]`` as the install hint.

Differences from the reference (phenaki-pytorch ``t5.py``):

- the mask is the tokenizer's attention mask, returned with the embeddings (the reference zeroed
  the padded rows and Phenaki recovered the mask as ``any(embeds != 0)``); padded rows are still
  zero;
- weights load through ``transformers`` on the first call (never at import or construction), from
  a Hugging Face name or a local folder; when they are not available the error says which and
  what to do;
- the encoder runs on the device the caller passes, never ``.cuda()`` on its own;
- ``dim`` reads the config only, never the weights;
- embeddings of captions already seen are cached (LRU);
- it is a plain object, not an ``nn.Module``: a model holding it never saves or optimises the
  encoder's weights.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mp_layers.text import target_device
from mp_layers.text_encoder import TextEncoder as _TextEncoder
from mp_layers.typecheck import typechecked

__all__ = ["DEFAULT_MAX_LENGTH", "DEFAULT_T5_NAME", "TextEncoder"]

DEFAULT_T5_NAME = "google/t5-v1_1-base"
# The reference's truncation, used when neither the tokenizer nor the config sets a limit (T5's
# relative positions have none).
DEFAULT_MAX_LENGTH = 256


class TextEncoder(_TextEncoder):
    """Frozen text encoder: ``texts -> (embeds (b, m, dim) float32, mask (b, m) bool)``.

    Args:
        name_or_path: a Hugging Face encoder name or a local folder saved with
            ``save_pretrained``, loaded lazily on the first call with ``AutoTokenizer`` and
            ``T5EncoderModel`` (T5 configs) or ``AutoModel`` (others; encoder-decoder models use
            their encoder). Ignored (leave the default or pass ``None``) with ``module=`` or
            ``function=``.
        module: an encoder ``nn.Module`` (e.g. a transformers model), called as
            ``module(input_ids=(b, m), attention_mask=(b, m))`` and returning the last hidden
            state (as ``.last_hidden_state`` or first output). Needs ``tokenizer=``.
        tokenizer: a Hugging Face tokenizer. Required with ``module=``; with a name or folder it
            replaces the loaded one.
        function: ``function(texts: list[str], device) -> (embeds (b, m, d), mask (b, m))``, used
            as is (no tokenizer, no cache; padded rows are zeroed). Needs ``dim=``.
        max_length: tokens kept per text. Default: the tokenizer's ``model_max_length`` capped at
            the config's ``max_position_embeddings``, or `DEFAULT_MAX_LENGTH` (256, the
            reference's) when neither sets a limit.
        dim: the embedding width. Required with ``function=``; otherwise read from the config
            (``d_model`` / ``hidden_size``) and, when given, checked against it.
        cache_size: how many captions' embeddings to keep (on CPU, least recently used evicted);
            ``0`` disables the cache.
        local_files_only: passed to ``from_pretrained``. Default: ``True`` for an existing folder,
            transformers' default (which honours ``HF_HUB_OFFLINE``) for a name.

    Call it with ``texts`` (a sequence of strings, or one string) and ``device=`` (default CPU; pass
    the device of the model being conditioned): the encoder moves there and runs in eval mode under
    ``torch.no_grad()``. Texts are padded on the right to the longest one of the batch.

    Copies (``copy.deepcopy``, e.g. an EMA copy of a model holding it) share this encoder. Pickling
    drops weights loaded by name or folder (they reload lazily) and the cache.
    """

    extra = "phenaki[text]"
    remedy = (
        "pass the path of a folder saved with save_pretrained or download the model first, with "
        '`pip install "phenaki[text]"` (T5\'s tokenizer needs sentencepiece and protobuf)'
    )
    default_max_length = DEFAULT_MAX_LENGTH

    @typechecked
    def __init__(
        self,
        name_or_path: str | os.PathLike[str] | None = DEFAULT_T5_NAME,
        *,
        module: nn.Module | None = None,
        tokenizer: Any = None,
        function: Callable[..., Any] | None = None,
        max_length: int | None = None,
        dim: int | None = None,
        cache_size: int = 256,
        local_files_only: bool | None = None,
    ) -> None:
        injected = module is not None or function is not None
        super().__init__(
            None if injected and name_or_path == DEFAULT_T5_NAME else name_or_path,
            module=module,
            tokenizer=tokenizer,
            function=function,
            max_length=max_length,
            dim=dim,
            cache_size=cache_size,
            local_files_only=local_files_only,
        )

    @typechecked
    def __call__(
        self, texts: str | Sequence[str], device: torch.device | str | None = None
    ) -> tuple[Tensor, Tensor]:
        """Embed ``b`` texts -> ``(embeds (b, m, dim) float32, mask (b, m) bool)`` on ``device``.

        ``m`` is the longest text's token count (after truncation); padded rows are zero.
        """
        return self._tokens(self._batch(texts), target_device(device))
