"""`Lumiere` / `MPLumiere`: a frozen 2-D (text-to-)image U-Net inflated into a space-time U-Net.

Temporal blocks run after named modules of a deep copy of the base model (forward hooks). A video
`(b, c, t, h, w)` goes through the base as `b·t` frames; each temporal block regroups the frames
into clips with the batch size the wrapper sets for the duration of the call.

Construction runs the base once: a constant clip of one random image (as many frames as the
temporal down-sampling needs, 1 without) goes through the model with every named module hooked.
Each hook builds its blocks from the module's output channels on first call (shape inference,
in execution order) and runs them; with `check_init`, every block must return the constant clip
unchanged (resampled in time), so that the wrapped model reproduces the base exactly. With temporal
down-sampling the same pass also checks that every skip connection reaches its decoder with the
decoder's frame count (`ValueError` naming both modules otherwise) and records the modules whose
conditioning tensors (time embeddings, text embeddings, masks) arrive with a different frame count
than their feature map; those get a pre-hook that matches the conditioning to the current frame
count (nearest frame: strided when there are fewer frames, repeated when more). Feature maps
(4-D tensors) are never resampled.

Per-video conditioning given to `forward` (leading dimension `b`) is repeated for the frames;
per-frame conditioning (leading dimension `b·t`) is passed as is.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Iterator, Mapping, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from lumiere.blocks import (
    AttentionInflationBlock,
    ConvolutionInflationBlock,
    TemporalDownsample,
    TemporalUpsample,
)
from lumiere.mp_blocks import (
    MPAttentionInflationBlock,
    MPConvolutionInflationBlock,
    MPTemporalDownsample,
    MPTemporalUpsample,
)
from mp_layers.pretrained import atomic_write, load_state_checked, plain_state_dict, write_config
from mp_layers.typecheck import typechecked
from mp_layers.validation import check_int

__all__ = ["Lumiere", "MPLumiere"]

GROUPS = ("conv", "attn", "downsample", "upsample")
"""The four kinds of temporal module; for a module named in several groups they run in this order."""
_LISTS = {"conv": "convs", "attn": "attns", "downsample": "downsamples", "upsample": "upsamples"}
CONFIG_NAME = "temporal_config.json"
WEIGHTS_NAME = "temporal.safetensors"
_FORMAT = "lumiere-video temporal adapter"
_TOLERANCE = 1e-3  # relative to the largest magnitude (MP resamplers: EDM2 eps 1e-4 each)


class _Frames:
    """What the hooks need to know during a wrapped call: the number of clips `b` (None outside
    a wrapped call: the base model then runs as the plain image model)."""

    def __init__(self) -> None:
        self.batch_size: int | None = None


class _TemporalHook:
    """Forward hook of a base module: its output through the temporal blocks inserted after it."""

    def __init__(self, name: str, blocks: Sequence[tuple[str, nn.Module]], frames: _Frames):
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


class _MatchConditioning:
    """Forward pre-hook: conditioning tensors (not 4-D) at leaf positions `leaves` of
    `(args, kwargs)` are matched to the frame count of the module's first 4-D tensor."""

    def __init__(self, leaves: set[int], frames: _Frames):
        self.leaves = leaves
        self.frames = frames

    def __call__(self, module: nn.Module, args: Any, kwargs: Any) -> Any:
        b = self.frames.batch_size
        if b is None:
            return None
        leaves, spec = pytree.tree_flatten((args, kwargs))
        count = _frame_count(leaves, b)
        if count is None:
            return None
        for index in self.leaves:
            if index < len(leaves):
                leaves[index] = _match_frames(leaves[index], b, count)
        return pytree.tree_unflatten(leaves, spec)


def _frame_count(leaves: Sequence[Any], b: int) -> int | None:
    """Frames per clip of the first 4-D tensor among `leaves` (the module's feature map)."""
    for leaf in leaves:
        if isinstance(leaf, Tensor) and leaf.ndim == 4:
            return leaf.shape[0] // b
    return None


def _match_frames(x: Any, b: int, frames: int) -> Any:
    """`x (b·t', ...)` → `(b·frames, ...)` by nearest frame: frame `i` reads `i·t'/frames`."""
    if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[0] % b or x.shape[0] == b * frames:
        return x
    have = x.shape[0] // b
    index = torch.arange(frames, device=x.device) * have // frames
    return rearrange(rearrange(x, "(b t) ... -> b t ...", b=b)[:, index], "b t ... -> (b t) ...")


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


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def _fingerprint(model: nn.Module) -> str:
    """SHA-256 of the base's parameter names and shapes: which architecture an adapter fits."""
    names = sorted(f"{name}:{tuple(t.shape)}" for name, t in model.state_dict().items())
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _qualified(klass: type) -> str:
    return f"{klass.__module__}.{klass.__qualname__}"


def _check_names(group: str, names: object) -> tuple[str, ...]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise TypeError(
            f"{group}_module_names: expected a list of module names, got {type(names).__name__}"
        )
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{group}_module_names: expected str names, got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{group}_module_names: expected distinct names, got {list(names)}")
    return tuple(names)


def _size_pair(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return check_int("image_size", image_size), check_int("image_size", image_size)
    if len(image_size) != 2:
        raise ValueError(f"image_size: expected an int or (height, width), got {image_size!r}")
    return check_int("image_size", image_size[0]), check_int("image_size", image_size[1])


class Lumiere(nn.Module):
    """A frozen image U-Net with temporal blocks after named modules: `(b, c, t, h, w)` in, the
    base's output with every frame-batched tensor regrouped into clips out.

    Args:
        model: the 2-D U-Net, called as `model(frames (n, channels, h, w), *args, **kwargs)`. It is
            deep-copied (`self.model`) and, with `freeze_base`, frozen.
        image_size: frame size, an int or `(height, width)`.
        unet_time_kwarg: name of the base's time / noise-level argument (given `ones(1)` at
            construction).
        conv_module_names, attn_module_names, downsample_module_names, upsample_module_names:
            names from `model.named_modules()` whose (channel-first 4-D) output goes through a
            convolution inflation block, an attention inflation block, a temporal down-sampler or
            a temporal up-sampler. Groups may be empty, but at least one module must be named;
            there must be as many down- as up-samplers, placed so that every skip connection keeps
            its frame count.
        channels: channels of the input frames.
        conv_inflation_kwargs, attn_inflation_kwargs, downsample_kwargs, upsample_kwargs: passed to
            each block's constructor (`dim` is inferred).
        conv_klass, attn_klass, downsample_klass, upsample_klass: the block classes.
        example_kwargs: further keyword arguments for the construction passes, with batch 1, e.g.
            `{"encoder_hidden_states": torch.zeros(1, 77, 768)}` or `{"class_labels": ...}`.
        freeze_base: set `requires_grad=False` on the base's parameters.
        check_init: require every temporal block to be an identity on the construction pass's
            constant clip (module docstring), so that the wrapped model starts as the base.

    Calling `self.model(...)` directly runs the plain image model: the temporal blocks act only
    inside `forward`.
    """

    default_klasses: Mapping[str, type[nn.Module]] = {
        "conv": ConvolutionInflationBlock,
        "attn": AttentionInflationBlock,
        "downsample": TemporalDownsample,
        "upsample": TemporalUpsample,
    }

    @typechecked
    def __init__(
        self,
        model: nn.Module,
        *,
        image_size: int | tuple[int, int] | list[int],
        unet_time_kwarg: str,
        conv_module_names: Sequence[str],
        attn_module_names: Sequence[str] = (),
        downsample_module_names: Sequence[str] = (),
        upsample_module_names: Sequence[str] = (),
        channels: int = 3,
        conv_inflation_kwargs: Mapping[str, Any] | None = None,
        attn_inflation_kwargs: Mapping[str, Any] | None = None,
        downsample_kwargs: Mapping[str, Any] | None = None,
        upsample_kwargs: Mapping[str, Any] | None = None,
        conv_klass: type[nn.Module] | None = None,
        attn_klass: type[nn.Module] | None = None,
        downsample_klass: type[nn.Module] | None = None,
        upsample_klass: type[nn.Module] | None = None,
        example_kwargs: Mapping[str, Any] | None = None,
        freeze_base: bool = True,
        check_init: bool = True,
    ) -> None:
        super().__init__()
        self.image_size = _size_pair(image_size)
        self.channels = check_int("channels", channels)
        self.unet_time_kwarg = unet_time_kwarg
        self.example_kwargs = dict(example_kwargs or {})
        names = {
            "conv": _check_names("conv", conv_module_names),
            "attn": _check_names("attn", attn_module_names),
            "downsample": _check_names("downsample", downsample_module_names),
            "upsample": _check_names("upsample", upsample_module_names),
        }
        klasses = dict(
            zip(GROUPS, (conv_klass, attn_klass, downsample_klass, upsample_klass), strict=True)
        )
        self.klasses = {g: klasses[g] or self.default_klasses[g] for g in GROUPS}
        kwargs = (conv_inflation_kwargs, attn_inflation_kwargs, downsample_kwargs, upsample_kwargs)
        self.block_kwargs = {g: dict(k or {}) for g, k in zip(GROUPS, kwargs, strict=True)}
        if not any(names.values()):
            raise ValueError(
                "expected at least one temporal module: conv_module_names, attn_module_names, "
                "downsample_module_names and upsample_module_names are all empty"
            )
        if len(names["downsample"]) != len(names["upsample"]):
            raise ValueError(
                f"expected as many temporal up-samplers as down-samplers, got "
                f"{len(names['downsample'])} down ({list(names['downsample'])}) and "
                f"{len(names['upsample'])} up ({list(names['upsample'])})"
            )
        self.model = deepcopy(model)
        if freeze_base:
            self.model.requires_grad_(False)
        modules = dict(self.model.named_modules())
        for group, group_names in names.items():
            missing = [name for name in group_names if name not in modules or not name]
            if missing:
                raise ValueError(
                    f"{group}_module_names: no module named {missing} in "
                    f"{type(model).__name__}; some of its modules: "
                    f"{[n for n in modules if n][:12]}"
                )
        self._frames = _Frames()
        for group in GROUPS:
            setattr(self, _LISTS[group], nn.ModuleList())
        self.module_names: dict[str, list[str]] = {g: [] for g in GROUPS}
        """Each group's module names in execution order (the order of `convs`, `attns`, ...)."""
        self.dims: dict[str, list[int]] = {g: [] for g in GROUPS}
        """Each group's inferred channel counts, in the same order."""
        self.conditioning_matched: list[str] = []
        """Modules whose conditioning is matched to their frame count (found at construction)."""
        with _eval_mode(self.model), torch.no_grad():
            self._build(modules, names, check_init)

    # -----------------------------------------------------------------------------------------
    # construction: one forward pass (module docstring)

    def _make_block(self, group: str, dim: int, name: str) -> nn.Module:
        klass, kwargs = self.klasses[group], self.block_kwargs[group]
        if "dim" in kwargs:
            raise ValueError(f"{group} kwargs: 'dim' is inferred, do not pass it (module {name!r})")
        try:
            block = klass(dim=dim, **kwargs)
        except TypeError as error:
            raise TypeError(f"{group} block after {name!r}: {error}") from None
        return block.eval()  # for the construction pass (dropout off); set to train after

    def _example_inputs(self, frames: int) -> tuple[Tensor, dict[str, Any]]:
        """A constant clip `(1, channels, frames, h, w)` of one random image, and the kwargs."""
        device, dtype = _device_dtype(self.model)
        generator = torch.Generator().manual_seed(0)
        image = torch.randn(1, self.channels, *self.image_size, generator=generator)
        video = image.to(device, dtype).unsqueeze(2).expand(-1, -1, frames, -1, -1)
        kwargs = {self.unet_time_kwarg: torch.ones(1, device=device), **self.example_kwargs}
        return video, kwargs

    def _build(
        self, modules: Mapping[str, nn.Module], names: Mapping[str, Sequence[str]], check: bool
    ) -> None:
        """The construction pass: a constant clip of `downsample_factor` frames through the base,
        every named module hooked; each hook builds its blocks from the output's channels on
        first call, runs them and records how far they move the (constant) clip."""
        frames = 2 ** len(names["downsample"])
        height, width = self.image_size
        built: dict[str, list[tuple[str, nn.Module]]] = {}
        deviations: list[tuple[str, float, float]] = []
        calls: dict[str, int] = {}

        def build(name: str) -> Any:
            def hook(module: nn.Module, args: Any, output: Any) -> Any:
                calls[name] = calls.get(name, 0) + 1
                if calls[name] > 1:
                    return None  # reported after the pass
                shape = tuple(output.shape) if isinstance(output, Tensor) else None
                if (
                    shape is None
                    or len(shape) != 4
                    or frames % max(shape[0], 1)
                    or shape[2] * width != shape[3] * height
                ):
                    given = f"shape {shape}" if shape else type(output).__name__
                    raise ValueError(
                        f"module {name!r}: expected a channel-first 4-D output (n, c, h, w) with "
                        f"the frames' aspect ratio, got {given} for {frames} frame(s) of "
                        f"{height}x{width}; name a module that returns the feature map (e.g. a "
                        "resnet, not a block returning a tuple)"
                    )
                built[name] = []
                for group in GROUPS:
                    if name not in names[group]:
                        continue
                    blocks = getattr(self, _LISTS[group])
                    label = f"{_LISTS[group]}.{len(blocks)} ({group} block after {name!r})"
                    block = self._make_block(group, shape[1], name)
                    blocks.append(block)
                    self.module_names[group].append(name)
                    self.dims[group].append(shape[1])
                    built[name].append((label, block))
                    result = block(output, batch_size=1)
                    # the clip is constant: every output frame must equal every input frame
                    deviation = (result - output[:1]).abs().max().item()
                    deviations.append((label, deviation, output.abs().max().item()))
                    output = result
                return output

            return hook

        hooked = sorted({name for group in names.values() for name in group})
        handles = [modules[name].register_forward_hook(build(name)) for name in hooked]
        mismatched: dict[str, set[int]] = {}
        if frames > 1:  # frame counts change inside: trace skips and conditioning
            handles += self._trace_frame_counts(modules, frames, mismatched)
        video, kwargs = self._example_inputs(frames)
        try:
            output = self._call_base(video, (), kwargs)
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
        if check:
            for label, deviation, scale in deviations:
                if deviation > _TOLERANCE * max(1.0, scale):
                    raise ValueError(
                        f"{label} is not an identity at initialisation: it changes a constant "
                        f"clip by up to {deviation:.3g} (largest input magnitude {scale:.3g}); "
                        "temporal blocks must start as identities so that the wrapped model "
                        "reproduces the base"
                    )
            bad = [x for x in pytree.tree_leaves(output) if isinstance(x, Tensor)]
            if not all(bool(torch.isfinite(x).all()) for x in bad if x.is_floating_point()):
                raise ValueError("the wrapped model returned non-finite values at initialisation")
        for name, blocks in built.items():
            modules[name].register_forward_hook(_TemporalHook(name, blocks, self._frames))
        for name, leaves in mismatched.items():
            modules[name].register_forward_pre_hook(
                _MatchConditioning(leaves, self._frames), with_kwargs=True
            )
        self.conditioning_matched = sorted(mismatched)
        for group in GROUPS:
            getattr(self, _LISTS[group]).train(self.training)

    def _trace_frame_counts(
        self, modules: Mapping[str, nn.Module], frames: int, mismatched: dict[str, set[int]]
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
                count = _frame_count(leaves, 1)
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
                        leaves[index] = _match_frames(leaf, 1, count)
                        changed = True
                return pytree.tree_unflatten(leaves, spec) if changed else None

            return hook

        handles = []
        for name, module in modules.items():
            if module is not self.model:
                handles.append(module.register_forward_pre_hook(consumed(name), with_kwargs=True))
            handles.append(module.register_forward_hook(produced(name)))
        return handles

    # -----------------------------------------------------------------------------------------
    # calls

    @property
    def downsample_factor(self) -> int:
        """How much the temporal down-samplers divide the frame count: `2 ** len(downsamples)`."""
        return 2 ** len(self.module_names["downsample"])

    def _call_base(self, video: Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b, _, t = video.shape[:3]
        args, kwargs = _broadcast_conditioning((args, kwargs), b, t)
        frames = rearrange(video, "b c t h w -> (b t) c h w")
        self._frames.batch_size = b
        try:
            return self.model(frames, *args, **kwargs)
        finally:
            self._frames.batch_size = None

    def forward(self, video: Tensor, *args: Any, **kwargs: Any) -> Any:
        """`video (b, channels, t, height, width)` through the inflated model; `args`/`kwargs` go
        to the base (per-video tensors, leading dimension `b`, repeated for the frames). Returns
        the base's output with each tensor of leading dimension `b·t` regrouped: 4-D frames
        `(b·t, c, h, w)` become videos `(b, c, t, h, w)`, others `(b·t, ...)` become `(b, t, ...)`.
        `t` must be a multiple of `downsample_factor`."""
        if not isinstance(video, Tensor):
            raise TypeError(f"video: expected a torch.Tensor, got {type(video).__name__}")
        height, width = self.image_size
        if (
            video.ndim != 5
            or video.shape[1] != self.channels
            or video.shape[3:]
            != (
                height,
                width,
            )
        ):
            raise ValueError(
                f"video: expected shape (b, {self.channels}, t, {height}, {width}), "
                f"got {tuple(video.shape)}"
            )
        b, t = video.shape[0], video.shape[2]
        if t % self.downsample_factor:
            raise ValueError(
                f"video: expected a frame count divisible by {self.downsample_factor} (temporal "
                f"down-sampling {len(self.module_names['downsample'])} times), got {t}"
            )
        output = self._call_base(video, args, kwargs)

        def regroup(x: Any) -> Any:
            if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[0] != b * t:
                return x
            if x.ndim == 4:
                return rearrange(x, "(b t) c h w -> b c t h w", b=b).contiguous()
            return rearrange(x, "(b t) ... -> b t ...", b=b)

        return pytree.tree_map(regroup, output)

    # -----------------------------------------------------------------------------------------
    # temporal parameters and adapters

    def temporal_modules(self) -> nn.ModuleDict:
        """The four lists of temporal blocks (`convs`, `attns`, `downsamples`, `upsamples`)."""
        return nn.ModuleDict({_LISTS[g]: getattr(self, _LISTS[g]) for g in GROUPS})

    def temporal_parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The parameters of the temporal blocks only (what to train)."""
        return self.temporal_modules().parameters(recurse=recurse)

    def temporal_state_dict(self) -> dict[str, Tensor]:
        """The temporal blocks' state, keys `convs.0.…`, `attns.0.…`, …"""
        return dict(self.temporal_modules().state_dict())

    def temporal_config(self) -> dict[str, Any]:
        """The wrapping configuration `save_temporal` writes (JSON-serialisable)."""
        from lumiere import __version__

        return {
            "format": _FORMAT,
            "lumiere_version": __version__,
            "wrapper": type(self).__name__,
            "image_size": list(self.image_size),
            "channels": self.channels,
            "unet_time_kwarg": self.unet_time_kwarg,
            "base": {
                "class": _qualified(type(self.model)),
                "fingerprint": _fingerprint(self.model),
            },
            "groups": {
                g: {
                    "module_names": list(self.module_names[g]),
                    "dims": list(self.dims[g]),
                    "klass": _qualified(self.klasses[g]),
                    "kwargs": self.block_kwargs[g],
                }
                for g in GROUPS
            },
        }

    def save_temporal(self, directory: str | Path) -> Path:
        """Write the temporal blocks (`temporal.safetensors`) and the wrapping configuration
        (`temporal_config.json`) to `directory`, atomically; the frozen base is not written."""
        directory = Path(directory)
        config = self.temporal_config()
        try:
            json.dumps(config)
        except TypeError as error:
            raise ValueError(
                f"save_temporal: the block kwargs must be JSON-serialisable ({error})"
            ) from None
        directory.mkdir(parents=True, exist_ok=True)
        state = plain_state_dict(self.temporal_modules())
        atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp))
        write_config(directory / CONFIG_NAME, config)
        return directory

    def load_temporal(self, directory: str | Path) -> None:
        """Load temporal blocks written by `save_temporal` into this wrapper, after checking that
        they were made for the same module names, block classes, channel counts and base
        architecture."""
        directory = Path(directory)
        config = _read_config(directory)
        mine = self.temporal_config()
        for key in ("image_size", "channels"):
            if config.get(key) != mine[key]:
                raise ValueError(
                    f"{directory}: adapter made for {key}={config.get(key)}, this wrapper has "
                    f"{mine[key]}"
                )
        if config.get("base", {}).get("fingerprint") != mine["base"]["fingerprint"]:
            raise ValueError(
                f"{directory}: adapter made for another base architecture "
                f"({config.get('base', {}).get('class')}), this wrapper wraps {mine['base']['class']}"
            )
        for group in GROUPS:
            theirs, ours = config["groups"].get(group, {}), mine["groups"][group]
            for key in ("module_names", "dims", "klass"):
                if theirs.get(key) != ours[key]:
                    raise ValueError(
                        f"{directory}: {group} blocks: adapter has {key}={theirs.get(key)}, this "
                        f"wrapper {ours[key]}"
                    )
        state = load_file(str(directory / WEIGHTS_NAME))
        load_state_checked(self.temporal_modules(), state, str(directory / WEIGHTS_NAME))

    @classmethod
    def from_temporal(
        cls,
        model: nn.Module,
        directory: str | Path,
        *,
        example_kwargs: Mapping[str, Any] | None = None,
        freeze_base: bool = True,
        **klasses: type[nn.Module],
    ) -> Lumiere:
        """Wrap `model` (a fresh copy of the adapter's base) as `save_temporal` recorded it and
        load the adapter. Block classes outside `lumiere` must be passed again by keyword
        (`conv_klass=...`): a configuration file never imports code by itself."""
        directory = Path(directory)
        config = _read_config(directory)
        groups = config["groups"]
        chosen: dict[str, type[nn.Module]] = {}
        for group in GROUPS:
            key = f"{group}_klass"
            if key in klasses:
                chosen[key] = klasses.pop(key)
            else:
                chosen[key] = _lumiere_class(groups[group]["klass"], key)
        if klasses:
            raise TypeError(f"from_temporal: unexpected keyword arguments {sorted(klasses)}")
        wrapper = cls(
            model,
            image_size=tuple(config["image_size"]),
            unet_time_kwarg=config["unet_time_kwarg"],
            channels=config["channels"],
            conv_module_names=groups["conv"]["module_names"],
            attn_module_names=groups["attn"]["module_names"],
            downsample_module_names=groups["downsample"]["module_names"],
            upsample_module_names=groups["upsample"]["module_names"],
            conv_inflation_kwargs=groups["conv"]["kwargs"],
            attn_inflation_kwargs=groups["attn"]["kwargs"],
            downsample_kwargs=groups["downsample"]["kwargs"],
            upsample_kwargs=groups["upsample"]["kwargs"],
            example_kwargs=example_kwargs,
            freeze_base=freeze_base,
            **chosen,  # type: ignore[arg-type]
        )
        wrapper.load_temporal(directory)
        return wrapper


class MPLumiere(Lumiere):
    """`Lumiere` with the magnitude-preserving blocks (`MPConvolutionInflationBlock`,
    `MPAttentionInflationBlock`, `MPTemporalDownsample`, `MPTemporalUpsample`) by default."""

    default_klasses: Mapping[str, type[nn.Module]] = {
        "conv": MPConvolutionInflationBlock,
        "attn": MPAttentionInflationBlock,
        "downsample": MPTemporalDownsample,
        "upsample": MPTemporalUpsample,
    }


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_NAME
    if not path.is_file() or not (directory / WEIGHTS_NAME).is_file():
        raise ValueError(
            f"{directory}: expected a temporal adapter folder ({CONFIG_NAME} and {WEIGHTS_NAME})"
        )
    config = json.loads(path.read_text())
    if config.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a lumiere-video temporal adapter configuration")
    return config


def _lumiere_class(qualified: str, key: str) -> type[nn.Module]:
    module_name, _, name = qualified.rpartition(".")
    if module_name.split(".")[0] != "lumiere":
        raise ValueError(
            f"from_temporal: the adapter uses {qualified} for {key}; pass it as {key}= "
            "(classes outside lumiere are never imported from a configuration file)"
        )
    klass: type[nn.Module] = getattr(importlib.import_module(module_name), name)
    return klass


def _broadcast_conditioning(tree: Any, b: int, t: int) -> Any:
    """Repeat every per-video tensor (leading dimension `b`) `t` times for the frames; per-frame
    tensors (leading `b·t`) and scalars pass; any other leading dimension is a `ValueError`."""
    leaves, spec = pytree.tree_flatten_with_path(tree)
    out = []
    for path, leaf in leaves:
        if isinstance(leaf, Tensor) and leaf.ndim and leaf.shape[0] != b * t:
            if leaf.shape[0] != b:
                raise ValueError(
                    f"argument {pytree.keystr(path)}: expected a leading dimension of b={b} "
                    f"(per video) or b·t={b * t} (per frame), got shape {tuple(leaf.shape)}"
                )
            leaf = leaf.repeat_interleave(t, dim=0)
        out.append(leaf)
    return pytree.tree_unflatten(out, spec)


class _eval_mode:
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
