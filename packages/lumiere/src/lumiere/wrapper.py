"""`Lumiere` / `MPLumiere`: a frozen 2-D (text-to-)image U-Net inflated into a space-time U-Net.

Temporal blocks run after named modules of a deep copy of the base model (forward hooks,
`lumiere.hooks`). A video `(b, c, t, h, w)` goes through the base as `b·t` frames; each temporal
block regroups the frames into clips with the batch size the wrapper sets for the duration of the
call.

Construction runs the base once (`lumiere.tracing`): a constant clip of one random image (as many
frames as the temporal down-sampling needs, 1 without) goes through the model with every named
module hooked. Each hook builds its blocks from the module's output channels on first call (shape
inference, in execution order) and runs them; with `check_init`, every block must return the
constant clip unchanged (resampled in time), so that the wrapped model reproduces the base exactly.
With temporal down-sampling the same pass also checks that every skip connection reaches its
decoder with the decoder's frame count (`ValueError` naming both modules otherwise) and records the
modules whose conditioning tensors (time embeddings, text embeddings, masks) arrive with a
different frame count than their feature map; those get a pre-hook that matches the conditioning
to the current frame count (nearest frame: strided when there are fewer frames, repeated when
more). Feature maps (4-D tensors) are never resampled.

Per-video conditioning given to `forward` (leading dimension `b`) is repeated for the frames;
per-frame conditioning (leading dimension `b·t`) is passed as is. The temporal blocks are saved
and loaded without the base as an adapter folder (`lumiere.adapter`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from copy import deepcopy
from typing import Any

from einops import rearrange
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from lumiere.adapter import CONFIG_NAME as CONFIG_NAME
from lumiere.adapter import WEIGHTS_NAME as WEIGHTS_NAME
from lumiere.adapter import TemporalAdapter
from lumiere.blocks import (
    AttentionInflationBlock,
    ConvolutionInflationBlock,
    TemporalDownsample,
    TemporalUpsample,
)
from lumiere.hooks import (
    Frames,
    MatchConditioning,
    TemporalHook,
    broadcast_conditioning,
    check_conditioning,
)
from lumiere.mp_blocks import (
    MPAttentionInflationBlock,
    MPConvolutionInflationBlock,
    MPTemporalDownsample,
    MPTemporalUpsample,
)
from lumiere.tracing import GROUPS, LISTS, Inflation, trace
from mp_layers.typecheck import typechecked
from mp_layers.validation import check_int

__all__ = ["Lumiere", "MPLumiere"]


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


class Lumiere(TemporalAdapter, nn.Module):
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
        self._frames = Frames()
        for group in GROUPS:
            setattr(self, LISTS[group], nn.ModuleList())
        self.module_names: dict[str, list[str]] = {g: [] for g in GROUPS}
        """Each group's module names in execution order (the order of `convs`, `attns`, ...)."""
        self.dims: dict[str, list[int]] = {g: [] for g in GROUPS}
        """Each group's inferred channel counts, in the same order."""
        self.conditioning_matched: list[str] = []
        """Modules whose conditioning is matched to their frame count (found at construction)."""
        inflation = trace(
            self.model,
            modules,
            names,
            klasses=self.klasses,
            block_kwargs=self.block_kwargs,
            call_base=lambda video, kwargs: self._call_base(video, (), kwargs),
            channels=self.channels,
            image_size=self.image_size,
            time_kwarg=self.unet_time_kwarg,
            example_kwargs=self.example_kwargs,
            check=check_init,
        )
        self._install(modules, inflation)

    def _install(self, modules: Mapping[str, nn.Module], inflation: Inflation) -> None:
        """Register the blocks the construction pass built (in train mode when the wrapper is)
        and their permanent hooks on the base's modules."""
        for group in GROUPS:
            blocks = getattr(self, LISTS[group])
            for name, dim, block in inflation.groups[group]:
                blocks.append(block)
                self.module_names[group].append(name)
                self.dims[group].append(dim)
        for name, hooked in inflation.hooked.items():
            modules[name].register_forward_hook(TemporalHook(name, hooked, self._frames))
        for name, leaves in inflation.mismatched.items():
            modules[name].register_forward_pre_hook(
                MatchConditioning(leaves, self._frames), with_kwargs=True
            )
        self.conditioning_matched = sorted(inflation.mismatched)
        for group in GROUPS:
            getattr(self, LISTS[group]).train(self.training)

    # -----------------------------------------------------------------------------------------
    # calls

    @property
    def downsample_factor(self) -> int:
        """How much the temporal down-samplers divide the frame count: `2 ** len(downsamples)`."""
        return 2 ** len(self.module_names["downsample"])

    def _call_base(self, video: Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        b, _, t = video.shape[:3]
        args, kwargs = broadcast_conditioning((args, kwargs), b, t)
        frames = rearrange(video, "b c t h w -> (b t) c h w")
        self._frames.batch_size = b
        try:
            return self.model(frames, *args, **kwargs)
        finally:
            self._frames.batch_size = None

    def _check_inputs(self, video: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """`forward`'s input checks: a video `(b, channels, t, height, width)` with `t` a
        multiple of `downsample_factor`, and conditioning per video or per frame."""
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
        check_conditioning((args, kwargs), b, t)

    def forward(self, video: Tensor, *args: Any, **kwargs: Any) -> Any:
        """`video (b, channels, t, height, width)` through the inflated model; `args`/`kwargs` go
        to the base (per-video tensors, leading dimension `b`, repeated for the frames). Returns
        the base's output with each tensor of leading dimension `b·t` regrouped: 4-D frames
        `(b·t, c, h, w)` become videos `(b, c, t, h, w)`, others `(b·t, ...)` become `(b, t, ...)`.
        `t` must be a multiple of `downsample_factor`."""
        self._check_inputs(video, args, kwargs)
        b, t = video.shape[0], video.shape[2]
        output = self._call_base(video, args, kwargs)

        def regroup(x: Any) -> Any:
            if not isinstance(x, Tensor) or x.ndim == 0 or x.shape[0] != b * t:
                return x
            if x.ndim == 4:
                return rearrange(x, "(b t) c h w -> b c t h w", b=b).contiguous()
            return rearrange(x, "(b t) ... -> b t ...", b=b)

        return pytree.tree_map(regroup, output)

    # -----------------------------------------------------------------------------------------
    # temporal parameters (adapter files: `lumiere.adapter.TemporalAdapter`)

    def temporal_modules(self) -> nn.ModuleDict:
        """The four lists of temporal blocks (`convs`, `attns`, `downsamples`, `upsamples`)."""
        return nn.ModuleDict({LISTS[g]: getattr(self, LISTS[g]) for g in GROUPS})

    def temporal_parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The parameters of the temporal blocks only (what to train)."""
        return self.temporal_modules().parameters(recurse=recurse)

    def temporal_state_dict(self) -> dict[str, Tensor]:
        """The temporal blocks' state, keys `convs.0.…`, `attns.0.…`, …"""
        return dict(self.temporal_modules().state_dict())


class MPLumiere(Lumiere):
    """`Lumiere` with the magnitude-preserving blocks (`MPConvolutionInflationBlock`,
    `MPAttentionInflationBlock`, `MPTemporalDownsample`, `MPTemporalUpsample`) by default."""

    default_klasses: Mapping[str, type[nn.Module]] = {
        "conv": MPConvolutionInflationBlock,
        "attn": MPAttentionInflationBlock,
        "downsample": MPTemporalDownsample,
        "upsample": MPTemporalUpsample,
    }
