"""What a `sample` command's `--checkpoint` names: a run, a checkpoint, a `save_pretrained`
folder or a Hub repo id."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from mp_layers.typecheck import typechecked

__all__ = ["model_source"]


@typechecked
def model_source(source: str | os.PathLike[str]) -> tuple[Literal["run", "pretrained"], Path]:
    """Where to load a model from: `("pretrained", folder)` for a `save_pretrained` folder (its
    `config.json` names a `_class_name`) or a Hub repo id `org/name` (its snapshot, downloaded
    into the Hub cache or found there; `HF_HUB_OFFLINE=1` fetches nothing); `("run", checkpoint)`
    for a run folder (its newest complete checkpoint) or a checkpoint folder
    (`resolve_checkpoint`). Anything else raises `ValueError` saying what was expected."""
    from mp_layers.hub import resolve_folder
    from mp_layers.training.checkpoint import resolve_checkpoint

    path = Path(source)
    if not path.exists():
        if str(source).count("/") == 1 and not str(source).startswith((".", "/")):
            return "pretrained", resolve_folder(str(source))
        raise ValueError(
            "--checkpoint: expected a run folder, a checkpoint folder, a save_pretrained folder "
            f"or a Hub repo id ('org/name'), got {str(source)!r} (no such folder)"
        )
    config = path / "config.json"
    if config.is_file():
        try:
            data = json.loads(config.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and "_class_name" in data:
            return "pretrained", path
    return "run", resolve_checkpoint(path)
