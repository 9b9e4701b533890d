"""Weights folders: atomic writes, JSON configs, and state-dict checks with readable errors.

Shared by the model packages' `save_pretrained` / `from_pretrained` (safetensors + JSON config):

- `atomic_write(path, write)`: `write(temporary)` then rename over `path`, fsynced;
- `write_config(path, dict)`: a JSON file written atomically;
- `plain_state_dict(module)`: contiguous CPU tensors sharing no memory (what safetensors needs);
- `check_state_dict(model, state, source)` / `load_state_checked(...)`: a `ValueError` naming the
  missing, unexpected and mis-shaped keys instead of torch's `RuntimeError`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from mp_layers.typecheck import typechecked

__all__ = [
    "atomic_write",
    "check_state_dict",
    "load_state_checked",
    "plain_state_dict",
    "write_config",
]

_LISTED = 8  # how many mismatched keys an error message names


# ---------------------------------------------------------------------------------------------
# atomic writes


@typechecked
def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """Run `write(temporary_path)` next to `path`, then rename it over `path` (atomic on POSIX)."""
    # a fresh unique name, created with the usual permissions (mkstemp's would be 0600)
    tmp = str(path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp")
    open(tmp, "xb").close()
    mode = os.stat(tmp).st_mode & 0o777
    try:
        write(tmp)
        os.chmod(tmp, mode)  # safetensors replaces the file with a private (0600) one
        with open(tmp, "rb+") as file:  # on disk before the rename, not only in the page cache
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json(data: dict[str, Any], tmp: str) -> None:
    with open(tmp, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=2)
        file.write("\n")


@typechecked
def write_config(path: Path, config: dict[str, Any]) -> None:
    """Write `config` as JSON to `path` atomically (used by `save_pretrained` and the CLI's runs)."""
    atomic_write(path, lambda tmp: _write_json(config, tmp))


@typechecked
def plain_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """The state dict as contiguous CPU tensors that share no memory (safetensors refuses shared
    tensors; the Unet3D shares one rotary embedding, a few floats, between its attentions)."""
    state, seen = {}, set()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            tensor = tensor.clone()
        seen.add(key)
        state[name] = tensor
    return state


# ---------------------------------------------------------------------------------------------
# state dict checks


@typechecked
def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """ValueError naming missing, unexpected and mis-shaped keys of `state` against `model`."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    given = {name: tuple(t.shape) for name, t in state.items()}
    missing = [name for name in expected if name not in given]
    unexpected = [name for name in given if name not in expected]
    shapes = [
        f"{name}: {given[name]} in the file, {expected[name]} in the model"
        for name in expected
        if name in given and given[name] != expected[name]
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (and {len(items) - _LISTED} more)" if len(items) > _LISTED else ""
            problems.append(f"{label}: {'; '.join(items[:_LISTED])}{more}")
    if problems:
        raise ValueError(
            f"{source}: the weights do not fit the configured model; " + " | ".join(problems)
        )


@typechecked
def load_state_checked(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load `state` into `model` (strict) after `check_state_dict`."""
    check_state_dict(model, state, source)
    model.load_state_dict(dict(state), strict=True)
