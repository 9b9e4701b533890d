"""The random-number state a checkpoint holds per process (`rng.pt`), as tensors and plain
containers so it reloads with `torch.load(..., weights_only=True)`."""

from __future__ import annotations

import random
from typing import Any

import torch

from mp_layers.typecheck import typechecked

__all__ = ["capture_rng_state", "restore_rng_state"]


@typechecked
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


@typechecked
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
