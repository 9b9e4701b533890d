"""Temporal adapter files of `Lumiere`: the temporal blocks without the frozen base.

A folder holds `temporal.safetensors` (the blocks' state, keys `convs.0.…`, `attns.0.…`, …) and
`temporal_config.json` (the wrapping configuration: frame size, channels, time argument, for each
group its module names, channels, block class and kwargs, and the base's class and fingerprint,
a SHA-256 of its parameter names and shapes). `TemporalAdapter` gives the wrapper
`temporal_config`, `save_temporal`, `load_temporal` and `from_temporal`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

from safetensors.torch import load_file, save_file
from torch import nn

from lumiere.tracing import GROUPS
from mp_layers.pretrained import atomic_write, load_state_checked, plain_state_dict, write_config

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "TemporalAdapter"]

CONFIG_NAME = "temporal_config.json"
WEIGHTS_NAME = "temporal.safetensors"
_FORMAT = "lumiere-video temporal adapter"

_Adapter = TypeVar("_Adapter", bound="TemporalAdapter")


def _fingerprint(model: nn.Module) -> str:
    """SHA-256 of the base's parameter names and shapes: which architecture an adapter fits."""
    names = sorted(f"{name}:{tuple(t.shape)}" for name, t in model.state_dict().items())
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _qualified(klass: type) -> str:
    return f"{klass.__module__}.{klass.__qualname__}"


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
        """The wrapping configuration `save_temporal` writes (JSON-serialisable)."""
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
        cls: type[_Adapter],
        model: nn.Module,
        directory: str | Path,
        *,
        example_kwargs: Mapping[str, Any] | None = None,
        freeze_base: bool = True,
        **klasses: type[nn.Module],
    ) -> _Adapter:
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
        wrapper.load_temporal(directory)
        return wrapper
