"""Text conditioning: turn captions into one embedding vector each.

`TextEncoder` wraps a frozen Hugging Face encoder (BERT by default, as in Video Diffusion Models),
an injected ``nn.Module`` or a plain callable, and returns ``(batch, dim)`` float32 embeddings.

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
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from mp_layers.text import (
    default_text_encoder_path,
    from_pretrained,
    looks_like_path,
    resolve_max_length,
    target_device,
)
from mp_layers.typecheck import typechecked

__all__ = ["TextEncoder", "default_text_encoder_path"]

POOLINGS = ("mean", "cls")


class TextEncoder:
    """Frozen text encoder: ``texts -> (b, dim)`` float32 embeddings.

    Args:
        encoder: one of
            - a Hugging Face encoder name (``"bert-base-cased"``) or a local folder (``str`` or
              ``os.PathLike``), loaded lazily on the first call with ``AutoTokenizer`` and
              ``AutoModel`` (encoder-decoder models such as T5 use their encoder);
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
        if pooling not in POOLINGS:
            raise ValueError(f"expected pooling in {POOLINGS}, got {pooling!r}")
        if max_length is not None and max_length < 1:
            raise ValueError(f"expected max_length >= 1 or None, got {max_length}")
        if dim is not None and dim < 1:
            raise ValueError(f"expected dim >= 1 or None, got {dim}")
        if cache_size < 0:
            raise ValueError(f"expected cache_size >= 0 (0 disables the cache), got {cache_size}")

        self.pooling = pooling
        self.cache_size = cache_size
        self._max_length_arg = max_length
        self._dim_arg = dim
        self._local_files_only = local_files_only
        self._source: str | None = None  # name or folder, for lazy loading
        self._is_path = False  # the source can only be a local folder
        self._model: nn.Module | None = None
        self._fn: Callable[[list[str]], torch.Tensor] | None = None
        self._tokenizer: Any = tokenizer
        self._tokenizer_loaded = False  # loaded by us (dropped on pickling) rather than injected
        self._dim: int | None = None
        self._max_length: int | None = None
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

        if isinstance(encoder, (str, os.PathLike)):
            self._source = os.fspath(encoder)
            self._is_path = isinstance(encoder, os.PathLike) or looks_like_path(self._source)
        elif isinstance(encoder, nn.Module):
            if tokenizer is None:
                raise TypeError(
                    "an injected nn.Module encoder needs tokenizer= (a Hugging Face tokenizer), "
                    "got tokenizer=None"
                )
            self._model = encoder
            config = getattr(encoder, "config", None)
            self._dim = self._check_dim(getattr(config, "hidden_size", None))
        else:
            if dim is None:
                raise TypeError(
                    "a plain callable encoder fn(texts) -> (b, dim) needs dim=, got dim=None"
                )
            for name, value in (("tokenizer", tokenizer), ("max_length", max_length)):
                if value is not None:
                    raise ValueError(
                        f"{name}= is not used with a plain callable encoder; expected None, "
                        f"got {value!r}"
                    )
            self._fn = encoder
            self._dim = dim

    # ------------------------------------------------------------------ properties

    @property
    def dim(self) -> int:
        """Embedding width (``hidden_size``); for a name or folder read from its config only."""
        if self._dim is None:
            if self._model is not None:
                config = getattr(self._model, "config", None)
                hidden = getattr(config, "hidden_size", None)
            else:
                config = self._from_pretrained("AutoConfig")
                hidden = getattr(config, "hidden_size", None)
            self._dim = self._check_dim(hidden)
        return self._dim

    @property
    def is_loaded(self) -> bool:
        """Whether the encoder's weights are in memory (always true unless given by name/folder)."""
        return self._source is None or self._model is not None

    @property
    def encoder_name(self) -> str | None:
        """The Hugging Face name or folder given, or ``None`` for an injected encoder."""
        return self._source

    def clear_cache(self) -> None:
        """Forget every cached embedding."""
        self._cache.clear()

    def __repr__(self) -> str:
        if self._source is not None:
            what = repr(self._source)
        else:
            what = type(self._model if self._model is not None else self._fn).__name__
        return (
            f"{type(self).__name__}({what}, pooling={self.pooling!r}, "
            f"cache={len(self._cache)}/{self.cache_size})"
        )

    def __deepcopy__(self, memo: dict[int, Any]) -> TextEncoder:
        return self  # frozen and stateless for training: copies share weights and cache

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        if self._source is not None:
            state["_model"] = None  # reloads lazily
            if self._tokenizer_loaded:
                state["_tokenizer"] = None
        return state

    # ------------------------------------------------------------------ loading

    def _check_dim(self, hidden: object) -> int:
        if isinstance(hidden, int):
            if self._dim_arg is not None and self._dim_arg != hidden:
                raise ValueError(
                    f"expected dim={self._dim_arg} to match the encoder's hidden_size, got "
                    f"hidden_size={hidden}"
                )
            return hidden
        if self._dim_arg is None:
            raise TypeError(
                "cannot tell the encoder's embedding width: it has no config.hidden_size; pass dim="
            )
        return self._dim_arg

    def _from_pretrained(self, auto_class: str) -> Any:
        assert self._source is not None  # internal invariant, not user input
        return from_pretrained(
            auto_class,
            self._source,
            is_path=self._is_path,
            local_files_only=self._local_files_only,
            extra="video-ddpm[text]",
            remedy="pass the path of a folder saved with save_pretrained (for an offline default, "
            "video_ddpm.text.default_text_encoder_path()) or download the model first",
        )

    def _load(self) -> nn.Module:
        if self._model is None:
            if self._tokenizer is None:
                self._tokenizer = self._from_pretrained("AutoTokenizer")
                self._tokenizer_loaded = True
            model = self._from_pretrained("AutoModel")
            if getattr(model.config, "is_encoder_decoder", False):
                model = model.get_encoder()  # e.g. T5: only the encoder embeds text
            model.requires_grad_(False)
            self._model = model
            self._dim = None  # re-read from the loaded model, checked against dim=
        return self._model

    def _resolved_max_length(self, model: nn.Module) -> int | None:
        if self._max_length is None:
            config = getattr(model, "config", None)
            self._max_length = resolve_max_length(self._max_length_arg, self._tokenizer, config)
        return self._max_length

    # ------------------------------------------------------------------ encoding

    @typechecked
    def __call__(
        self, texts: str | Sequence[str], *, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Embed ``texts``: a string or ``b`` strings -> ``(b, dim)`` float32 on ``device``.

        ``device`` defaults to CPU; the encoder moves there (and stays) if it is elsewhere.
        """
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not batch:
            raise ValueError("expected at least one text, got an empty sequence")
        for i, text in enumerate(batch):
            if not isinstance(text, str):
                raise TypeError(f"expected texts to be str, got {type(text).__name__} at index {i}")
        target = target_device(device)

        rows: dict[str, torch.Tensor] = {}
        if self.cache_size:
            for text in batch:
                if text in self._cache and text not in rows:
                    self._cache.move_to_end(text)
                    rows[text] = self._cache[text]
        missing = list(dict.fromkeys(t for t in batch if t not in rows))  # unique, in order
        if missing:
            fresh = self._encode(missing, target)
            for i, text in enumerate(missing):
                rows[text] = fresh[i]
                if self.cache_size:
                    self._cache[text] = fresh[i].detach().to("cpu", copy=True)
                    self._cache.move_to_end(text)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

        return torch.stack([rows[text].to(target) for text in batch])

    @torch.no_grad()
    def _encode(self, texts: list[str], device: torch.device) -> torch.Tensor:
        """``b`` texts -> ``(b, dim)`` float32 on ``device``, no cache."""
        if self._fn is not None:
            out = self._fn(texts)
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(texts), self.dim):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(
                    f"expected the text encoder callable to return a tensor of shape "
                    f"({len(texts)}, {self.dim}), got {shape}"
                )
            return out.detach().to(device=device, dtype=torch.float32)

        model = self._load()
        dim = self.dim
        first = next(model.parameters(), None)
        if first is not None and first.device != device:
            model.to(device)
        model.eval()

        max_length = self._resolved_max_length(model)
        tokens = self._tokenizer(
            texts,
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            return_tensors="pt",
        )
        input_ids = tokens["input_ids"].to(device)
        mask = tokens["attention_mask"].to(device)
        outputs = model(input_ids=input_ids, attention_mask=mask)
        hidden = getattr(outputs, "last_hidden_state", None)
        if hidden is None:
            hidden = outputs[0]
        pooled = _pool(hidden.float(), mask, self.pooling)
        if pooled.shape[-1] != dim:
            raise ValueError(f"expected encoder states of width {dim}, got {pooled.shape[-1]}")
        return pooled


def _pool(
    hidden: torch.Tensor, mask: torch.Tensor, pooling: str, eps: float = 1e-8
) -> torch.Tensor:
    """Pool token states ``(b, n, d)`` with attention mask ``(b, n)`` into ``(b, d)``.

    ``"cls"``: the first real token's state (token 0 with right padding). ``"mean"``: the masked
    mean over the real tokens except that first one, ``Σ_i m_i h_i / (Σ_i m_i + eps)`` (the
    reference's BERT pooling, which leaves out [CLS] and keeps [SEP]).
    """
    mask = mask.to(torch.bool)
    first_real = torch.cumsum(mask.long(), dim=1) == 1
    first_real &= mask
    if pooling == "cls":
        index = first_real.long().argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]
    weights = (mask & ~first_real).to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / (weights.sum(dim=1) + eps)
