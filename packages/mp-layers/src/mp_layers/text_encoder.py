"""`TextEncoder`: a frozen Hugging Face text encoder, captions -> pooled vectors or token states.

The one text encoder of the model packages: ``video_ddpm.text.TextEncoder`` (pooled BERT vectors)
and ``phenaki.text.TextEncoder`` (T5 token states and their mask) are small subclasses that set
their defaults. It wraps

- a Hugging Face name or a local folder, loaded with ``transformers`` on the first call (never at
  import or construction: mp-layers does not require ``transformers``), with ``T5EncoderModel``
  for T5-family configs (no decoder is built) and ``AutoModel`` otherwise (the encoder of an
  encoder-decoder model);
- an injected ``nn.Module`` with its tokenizer, or a plain function;

and returns float32 on the device the caller asks for (never ``.cuda()`` on its own): one vector
``(b, dim)`` per caption with ``pooling="mean"`` / ``"cls"``, or the last hidden states
``(b, m, dim)`` with the tokenizer's ``(b, m)`` bool mask (``True`` on real tokens, padded rows
zero) with ``pooling=None``. Texts are truncated to the model's maximum length, embeddings of
captions already seen are cached (LRU, on CPU), and it is a plain object, not an ``nn.Module``: a
model holding it never saves or optimises the encoder's weights.

A subclass sets a package's defaults with class attributes: `extra` (what the ``ImportError``
says to install), `remedy` (what a loading error tells the user to do), `default_max_length`
(tokens kept when neither tokenizer nor config sets a limit), and how errors name an injected
module and function (its constructor's words for them).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mp_layers.text import from_pretrained, looks_like_path, resolve_max_length, target_device
from mp_layers.typecheck import typechecked

__all__ = ["POOLINGS", "MissingDimError", "TextEncoder"]

POOLINGS = ("mean", "cls")
# T5-family configs load their encoder alone (AutoModel would build and warn about the decoder).
_ENCODER_CLASSES = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}
_UNKNOWN_LENGTH = 10**9  # tokenizers without a limit report int(1e30)


class MissingDimError(TypeError, ValueError):
    """The embedding width cannot be read (a function, or a config without ``d_model`` or
    ``hidden_size``) and ``dim=`` was not given. Both a `TypeError` and a `ValueError`, so code
    written against either package's encoder (one raised each) keeps catching it."""


def _width(config: Any) -> int | None:
    """The hidden size of a transformers config: ``d_model`` (T5) or ``hidden_size``."""
    for name in ("d_model", "hidden_size"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


class TextEncoder:
    """Frozen text encoder: ``texts -> (b, dim)``, or ``(embeds (b, m, dim), mask (b, m))``.

    Args:
        name_or_path: a Hugging Face encoder name or a local folder saved with
            ``save_pretrained`` (``str`` or ``os.PathLike``; a string that can only be a path
            never reaches the hub), loaded lazily on the first call. ``None`` with ``module=``
            or ``function=``.
        module: an encoder ``nn.Module`` (e.g. a transformers model), called as
            ``module(input_ids=(b, n), attention_mask=(b, n))`` and returning the last hidden
            state ``(b, n, dim)`` (as ``.last_hidden_state`` or first output). Needs
            ``tokenizer=``.
        tokenizer: a Hugging Face tokenizer (called with ``padding``, ``truncation``,
            ``max_length``, ``return_tensors="pt"``). Required with ``module=``; with a name or
            folder it replaces the loaded one.
        function: used as is (no tokenizer, no pooling); needs ``dim=``. With ``pooling`` set:
            ``function(texts: list[str]) -> (b, dim)``, called once per new caption (cached).
            With ``pooling=None``: ``function(texts, device) -> (embeds (b, m, dim), mask (b, m))``,
            called on every batch (no cache); padded rows are zeroed.
        pooling: how token states become one vector ``(b, dim)``: ``"mean"`` averages the real
            (unpadded) tokens *except the first one* ([CLS]; so [SEP] counts), as Video
            Diffusion Models' reference does, ``Σ_i m_i h_i / (Σ_i m_i + 1e-8)``; ``"cls"`` takes
            the first token's state. ``None`` (default): no pooling, per-token states and mask.
        max_length: tokens kept per text (longer texts are truncated). Default: the tokenizer's
            ``model_max_length`` capped at the config's ``max_position_embeddings``, else
            `default_max_length` (``None``: no limit).
        dim: the embedding width. Required with ``function=``; otherwise read from the config
            (``d_model`` / ``hidden_size``) and, when given, checked against it.
        cache_size: how many captions' embeddings to keep (on CPU, least recently used evicted);
            ``0`` disables the cache.
        local_files_only: passed to ``from_pretrained``. Default: ``True`` for an existing local
            folder, transformers' default (which honours ``HF_HUB_OFFLINE``) for a name.

    Call it with ``texts`` (one string or a sequence of them) and ``device=`` (default CPU; pass
    the device of the model being conditioned): the encoder moves there (and stays) and runs in
    eval mode under ``torch.no_grad()``. Texts are padded on the right to the longest of the batch.

    Copies (``copy.deepcopy``, e.g. an EMA copy of a model holding it) share this encoder: it is
    frozen, so one set of weights and one cache serve every copy. Pickling drops weights loaded by
    name or folder (they reload lazily) and the cache.
    """

    #: the install hint of the ``ImportError`` when ``transformers`` is missing
    extra: ClassVar[str] = "transformers"
    #: the end of the ``OSError`` when a name or folder cannot be loaded: what to do
    remedy: ClassVar[str] = (
        "pass the path of a folder saved with save_pretrained (for an offline default, "
        "mp_layers.text.default_text_encoder_path()) or download the model first"
    )
    #: tokens kept when neither the tokenizer nor the config sets a limit (``None``: no limit)
    default_max_length: ClassVar[int | None] = None
    # How error messages name an injected module and function (a subclass's argument names).
    _module_words: ClassVar[str] = "module="
    _function_words: ClassVar[str] = "function="

    @typechecked
    def __init__(
        self,
        name_or_path: str | os.PathLike[str] | None = None,
        *,
        module: nn.Module | None = None,
        tokenizer: Any = None,
        function: Callable[..., Any] | None = None,
        pooling: str | None = None,
        max_length: int | None = None,
        dim: int | None = None,
        cache_size: int = 256,
        local_files_only: bool | None = None,
    ) -> None:
        if pooling is not None and pooling not in POOLINGS:
            raise ValueError(f"expected pooling in {POOLINGS}, got {pooling!r}")
        for name, value in (("max_length", max_length), ("dim", dim)):
            if value is not None and value < 1:
                raise ValueError(f"expected {name} >= 1 or None, got {value}")
        if cache_size < 0:
            raise ValueError(f"expected cache_size >= 0 (0 disables the cache), got {cache_size}")
        if module is not None and function is not None:
            raise ValueError("expected module= or function=, not both")
        injected = module is not None or function is not None
        if injected and name_or_path is not None:
            raise ValueError(
                f"expected name_or_path=None with module= or function=, got {name_or_path!r}"
            )
        if not injected and name_or_path is None:
            raise ValueError("expected name_or_path, module= or function=, got none of them")

        self.pooling = pooling
        self.cache_size = cache_size
        self._max_length_arg = max_length
        self._dim_arg = dim
        self._local_files_only = local_files_only
        self._source = None if name_or_path is None else os.fspath(name_or_path)
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
                raise TypeError(
                    f"an injected {self._module_words} needs tokenizer= (a Hugging Face "
                    "tokenizer), got tokenizer=None"
                )
            self._dim = self._checked_dim(getattr(module, "config", None))
        elif function is not None:
            if dim is None:
                raise MissingDimError(
                    f"{self._function_words} returns embeddings of a width this encoder cannot "
                    "read; pass dim=, got dim=None"
                )
            for name, value in (("tokenizer", tokenizer), ("max_length", max_length)):
                if value is not None:
                    raise ValueError(
                        f"{name}= is not used with {self._function_words}; expected None, "
                        f"got {value!r}"
                    )
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
        if self._source is not None:
            what = repr(self._source)
        else:
            what = type(self._model if self._model is not None else self._function).__name__
        pooling = "" if self.pooling is None else f", pooling={self.pooling!r}"
        return f"{type(self).__name__}({what}{pooling}, cache={len(self._cache)}/{self.cache_size})"

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
                raise MissingDimError(
                    "cannot tell the encoder's width: its config has no d_model or hidden_size; "
                    "pass dim="
                )
            return self._dim_arg
        if self._dim_arg is not None and self._dim_arg != width:
            raise ValueError(
                f"expected dim={self._dim_arg} to match the encoder's width (its config's d_model "
                f"or hidden_size), got {width}"
            )
        return width

    def _from_pretrained(self, class_name: str) -> Any:
        assert self._source is not None  # internal invariant, not user input
        return from_pretrained(
            class_name,
            self._source,
            is_path=self._is_path,
            local_files_only=self._local_files_only,
            extra=self.extra,
            remedy=self.remedy,
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
            class_name = _ENCODER_CLASSES.get(getattr(config, "model_type", ""), "AutoModel")
            model = self._from_pretrained(class_name)
            if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
                model = model.get_encoder()  # only the encoder embeds text
            self._model = model.requires_grad_(False)
            _ = self.dim  # check dim= against the config
        return self._model

    def _resolved_max_length(self) -> int | None:
        if self._max_length is None:
            limit = resolve_max_length(self._max_length_arg, self._tokenizer, self._load_config())
            known = limit is not None and limit < _UNKNOWN_LENGTH
            self._max_length = limit if known else self.default_max_length
        return self._max_length

    # ------------------------------------------------------------------ encoding

    @typechecked
    def __call__(
        self, texts: str | Sequence[str], *, device: torch.device | str | None = None
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Embed ``b`` texts (a string or a sequence of them) on ``device`` (default CPU).

        Returns ``(b, dim)`` float32 when `pooling` is set, else ``(embeds (b, m, dim) float32,
        mask (b, m) bool)`` with ``m`` the longest text's token count (after truncation) and the
        padded rows zero.
        """
        batch, target = self._batch(texts), target_device(device)
        if self.pooling is None:
            return self._tokens(batch, target)
        return self._pooled(batch, target)

    def _batch(self, texts: str | Sequence[str]) -> list[str]:
        """``texts`` as a non-empty list of strings (checked before anything loads)."""
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not batch:
            raise ValueError("expected at least one text, got an empty sequence")
        for i, text in enumerate(batch):
            if not isinstance(text, str):
                raise TypeError(f"expected texts to be str, got {type(text).__name__} at index {i}")
        return batch

    def _pooled(self, batch: list[str], device: torch.device) -> Tensor:
        """``b`` texts -> ``(b, dim)`` float32 on ``device``."""
        rows = self._rows(batch, device)
        return torch.stack([rows[text].to(device) for text in batch])

    def _tokens(self, batch: list[str], device: torch.device) -> tuple[Tensor, Tensor]:
        """``b`` texts -> ``(embeds (b, m, dim) float32, mask (b, m) bool)`` on ``device``."""
        if self._function is not None:
            return self._call_function(batch, device)
        rows = self._rows(batch, device)
        lengths = [rows[text].shape[0] for text in batch]
        embeds = torch.zeros(len(batch), max(lengths), self.dim, device=device)
        mask = torch.zeros(len(batch), max(lengths), dtype=torch.bool, device=device)
        for i, (text, n) in enumerate(zip(batch, lengths, strict=True)):
            embeds[i, :n] = rows[text].to(device)
            mask[i, :n] = True
        return embeds, mask

    def _rows(self, batch: list[str], device: torch.device) -> dict[str, Tensor]:
        """Each distinct text's embedding (``(dim,)`` pooled, ``(n_i, dim)`` per token): from the
        cache, the others encoded once in one batch (and cached)."""
        rows: dict[str, Tensor] = {}
        if self.cache_size:
            for text in batch:
                if text in self._cache and text not in rows:
                    self._cache.move_to_end(text)
                    rows[text] = self._cache[text]
        missing = list(dict.fromkeys(t for t in batch if t not in rows))  # unique, in order
        if missing:
            for text, row in zip(missing, self._encode(missing, device), strict=True):
                rows[text] = row
                if self.cache_size:
                    self._cache[text] = row.detach().to("cpu", copy=True)
                    self._cache.move_to_end(text)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return rows

    @torch.no_grad()
    def _encode(self, texts: list[str], device: torch.device) -> list[Tensor]:
        """``b`` texts -> per text ``(dim,)`` (pooled) or its real tokens' states ``(n_i, dim)``,
        float32 on ``device``, no cache."""
        if self._function is not None:  # pooled: function(texts) -> (b, dim)
            out = self._function(texts)
            if not isinstance(out, Tensor) or tuple(out.shape) != (len(texts), self.dim):
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(
                    f"expected {self._function_words} to return a tensor of shape "
                    f"({len(texts)}, {self.dim}), got {shape}"
                )
            return list(out.detach().to(device=device, dtype=torch.float32))

        model = self._load()
        first = next(model.parameters(), None)
        if first is not None and first.device != device:
            model.to(device)
        model.eval()
        max_length = self._resolved_max_length()
        tokens = self._tokenizer(
            texts,
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            return_tensors="pt",
        )
        mask = tokens["attention_mask"].to(device)
        outputs = model(input_ids=tokens["input_ids"].to(device), attention_mask=mask)
        hidden = getattr(outputs, "last_hidden_state", None)
        hidden = (outputs[0] if hidden is None else hidden).float()
        if hidden.shape[-1] != self.dim:
            raise ValueError(f"expected encoder states of width {self.dim}, got {hidden.shape[-1]}")
        if self.pooling is None:
            return [hidden[i][mask[i].bool()] for i in range(len(texts))]
        return list(_pool(hidden, mask, self.pooling))

    @torch.no_grad()
    def _call_function(self, texts: list[str], device: torch.device) -> tuple[Tensor, Tensor]:
        """Per-token mode: ``function(texts, device)``, its output checked, padded rows zeroed."""
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
                f"expected {self._function_words} to return (embeds ({b}, m, {self.dim}), mask "
                f"({b}, m)), got {_describe(out)}"
            )
        mask = mask.to(device=device, dtype=torch.bool)
        embeds = embeds.to(device=device, dtype=torch.float32)
        return embeds.masked_fill(~mask.unsqueeze(-1), 0.0), mask


def _pool(hidden: Tensor, mask: Tensor, pooling: str, eps: float = 1e-8) -> Tensor:
    """Pool token states ``(b, n, d)`` with attention mask ``(b, n)`` into ``(b, d)``.

    ``"cls"``: the first real token's state (token 0 with right padding). ``"mean"``: the masked
    mean over the real tokens except that first one, ``Σ_i m_i h_i / (Σ_i m_i + eps)`` (the Video
    Diffusion Models reference's BERT pooling, which leaves out [CLS] and keeps [SEP]).
    """
    mask = mask.to(torch.bool)
    first_real = torch.cumsum(mask.long(), dim=1) == 1
    first_real &= mask
    if pooling == "cls":
        index = first_real.long().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
    weights = (mask & ~first_real).to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / (weights.sum(dim=1) + eps)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_describe(v) for v in value) + ")"
    return type(value).__name__
