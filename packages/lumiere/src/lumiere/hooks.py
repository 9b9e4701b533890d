"""The frame bookkeeping of a `Lumiere` call: the hooks on the base's modules and the conditioning.

A video `(b, c, t, h, w)` goes through the base as `b·t` frames. `Frames` holds `b` for the
duration of a wrapped call (None outside one: the base then runs as the plain image model);
`TemporalHook` (a forward hook) runs a module's output through its temporal blocks with that batch
size, and `MatchConditioning` (a forward pre-hook) matches conditioning tensors to the frame count
of the module's feature map (nearest frame) where temporal down-sampling changed it.

Conditioning given to the wrapper is per video (leading dimension `b`, repeated for the frames by
`broadcast_conditioning`) or per frame (leading `b·t`, passed as is); `check_conditioning` refuses
any other leading dimension.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils import _pytree as pytree

__all__ = [
    "Frames",
    "MatchConditioning",
    "TemporalHook",
    "broadcast_conditioning",
    "check_conditioning",
    "frame_count",
    "match_frames",
]


def frame_count(leaves: Sequence[Any], b: int) -> int | None:
    """Frames per clip of the first 4-D tensor among `leaves` (the module's feature map)."""
    for leaf in leaves:
        if isinstance(leaf, Tensor) and leaf.ndim == 4:
            return leaf.shape[0] // b
    return None


def match_frames(x: Any, b: int, frames: int) -> Any:
    """`x (b·t', ...)` → `(b·frames, ...)` by nearest frame: frame `i` reads `i·t'/frames`."""
    if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[0] % b or x.shape[0] == b * frames:
        return x
    have = x.shape[0] // b
    index = torch.arange(frames, device=x.device) * have // frames
    return rearrange(rearrange(x, "(b t) ... -> b t ...", b=b)[:, index], "b t ... -> (b t) ...")


def check_conditioning(tree: Any, b: int, t: int) -> None:
    """Every tensor in `tree` is a scalar, per video (leading dimension `b`) or per frame (leading
    `b·t`); any other leading dimension is a `ValueError` naming the argument."""
    for path, leaf in pytree.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, Tensor) and leaf.ndim and leaf.shape[0] not in (b, b * t):
            raise ValueError(
                f"argument {pytree.keystr(path)}: expected a leading dimension of b={b} "
                f"(per video) or b·t={b * t} (per frame), got shape {tuple(leaf.shape)}"
            )


def broadcast_conditioning(tree: Any, b: int, t: int) -> Any:
    """Repeat every per-video tensor (leading dimension `b`) `t` times for the frames; per-frame
    tensors (leading `b·t`) and scalars pass (`check_conditioning` first)."""
    leaves, spec = pytree.tree_flatten(tree)
    out = [
        leaf.repeat_interleave(t, dim=0)
        if isinstance(leaf, Tensor) and leaf.ndim and leaf.shape[0] != b * t
        else leaf
        for leaf in leaves
    ]
    return pytree.tree_unflatten(out, spec)


class Frames:
    """What the hooks need to know during a wrapped call: the number of clips `b` (None outside
    a wrapped call: the base model then runs as the plain image model)."""

    def __init__(self) -> None:
        self.batch_size: int | None = None


class TemporalHook:
    """Forward hook of a base module: its output through the temporal blocks inserted after it."""

    def __init__(self, name: str, blocks: Sequence[tuple[str, nn.Module]], frames: Frames):
        self.name = name
        self.blocks = list(blocks)
        self.frames = frames

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        b = self.frames.batch_size
        if b is None:
            return None
        if not isinstance(output, Tensor):
            raise ValueError(
                f"module {self.name!r}: expected it to return a channel-first 4-D tensor "
                f"(b·t, c, h, w), got {type(output).__name__}"
            )
        for _, block in self.blocks:
            output = block(output, batch_size=b)
        return output


class MatchConditioning:
    """Forward pre-hook: conditioning tensors (not 4-D) at leaf positions `leaves` of
    `(args, kwargs)` are matched to the frame count of the module's first 4-D tensor."""

    def __init__(self, leaves: set[int], frames: Frames):
        self.leaves = leaves
        self.frames = frames

    def __call__(self, module: nn.Module, args: Any, kwargs: Any) -> Any:
        b = self.frames.batch_size
        if b is None:
            return None
        leaves, spec = pytree.tree_flatten((args, kwargs))
        count = frame_count(leaves, b)
        if count is None:
            return None
        for index in self.leaves:
            if index < len(leaves):
                leaves[index] = match_frames(leaves[index], b, count)
        return pytree.tree_unflatten(leaves, spec)
