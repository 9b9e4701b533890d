"""Temporal adapter files of `Lumiere`: the temporal blocks without the frozen base.

`TemporalBlocks` is the adapter as a model of its own, on `mp_layers.hub.HubModel`: the four
lists of temporal blocks (`convs`, `attns`, `downsamples`, `upsamples`) and the wrapping
configuration (frame size, channels, time argument, for each group its module names, channels,
block class and kwargs, and the base's class and fingerprint, a SHA-256 of its parameter names and
shapes). `save_pretrained(folder)` writes `config.json` (that configuration) and
`model.safetensors` (the blocks' state, keys `convs.0.…`, `attns.0.…`, …), `from_pretrained`
reads a folder or a Hub repo, `push_to_hub` publishes. Folders written by 0.1.0
(`temporal_config.json` + `temporal.safetensors`, the same keys) load through `_hub_load_legacy`.

`TemporalAdapter` gives the wrapper `temporal_config`, `temporal_adapter`, `save_temporal`,
`load_temporal` and `from_temporal`, all through `TemporalBlocks`.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import os
import re
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from lumiere.tracing import GROUPS, LISTS, make_block
from mp_layers.hub import HubModel, resolve_folder
from mp_layers.pretrained import load_state_checked
from mp_layers.typecheck import typechecked

__all__ = [
    "CONFIG_NAME",
    "LEGACY_CONFIG_NAME",
    "LEGACY_WEIGHTS_NAME",
    "WEIGHTS_NAME",
    "TemporalAdapter",
    "TemporalBlocks",
    "is_adapter_folder",
    "read_adapter_config",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
LEGACY_CONFIG_NAME = "temporal_config.json"
"""0.1.0's adapter files (read, never written)."""
LEGACY_WEIGHTS_NAME = "temporal.safetensors"
_FORMAT = "lumiere-video temporal adapter"
_WRAPPING = ("wrapper", "image_size", "channels", "unet_time_kwarg", "base", "groups")
_HUB_KWARGS = ("revision", "cache_dir", "force_download", "local_files_only", "token")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")

_Adapter = TypeVar("_Adapter", bound="TemporalAdapter")
_Blocks = TypeVar("_Blocks", bound="TemporalBlocks")


def _fingerprint(model: nn.Module) -> str:
    """SHA-256 of the base's parameter names and shapes: which architecture an adapter fits."""
    names = sorted(f"{name}:{tuple(t.shape)}" for name, t in model.state_dict().items())
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _qualified(klass: type) -> str:
    return f"{klass.__module__}.{klass.__qualname__}"


def _layout_error(source: object) -> ValueError:
    return ValueError(
        f"{source}: expected a temporal adapter folder ({CONFIG_NAME} and {WEIGHTS_NAME}, or "
        f"0.1.0's {LEGACY_CONFIG_NAME} and {LEGACY_WEIGHTS_NAME}) or a Hub repo id ('org/name')"
    )


def is_adapter_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether `folder` holds a temporal adapter (`TemporalBlocks.save_pretrained`, or 0.1.0's
    `save_temporal`), as opposed to a training checkpoint or another model."""
    folder = Path(folder)
    if (folder / LEGACY_CONFIG_NAME).is_file():
        return True
    try:
        config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("_class_name") == TemporalBlocks.__name__


def _adapter_folder(source: str | os.PathLike[str], hub: Mapping[str, Any]) -> Path:
    """The local folder of an adapter: `source` itself, or the snapshot of the Hub repo."""
    if not os.path.isdir(source) and not _REPO_ID.fullmatch(str(source)):
        raise _layout_error(source)
    folder = resolve_folder(source, **hub)
    if not (folder / CONFIG_NAME).is_file() and not (
        (folder / LEGACY_CONFIG_NAME).is_file() and (folder / LEGACY_WEIGHTS_NAME).is_file()
    ):
        raise _layout_error(folder)
    return folder


def _read_legacy(folder: Path) -> dict[str, Any]:
    """0.1.0's `temporal_config.json`."""
    path = folder / LEGACY_CONFIG_NAME
    config = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict) or config.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a lumiere-video temporal adapter configuration")
    return config


def read_adapter_config(folder: Path) -> dict[str, Any]:
    """The wrapping configuration of an adapter folder (either layout), weights not read."""
    if not (folder / CONFIG_NAME).is_file():
        config = _read_legacy(folder)
    else:
        path = folder / CONFIG_NAME
        config = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(config, dict) or config.get("_class_name") != TemporalBlocks.__name__:
            held = config.get("_class_name") if isinstance(config, dict) else None
            raise ValueError(
                f"{path}: not a lumiere-video temporal adapter configuration (holds {held!r})"
            )
    missing = [key for key in _WRAPPING if key != "wrapper" and key not in config]
    if missing:
        raise ValueError(f"{folder}: adapter configuration without {missing}")
    return {key: config[key] for key in _WRAPPING if key in config}


def _lumiere_class(qualified: str, key: str) -> type[nn.Module]:
    module_name, _, name = qualified.rpartition(".")
    if module_name.split(".")[0] != "lumiere":
        raise ValueError(
            f"the adapter uses {qualified} for {key}; pass it as {key}= "
            "(classes outside lumiere are never imported from a configuration file)"
        )
    klass: type[nn.Module] = getattr(importlib.import_module(module_name), name)
    return klass


class TemporalBlocks(nn.Module, HubModel):
    """A `Lumiere` wrapper's temporal blocks and how they wrap its base: what an adapter folder
    holds (module docstring); `save_pretrained(folder)`, `from_pretrained(folder or "org/name")`,
    `push_to_hub("org/name")`. `Lumiere.temporal_adapter()` gives one sharing the wrapper's
    blocks; `Lumiere.from_temporal` / `load_temporal` apply one to a base.

    Args:
        image_size, channels, unet_time_kwarg: the wrapper's.
        groups: for each of `conv`, `attn`, `downsample`, `upsample`: `module_names`, `dims`
            (each block's channels), `klass` (the block class's qualified name) and `kwargs`.
        base: the base's `class` and `fingerprint`.
        wrapper: the wrapper class's name (`Lumiere`, `MPLumiere`).
        conv_klass, attn_klass, downsample_klass, upsample_klass: the block classes (default:
            `groups[...]["klass"]`, imported from lumiere only: classes outside it are passed).
        blocks: the four block lists to hold (`convs`, ...; shared, not copied) instead of new
            blocks `klass(dim=dim, **kwargs)`.
    """

    @typechecked
    def __init__(
        self,
        *,
        image_size: tuple[int, int] | list[int],
        channels: int,
        unet_time_kwarg: str,
        groups: Mapping[str, Mapping[str, Any]],
        base: Mapping[str, Any] | None = None,
        wrapper: str = "Lumiere",
        conv_klass: type[nn.Module] | None = None,
        attn_klass: type[nn.Module] | None = None,
        downsample_klass: type[nn.Module] | None = None,
        upsample_klass: type[nn.Module] | None = None,
        blocks: Mapping[str, nn.Module] | nn.ModuleDict | None = None,
    ) -> None:
        super().__init__()
        if len(image_size) != 2:
            raise ValueError(f"image_size: expected (height, width), got {list(image_size)}")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.channels = channels
        self.unet_time_kwarg = unet_time_kwarg
        self.wrapper = wrapper
        self.base = copy.deepcopy(dict(base or {}))
        klass_args = (conv_klass, attn_klass, downsample_klass, upsample_klass)
        given = dict(zip(GROUPS, klass_args, strict=True))
        self.groups: dict[str, dict[str, Any]] = {}
        self.klasses: dict[str, type[nn.Module]] = {}
        for group in GROUPS:
            entry = groups.get(group)
            if entry is None or not {"module_names", "dims", "klass"} <= set(entry):
                raise ValueError(
                    f"groups: expected module_names, dims and klass for the {group} blocks, "
                    f"got {entry!r}"
                )
            names, dims = list(entry["module_names"]), [int(d) for d in entry["dims"]]
            if len(names) != len(dims):
                raise ValueError(
                    f"groups: {group} blocks: expected as many dims as module_names, got "
                    f"{dims} for {names}"
                )
            kwargs = copy.deepcopy(dict(entry.get("kwargs") or {}))
            self.groups[group] = {
                "module_names": names,
                "dims": dims,
                "klass": str(entry["klass"]),
                "kwargs": kwargs,
            }
            klass = given[group] or _lumiere_class(str(entry["klass"]), f"{group}_klass")
            self.klasses[group] = klass
            if blocks is not None:
                held = blocks[LISTS[group]]
                if not isinstance(held, nn.ModuleList) or len(held) != len(names):
                    raise ValueError(
                        f"blocks: expected a ModuleList of {len(names)} {group} blocks as "
                        f"{LISTS[group]!r}, got {held!r}"
                    )
            else:
                made = (
                    make_block(group, klass, kwargs, d, n) for n, d in zip(names, dims, strict=True)
                )
                held = nn.ModuleList(block.train() for block in made)
            setattr(self, LISTS[group], held)

    @property
    def config(self) -> dict[str, Any]:
        """The wrapping configuration (what `config.json` holds besides `_class_name`, ...)."""
        return {
            "wrapper": self.wrapper,
            "image_size": list(self.image_size),
            "channels": self.channels,
            "unet_time_kwarg": self.unet_time_kwarg,
            "base": copy.deepcopy(self.base),
            "groups": copy.deepcopy(self.groups),
        }

    def _hub_config(self) -> dict[str, Any]:
        return self.config

    def _save_pretrained(self, save_directory: Path) -> None:
        try:
            json.dumps(self.config)
        except TypeError as error:
            raise ValueError(
                f"save_pretrained: the block kwargs must be JSON-serialisable ({error})"
            ) from None
        super()._save_pretrained(save_directory)

    @classmethod
    def from_pretrained(
        cls: type[_Blocks], pretrained_model_name_or_path: str | os.PathLike[str], **kwargs: Any
    ) -> _Blocks:
        """The adapter saved in a local folder or a Hub repo (`revision`, `cache_dir`, `token`,
        ... as `mp_layers.hub.HubModel.from_pretrained`), 0.1.0 folders included; block classes
        outside lumiere are passed again (`conv_klass=...`)."""
        hub = {key: kwargs.pop(key) for key in _HUB_KWARGS if key in kwargs}
        folder = _adapter_folder(pretrained_model_name_or_path, hub)
        if (folder / CONFIG_NAME).is_file():
            return super().from_pretrained(folder, **kwargs)
        map_location = kwargs.pop("map_location", "cpu")
        model = cls._hub_load_legacy(folder, _read_legacy(folder), kwargs)
        if model is None:
            raise _layout_error(folder)
        return model.to(map_location)

    @classmethod
    def _hub_load_legacy(
        cls: type[_Blocks], folder: Path, config: dict[str, Any], kwargs: dict[str, Any]
    ) -> _Blocks | None:
        """A 0.1.0 folder (`temporal_config.json`, `temporal.safetensors`), else None."""
        if config.get("format") != _FORMAT or not (folder / LEGACY_WEIGHTS_NAME).is_file():
            return None
        from safetensors.torch import load_file

        recorded = {key: config[key] for key in _WRAPPING if key in config}
        try:
            model = cls(**{**recorded, **kwargs})
        except TypeError as error:  # beartype's violations are TypeErrors
            raise ValueError(f"{folder / LEGACY_CONFIG_NAME}: invalid config: {error}") from error
        path = folder / LEGACY_WEIGHTS_NAME
        load_state_checked(model, load_file(str(path), device="cpu"), str(path))
        return model


class TemporalAdapter:
    """Mixin of `Lumiere`: its temporal blocks as an adapter folder (module docstring). The
    wrapper provides the attributes below and `temporal_modules()`."""

    model: nn.Module
    image_size: tuple[int, int]
    channels: int
    unet_time_kwarg: str
    module_names: dict[str, list[str]]
    dims: dict[str, list[int]]
    klasses: dict[str, type[nn.Module]]
    block_kwargs: dict[str, dict[str, Any]]

    def temporal_modules(self) -> nn.ModuleDict:
        """The four lists of temporal blocks (`convs`, `attns`, `downsamples`, `upsamples`)."""
        raise NotImplementedError

    def temporal_config(self) -> dict[str, Any]:
        """The wrapping configuration (JSON-serialisable), with the format and version."""
        return {
            "format": _FORMAT,
            "lumiere_version": version("lumiere-video"),
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

    def temporal_adapter(self) -> TemporalBlocks:
        """This wrapper's temporal blocks (shared, not copied) and wrapping configuration as a
        `TemporalBlocks`: `wrapper.temporal_adapter().push_to_hub("org/name")`."""
        config = self.temporal_config()
        arguments: dict[str, Any] = {key: config[key] for key in _WRAPPING}
        arguments.update({f"{g}_klass": self.klasses[g] for g in GROUPS})
        return TemporalBlocks(**arguments, blocks=self.temporal_modules())

    def save_temporal(self, directory: str | Path) -> Path:
        """Write the temporal blocks and the wrapping configuration to `directory`
        (`TemporalBlocks.save_pretrained`: `config.json`, `model.safetensors`, atomically);
        the frozen base is not written."""
        directory = Path(directory)
        try:
            json.dumps(self.temporal_config())
        except TypeError as error:
            raise ValueError(
                f"save_temporal: the block kwargs must be JSON-serialisable ({error})"
            ) from None
        self.temporal_adapter().save_pretrained(directory)
        return directory

    def _check_adapter(self, source: object, config: Mapping[str, Any]) -> None:
        mine = self.temporal_config()
        for key in ("image_size", "channels"):
            if config.get(key) != mine[key]:
                raise ValueError(
                    f"{source}: adapter made for {key}={config.get(key)}, this wrapper has "
                    f"{mine[key]}"
                )
        if config.get("base", {}).get("fingerprint") != mine["base"]["fingerprint"]:
            raise ValueError(
                f"{source}: adapter made for another base architecture "
                f"({config.get('base', {}).get('class')}), this wrapper wraps {mine['base']['class']}"
            )
        for group in GROUPS:
            theirs, ours = config["groups"].get(group, {}), mine["groups"][group]
            for key in ("module_names", "dims", "klass"):
                if theirs.get(key) != ours[key]:
                    raise ValueError(
                        f"{source}: {group} blocks: adapter has {key}={theirs.get(key)}, this "
                        f"wrapper {ours[key]}"
                    )

    def load_temporal(
        self,
        directory: str | Path | TemporalBlocks,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
    ) -> None:
        """Load temporal blocks (an adapter folder, a Hub repo id or a `TemporalBlocks`) into
        this wrapper, after checking that they were made for the same frame size, channels,
        module names, block classes, channel counts and base architecture."""
        if isinstance(directory, TemporalBlocks):
            self._check_adapter(type(directory).__name__, directory.config)
            adapter = directory
        else:
            hub = {"revision": revision, "cache_dir": cache_dir, "token": token}
            folder = _adapter_folder(directory, hub)
            self._check_adapter(folder, read_adapter_config(folder))
            klasses = {f"{g}_klass": self.klasses[g] for g in GROUPS}
            adapter = TemporalBlocks.from_pretrained(folder, **klasses)
        state = adapter.state_dict()
        load_state_checked(self.temporal_modules(), state, str(directory))

    @classmethod
    def from_temporal(
        cls: type[_Adapter],
        model: nn.Module,
        directory: str | Path,
        *,
        example_kwargs: Mapping[str, Any] | None = None,
        freeze_base: bool = True,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
        **klasses: type[nn.Module],
    ) -> _Adapter:
        """Wrap `model` (a fresh copy of the adapter's base) as the adapter (a folder or a Hub
        repo id) records it and load the adapter. Block classes outside `lumiere` must be passed
        again by keyword (`conv_klass=...`): a configuration file never imports code by itself."""
        folder = _adapter_folder(
            directory, {"revision": revision, "cache_dir": cache_dir, "token": token}
        )
        config = read_adapter_config(folder)
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
        wrapper = cls(  # type: ignore[call-arg]  # the wrapper's constructor
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
            **chosen,
        )
        wrapper.load_temporal(folder)
        return wrapper
