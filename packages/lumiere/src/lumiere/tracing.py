"""The construction pass of `Lumiere`: find the base's named modules and build their temporal blocks.

The base runs once: a constant clip of one random image (as many frames as the temporal
down-sampling needs, 1 without) goes through the model with every named module hooked. Each hook
builds its blocks from the module's output channels on first call (shape inference, in execution
order) and runs them; with `check`, every block must return the constant clip unchanged (resampled
in time), so that the wrapped model reproduces the base exactly. With temporal down-sampling the
same pass also checks that every skip connection reaches its decoder with the decoder's frame
count (`ValueError` naming both modules otherwise) and records the modules whose conditioning
tensors (time embeddings, text embeddings, masks) arrive with a different frame count than their
feature map; the wrapper gives those a `lumiere.hooks.MatchConditioning` pre-hook. Feature maps
(4-D tensors) are never resampled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from lumiere.hooks import check_conditioning, frame_count, match_frames

__all__ = ["GROUPS", "LISTS", "TOLERANCE", "Inflation", "eval_mode", "make_block", "trace"]

GROUPS = ("conv", "attn", "downsample", "upsample")
"""The four kinds of temporal module; for a module named in several groups they run in this order."""
LISTS = {"conv": "convs", "attn": "attns", "downsample": "downsamples", "upsample": "upsamples"}
"""The wrapper's `nn.ModuleList` attribute of each group."""
TOLERANCE = 1e-3  # relative to the largest magnitude (MP resamplers: EDM2 eps 1e-4 each)

CallBase = Callable[[Tensor, dict[str, Any]], Any]
"""`call_base(video (b, c, t, h, w), kwargs)`: the base on the video's `b·t` frames."""


@dataclass
class Inflation:
    """What the construction pass built: per group, `(module name, dim, block)` in execution
    order; per hooked module, its `(label, block)` pairs in group order; and, per module whose
    conditioning arrives with another frame count, the leaf positions to match."""

    groups: dict[str, list[tuple[str, int, nn.Module]]] = field(
        default_factory=lambda: {g: [] for g in GROUPS}
    )
    hooked: dict[str, list[tuple[str, nn.Module]]] = field(default_factory=dict)
    mismatched: dict[str, set[int]] = field(default_factory=dict)


class eval_mode:
    """Context manager: `module.eval()` inside, the previous train/eval modes restored after."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.modes: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> None:
        self.modes = [(m, m.training) for m in self.module.modules()]
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        for module, mode in self.modes:
            module.training = mode


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def example_inputs(
    model: nn.Module,
    *,
    channels: int,
    image_size: tuple[int, int],
    frames: int,
    time_kwarg: str,
    example_kwargs: Mapping[str, Any],
) -> tuple[Tensor, dict[str, Any]]:
    """A constant clip `(1, channels, frames, h, w)` of one random image, and the kwargs."""
    device, dtype = _device_dtype(model)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, channels, *image_size, generator=generator)
    video = image.to(device, dtype).unsqueeze(2).expand(-1, -1, frames, -1, -1)
    kwargs = {time_kwarg: torch.ones(1, device=device), **example_kwargs}
    return video, kwargs


def make_block(
    group: str, klass: type[nn.Module], kwargs: Mapping[str, Any], dim: int, name: str
) -> nn.Module:
    """`klass(dim=dim, **kwargs)` in eval mode, for the block of `group` after module `name`."""
    if "dim" in kwargs:
        raise ValueError(f"{group} kwargs: 'dim' is inferred, do not pass it (module {name!r})")
    try:
        block = klass(dim=dim, **kwargs)
    except TypeError as error:
        raise TypeError(f"{group} block after {name!r}: {error}") from None
    return block.eval()  # for the construction pass (dropout off); set to train after


def _skip_error(
    name: str,
    skip: Tensor,
    feature: Tensor,
    producers: Mapping[int, tuple[str, Tensor]],
    frames: int,
) -> str:
    source = producers.get(id(skip), ("an earlier module", skip))[0]
    target = producers.get(id(feature), ("the previous module", feature))[0]
    return (
        f"skip connection mismatch: module {name!r} receives a {skip.shape[0]}-frame feature map "
        f"from {source!r} together with a {feature.shape[0]}-frame one from {target!r} (clip of "
        f"{frames} frames at the input); place the temporal down- and up-samplers symmetrically, "
        "so that every skip connection leaves and rejoins the decoder at the same frame count "
        "(feature maps are never resampled)"
    )


def _shape_error(name: str, output: Any, frames: int, image_size: tuple[int, int]) -> str | None:
    """Why `output` of module `name` cannot be inflated (None when it can): it must be a
    channel-first 4-D feature map `(n, c, h, w)` of the frames' aspect ratio."""
    height, width = image_size
    shape = tuple(output.shape) if isinstance(output, Tensor) else None
    if (
        shape is None
        or len(shape) != 4
        or frames % max(shape[0], 1)
        or shape[2] * width != shape[3] * height
    ):
        given = f"shape {shape}" if shape else type(output).__name__
        return (
            f"module {name!r}: expected a channel-first 4-D output (n, c, h, w) with "
            f"the frames' aspect ratio, got {given} for {frames} frame(s) of "
            f"{height}x{width}; name a module that returns the feature map (e.g. a "
            "resnet, not a block returning a tuple)"
        )
    return None


def _trace_frame_counts(
    model: nn.Module, modules: Mapping[str, nn.Module], frames: int, mismatched: dict[str, set[int]]
) -> list[Any]:
    """Temporary hooks on every module for the construction pass: a module that receives
    feature maps (4-D) of different frame counts is a misplaced skip connection
    (`ValueError` naming it and the modules that produced them); conditioning tensors
    (other ranks) whose frame count differs from the module's feature map are matched now
    and their positions recorded in `mismatched` for a permanent pre-hook."""
    producers: dict[int, tuple[str, Tensor]] = {}
    counts = {frames // 2**k for k in range(frames.bit_length())}

    def produced(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            for leaf in pytree.tree_leaves(output):
                if isinstance(leaf, Tensor):
                    producers[id(leaf)] = (name, leaf)  # kept alive: ids stay unique

        return hook

    def consumed(name: str) -> Any:
        def hook(module: nn.Module, args: Any, kwargs: Any) -> Any:
            leaves, spec = pytree.tree_flatten((args, kwargs))
            count = frame_count(leaves, 1)
            if count is None:
                return None
            feature = next(x for x in leaves if isinstance(x, Tensor) and x.ndim == 4)
            changed = False
            for index, leaf in enumerate(leaves):
                if not isinstance(leaf, Tensor) or leaf.ndim == 0 or leaf.shape[0] == count:
                    continue
                if leaf.ndim == 4:
                    raise ValueError(_skip_error(name, leaf, feature, producers, frames))
                if leaf.shape[0] in counts:
                    mismatched.setdefault(name, set()).add(index)
                    leaves[index] = match_frames(leaf, 1, count)
                    changed = True
            return pytree.tree_unflatten(leaves, spec) if changed else None

        return hook

    handles = []
    for name, module in modules.items():
        if module is not model:
            handles.append(module.register_forward_pre_hook(consumed(name), with_kwargs=True))
        handles.append(module.register_forward_hook(produced(name)))
    return handles


def _run_pass(
    call_base: CallBase, video: Tensor, kwargs: dict[str, Any], handles: list[Any], frames: int
) -> Any:
    """The hooked base on the constant clip; the temporary hooks removed after."""
    try:
        return call_base(video, kwargs)
    except RuntimeError as error:
        if frames == 1:
            raise
        raise ValueError(
            f"the wrapped model failed on a clip of {frames} frames (temporal down-sampling "
            f"by {frames}); a skip connection probably meets a decoder input with another "
            "frame count: place the temporal down- and up-samplers symmetrically. The error: "
            f"{str(error).splitlines()[0]}"
        ) from error
    finally:
        for handle in handles:
            handle.remove()


def _check_calls(hooked: Sequence[str], calls: Mapping[str, int]) -> None:
    """Every hooked module ran exactly once in the construction pass."""
    silent = [name for name in hooked if name not in calls]
    if silent:
        raise ValueError(
            f"modules {silent} did not run in a forward of the base model; inflate modules "
            "on the forward path (a conditional model needs its example_kwargs)"
        )
    repeated = [name for name in hooked if calls[name] > 1]
    if repeated:
        raise ValueError(
            f"modules {repeated} run more than once per forward; inflate modules that run once"
        )


def _check_identity(deviations: Sequence[tuple[str, float, float]], output: Any) -> None:
    """Every block left the constant clip unchanged, and the output is finite."""
    for label, deviation, scale in deviations:
        if deviation > TOLERANCE * max(1.0, scale):
            raise ValueError(
                f"{label} is not an identity at initialisation: it changes a constant "
                f"clip by up to {deviation:.3g} (largest input magnitude {scale:.3g}); "
                "temporal blocks must start as identities so that the wrapped model "
                "reproduces the base"
            )
    bad = [x for x in pytree.tree_leaves(output) if isinstance(x, Tensor)]
    if not all(bool(torch.isfinite(x).all()) for x in bad if x.is_floating_point()):
        raise ValueError("the wrapped model returned non-finite values at initialisation")


def trace(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    names: Mapping[str, Sequence[str]],
    *,
    klasses: Mapping[str, type[nn.Module]],
    block_kwargs: Mapping[str, Mapping[str, Any]],
    call_base: CallBase,
    channels: int,
    image_size: tuple[int, int],
    time_kwarg: str,
    example_kwargs: Mapping[str, Any],
    check: bool,
) -> Inflation:
    """The construction pass (module docstring): a constant clip of `2 ** len(downsamples)`
    frames through `model` (run by `call_base`), every module of `names` (group -> names of
    `modules`) hooked; each hook builds its blocks (`klasses[group](dim=c, **block_kwargs[group])`,
    `c` the output's channels) on first call, runs them and records how far they move the
    (constant) clip. Runs in eval mode without gradients; returns what it built."""
    frames = 2 ** len(names["downsample"])
    inflation = Inflation()
    deviations: list[tuple[str, float, float]] = []
    calls: dict[str, int] = {}

    def build(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            if calls[name] > 1:
                return None  # reported after the pass
            error = _shape_error(name, output, frames, image_size)
            if error is not None:
                raise ValueError(error)
            inflation.hooked[name] = []
            for group in GROUPS:
                if name not in names[group]:
                    continue
                built = inflation.groups[group]
                label = f"{LISTS[group]}.{len(built)} ({group} block after {name!r})"
                dim = output.shape[1]
                block = make_block(group, klasses[group], block_kwargs[group], dim, name)
                built.append((name, dim, block))
                inflation.hooked[name].append((label, block))
                result = block(output, batch_size=1)
                # the clip is constant: every output frame must equal every input frame
                deviation = (result - output[:1]).abs().max().item()
                deviations.append((label, deviation, output.abs().max().item()))
                output = result
            return output

        return hook

    video, kwargs = example_inputs(
        model,
        channels=channels,
        image_size=image_size,
        frames=frames,
        time_kwarg=time_kwarg,
        example_kwargs=example_kwargs,
    )
    check_conditioning(((), kwargs), 1, frames)
    with eval_mode(model), torch.no_grad():
        hooked = sorted({name for group in names.values() for name in group})
        handles = [modules[name].register_forward_hook(build(name)) for name in hooked]
        if frames > 1:  # frame counts change inside: trace skips and conditioning
            handles += _trace_frame_counts(model, modules, frames, inflation.mismatched)
        output = _run_pass(call_base, video, kwargs, handles, frames)
        _check_calls(hooked, calls)
        if check:
            _check_identity(deviations, output)
    return inflation
