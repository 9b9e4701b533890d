"""Checkpoint folders on disk: atomic writes, discovery, pruning, and RNG state capture.

Layout of `<out_dir>/checkpoints/step-000001000/`: `model.safetensors`, `ema.safetensors`,
`post_hoc_ema.safetensors` (when enabled), `optimizer.pt`, `scheduler.pt`, `scaler.pt`, `rng.pt`
(one entry per process) and `state.json` (step, data position, counters, config), written last.
A folder is written as `.tmp-step-...` and renamed into place, so a crash leaves either a complete
checkpoint or a temporary folder that is ignored and removed at the next start.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.json"
_NAME = re.compile(r"^step-(\d{9,})$")
_TMP_PREFIX = ".tmp-"


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint taken after optimizer step `step`."""
    return f"step-{step:09d}"


def list_checkpoints(root: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints under `root` (those with a `state.json`), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint under `root`, or `None`."""
    checkpoints = list_checkpoints(root)
    return checkpoints[-1] if checkpoints else None


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder meant by `path`: `path` itself when it holds weights
    (`model.safetensors` or `ema.safetensors`: a checkpoint or an exported model), else the
    newest complete checkpoint of the run folder `path` (under `path/checkpoints`)."""
    path = Path(path)
    if (path / "model.safetensors").is_file() or (path / "ema.safetensors").is_file():
        return path
    latest = latest_checkpoint(path / "checkpoints")
    if latest is None:
        raise ValueError(
            "checkpoint: expected a folder with model.safetensors or ema.safetensors, or a run "
            f"folder with checkpoints/, got {path}"
        )
    return latest


def find_run_config(path: str | os.PathLike[str], name: str) -> tuple[Path, dict[str, Any]]:
    """The JSON file `name` of a run, read from `path` or up to two folders above it (a run
    folder, a checkpoint folder in its `checkpoints/`, or an export beside them). Returns the
    folder holding it and its contents; `ValueError` when there is none."""
    path = Path(path)
    for folder in (path, path.parent, path.parent.parent):
        file = folder / name
        if file.is_file():
            config: dict[str, Any] = json.loads(file.read_text())
            return folder, config
    raise ValueError(
        f"checkpoint: expected a run, checkpoint or model folder with {name} in or above it, "
        f"got {path}"
    )


def remove_stale_temporaries(root: str | os.PathLike[str]) -> int:
    """Delete temporary folders a crashed writer left under `root`; return how many."""
    root = Path(root)
    if not root.is_dir():
        return 0
    stale = [p for p in root.iterdir() if p.name.startswith(_TMP_PREFIX)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def write_checkpoint(
    root: str | os.PathLike[str],
    *,
    step: int,
    write: Callable[[Path], None],
    state: dict[str, Any],
    keep_last: int,
) -> Path:
    """Atomically create `root/step-XXXXXXXXX`: `write(tmp)` fills a temporary folder, then
    `state` goes to its `state.json` and the folder is renamed into place. Older checkpoints
    beyond the newest `keep_last` are deleted afterwards."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f"{_TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    write(tmp)
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))
    if final.exists():  # the same step written again (a resumed run re-reaching it): swap it out
        old = root / f"{_TMP_PREFIX}old-{final.name}-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    for path in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
    return final


def read_state(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """The `state.json` of a checkpoint folder."""
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise ValueError(f"expected a checkpoint folder containing {STATE_FILE}, got {checkpoint}")
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def load_tensors(path: str | os.PathLike[str]) -> Any:
    """`torch.load` restricted to tensors and plain containers (`weights_only=True`)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def capture_rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch and CUDA RNG states as tensors and plain containers,
    so they reload with `weights_only=True` (NumPy's key array becomes a tensor)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np
    except ImportError:  # NumPy is optional for training
        pass
    else:
        # The legacy global NumPy RNG is what user code and augmentation libraries draw from.
        kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # noqa: NPY002
        keys_tensor = torch.from_numpy(np.asarray(keys).astype(np.int64))
        state["numpy"] = [kind, keys_tensor, pos, has_gauss, gauss]
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, gauss_value = state["numpy"]
        keys_array = keys.numpy().astype(np.uint32)
        np.random.set_state((kind, keys_array, pos, has_gauss, gauss_value))  # noqa: NPY002
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_model_weights(
    model: torch.nn.Module, checkpoint: str | os.PathLike[str], *, ema: bool = True
) -> torch.nn.Module:
    """Load a checkpoint's EMA weights (`ema=True`, falling back to the raw weights when the run
    had no EMA) or raw weights into a bare `model`, e.g. for sampling. Returns `model`."""
    from safetensors.torch import load_file

    folder = Path(checkpoint)
    ema_file, model_file = folder / "ema.safetensors", folder / "model.safetensors"
    if ema and ema_file.is_file():
        prefix = "ema_model."
        stored = load_file(ema_file)
        tensors = {k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)}
    elif model_file.is_file():
        tensors = load_file(model_file)
    else:
        raise ValueError(f"checkpoint: expected {model_file} to exist, got a folder without it")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    # safetensors drops tied duplicates; strict=False tolerates exactly those, so check the rest.
    missing, unexpected = model.load_state_dict(
        {k: v.to(device) for k, v in tensors.items()}, strict=False
    )
    if unexpected or any(k not in _tied_names(model) for k in missing):
        raise ValueError(
            f"checkpoint {folder}: weights do not match the model "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    return model


def _tied_names(model: torch.nn.Module) -> set[str]:
    """Names of state-dict entries that share storage with another entry."""
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    return {name for names in groups.values() if len(names) > 1 for name in names}
