"""`collate_videos` (batches of dataset items); `VideoFolder` lives in `folder.py`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mp_layers.typecheck import typechecked
from mp_layers.video.folder import VideoFolder

__all__ = ["VideoFolder", "collate_videos"]


@typechecked
def collate_videos(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch dataset items: tensors are stacked (`video` becomes `(B, C, F, H, W)`), ints become
    an int64 tensor `(B,)`, floats a float32 tensor, and strings (and anything else) stay lists."""
    if not items:
        raise ValueError("items: expected a non-empty sequence of dicts")
    if not all(isinstance(item, Mapping) for item in items):  # beartype samples only one item
        raise TypeError("items: expected every item to be a dict")
    keys = set(items[0])
    if any(set(item) != keys for item in items):
        raise ValueError(
            f"items: expected the same keys in every item, got {[sorted(i) for i in items]}"
        )
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if all(isinstance(v, torch.Tensor) for v in values):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise ValueError(
                    f"items: expected {key!r} tensors of one shape, got {sorted(shapes)}"
                )
            batch[key] = torch.stack(values)
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            batch[key] = torch.tensor(values, dtype=torch.int64)
        elif all(isinstance(v, float) for v in values):
            batch[key] = torch.tensor(values, dtype=torch.float32)
        else:
            batch[key] = list(values)
    return batch
