"""Text conditioning for Phenaki: captions -> token embeddings and their padding mask.

`TextEncoder` wraps a frozen T5 encoder (``google/t5-v1_1-base`` by default, as the reference),
any other Hugging Face encoder, an injected ``nn.Module`` with its tokenizer, or a plain function,
and returns the last hidden states ``(b, m, d)`` (float32) with a ``(b, m)`` bool mask, ``True``
on real tokens.

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
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mp_layers.text import from_pretrained, looks_like_path, resolve_max_length, target_device
from mp_layers.typecheck import typechecked

__all__ = ["DEFAULT_MAX_LENGTH", "DEFAULT_T5_NAME", "TextEncoder"]

DEFAULT_T5_NAME = "google/t5-v1_1-base"
# The reference's truncation, used when neither the tokenizer nor the config sets a limit (T5's
# relative positions have none).
DEFAULT_MAX_LENGTH = 256
# T5-family configs load their encoder alone (AutoModel would build and warn about the decoder).
_ENCODER_CLASSES = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}
_UNKNOWN_LENGTH = 10**9  # tokenizers without a limit report int(1e30)


def _width(config: Any) -> int | None:
    """The hidden size of a transformers config: ``d_model`` (T5) or ``hidden_size``."""
    for name in ("d_model", "hidden_size"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


class TextEncoder:
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
        for name, value in (("max_length", max_length), ("dim", dim)):
            if value is not None and value < 1:
                raise ValueError(f"expected {name} >= 1 or None, got {value}")
        if cache_size < 0:
            raise ValueError(f"expected cache_size >= 0 (0 disables the cache), got {cache_size}")
        if module is not None and function is not None:
            raise ValueError("expected module= or function=, not both")
        injected = module is not None or function is not None
        if injected and name_or_path not in (None, DEFAULT_T5_NAME):
            raise ValueError(
                f"expected name_or_path=None with module= or function=, got {name_or_path!r}"
            )
        if not injected and name_or_path is None:
            raise ValueError("expected name_or_path, module= or function=, got none of them")

        self.cache_size = cache_size
        self._max_length_arg = max_length
        self._dim_arg = dim
        self._local_files_only = local_files_only
        self._source = None if injected or name_or_path is None else os.fspath(name_or_path)
        self._is_path = self._source is not None and (
            isinstance(name_or_path, os.PathLike) or looks_like_path(self._source)
        )
        self._model: nn.Module | None = module
        self._function = function
        self._tokenizer: Any = tokenizer
        self._tokenizer_loaded = False  # loaded by us (dropped on pickling) rather than injected
        self._config: Any = None
        self._dim: int | None = None
        self._max_length: int | None = None
        self._cache: OrderedDict[str, Tensor] = OrderedDict()

        if module is not None:
            if tokenizer is None:
                raise TypeError("an injected module= needs tokenizer=, got tokenizer=None")
            self._dim = self._checked_dim(getattr(module, "config", None))
        elif function is not None:
            if dim is None:
                raise ValueError(
                    "function= returns embeddings of a width this encoder cannot read; pass dim="
                )
            for name, value in (("tokenizer", tokenizer), ("max_length", max_length)):
                if value is not None:
                    raise ValueError(f"{name}= is not used with function=; got {value!r}")
            self._dim = dim

    # ------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        """Embedding width; for a name or folder read from its config only (no weights)."""
        if self._dim is None:
            self._dim = self._checked_dim(self._load_config())
        return self._dim

    @property
    def is_loaded(self) -> bool:
        """Whether the encoder's weights are in memory (always true unless given by name/folder)."""
        return self._source is None or self._model is not None

    @property
    def name_or_path(self) -> str | None:
        """The Hugging Face name or folder given, or ``None`` for an injected encoder."""
        return self._source

    def clear_cache(self) -> None:
        """Forget every cached embedding."""
        self._cache.clear()

    def __repr__(self) -> str:
        what = repr(self._source) if self._source else type(self._model or self._function).__name__
        return f"{type(self).__name__}({what}, cache={len(self._cache)}/{self.cache_size})"

    def __deepcopy__(self, memo: dict[int, Any]) -> TextEncoder:
        return self  # frozen: copies share the weights and the cache

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        if self._source is not None:
            state["_model"] = None  # reloads lazily
            if self._tokenizer_loaded:
                state["_tokenizer"], state["_tokenizer_loaded"] = None, False
        return state

    # ------------------------------------------------------------------ loading

    def _checked_dim(self, config: Any) -> int:
        width = _width(config)
        if width is None:
            if self._dim_arg is None:
                raise ValueError(
                    "cannot tell the encoder's width: its config has no d_model or hidden_size; "
                    "pass dim="
                )
            return self._dim_arg
        if self._dim_arg is not None and self._dim_arg != width:
            raise ValueError(f"expected dim={self._dim_arg} to match the encoder's width {width}")
        return width

    def _from_pretrained(self, class_name: str) -> Any:
        assert self._source is not None  # internal invariant, not user input
        return from_pretrained(
            class_name,
            self._source,
            is_path=self._is_path,
            local_files_only=self._local_files_only,
            extra="phenaki[text]",
            remedy="pass the path of a folder saved with save_pretrained or download the model "
            'first, with `pip install "phenaki[text]"` (T5\'s tokenizer needs sentencepiece and '
            "protobuf)",
        )

    def _load_config(self) -> Any:
        if self._config is None:
            self._config = (
                self._from_pretrained("AutoConfig")
                if self._source is not None
                else getattr(self._model, "config", None)
            )
        return self._config

    def _load(self) -> nn.Module:
        if self._model is None:
            config = self._load_config()
            if self._tokenizer is None:
                self._tokenizer = self._from_pretrained("AutoTokenizer")
                self._tokenizer_loaded = True
            model = self._from_pretrained(_ENCODER_CLASSES.get(config.model_type, "AutoModel"))
            if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
                model = model.get_encoder()  # only the encoder embeds text
            self._model = model.requires_grad_(False)
            _ = self.dim  # check dim= against the config
        return self._model

    def _resolved_max_length(self) -> int:
        if self._max_length is None:
            limit = resolve_max_length(self._max_length_arg, self._tokenizer, self._load_config())
            self._max_length = (
                DEFAULT_MAX_LENGTH if limit is None or limit >= _UNKNOWN_LENGTH else limit
            )
        return self._max_length

    # ------------------------------------------------------------------ encoding

    @typechecked
    def __call__(
        self, texts: str | Sequence[str], device: torch.device | str | None = None
    ) -> tuple[Tensor, Tensor]:
        """Embed ``b`` texts -> ``(embeds (b, m, dim) float32, mask (b, m) bool)`` on ``device``.

        ``m`` is the longest text's token count (after truncation); padded rows are zero.
        """
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not batch:
            raise ValueError("expected at least one text, got an empty sequence")
        for i, text in enumerate(batch):
            if not isinstance(text, str):
                raise TypeError(f"expected texts to be str, got {type(text).__name__} at index {i}")
        target = target_device(device)
        if self._function is not None:
            return self._call_function(batch, target)

        rows: dict[str, Tensor] = {}
        for text in batch:
            if self.cache_size and text in self._cache and text not in rows:
                self._cache.move_to_end(text)
                rows[text] = self._cache[text]
        missing = list(dict.fromkeys(t for t in batch if t not in rows))  # unique, in order
        if missing:
            for text, row in zip(missing, self._encode(missing, target), strict=True):
                rows[text] = row
                if self.cache_size:
                    self._cache[text] = row.to("cpu", copy=True)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

        lengths = [rows[text].shape[0] for text in batch]
        embeds = torch.zeros(len(batch), max(lengths), self.dim, device=target)
        mask = torch.zeros(len(batch), max(lengths), dtype=torch.bool, device=target)
        for i, (text, n) in enumerate(zip(batch, lengths, strict=True)):
            embeds[i, :n] = rows[text].to(target)
            mask[i, :n] = True
        return embeds, mask

    @torch.no_grad()
    def _encode(self, texts: list[str], device: torch.device) -> list[Tensor]:
        """``b`` texts -> their real tokens' last hidden states ``(n_i, dim)`` float32."""
        model = self._load()
        first = next(model.parameters(), None)
        if first is not None and first.device != device:
            model.to(device)
        model.eval()
        tokens = self._tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self._resolved_max_length(),
            return_tensors="pt",
        )
        mask = tokens["attention_mask"].to(device)
        outputs = model(input_ids=tokens["input_ids"].to(device), attention_mask=mask)
        hidden = getattr(outputs, "last_hidden_state", None)
        hidden = (outputs[0] if hidden is None else hidden).float()
        if hidden.shape[-1] != self.dim:
            raise ValueError(f"expected encoder states of width {self.dim}, got {hidden.shape[-1]}")
        return [hidden[i][mask[i].bool()] for i in range(len(texts))]

    @torch.no_grad()
    def _call_function(self, texts: list[str], device: torch.device) -> tuple[Tensor, Tensor]:
        assert self._function is not None  # internal invariant, not user input
        out = self._function(texts, device)
        embeds, mask = out if isinstance(out, tuple) and len(out) == 2 else (out, None)
        b = len(texts)
        if (
            not isinstance(embeds, Tensor)
            or not isinstance(mask, Tensor)
            or embeds.ndim != 3
            or tuple(embeds.shape[::2]) != (b, self.dim)
            or tuple(mask.shape) != tuple(embeds.shape[:2])
        ):
            raise ValueError(
                f"expected function= to return (embeds ({b}, m, {self.dim}), mask ({b}, m)), got "
                f"{_describe(out)}"
            )
        mask = mask.to(device=device, dtype=torch.bool)
        embeds = embeds.to(device=device, dtype=torch.float32)
        return embeds.masked_fill(~mask.unsqueeze(-1), 0.0), mask


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_describe(v) for v in value) + ")"
    return type(value).__name__
