"""One save/load for every package's models: Hugging Face Hub folders on `ModelHubMixin`.

`HubModel` is a mixin for `nn.Module`s, built on `huggingface_hub.ModelHubMixin`:

    class Unet3D(nn.Module, HubModel, library_name="video-ddpm"): ...

    net.save_pretrained("out/unet")          # config.json + model.safetensors (+ README.md card)
    Unet3D.from_pretrained("out/unet")       # a local folder ...
    Unet3D.from_pretrained("org/name")       # ... or a Hub repo (cached; HF_HUB_OFFLINE=1 works)
    net.push_to_hub("org/name")              # publish

`config.json` holds the constructor's JSON-able arguments (`ModelHubMixin` records them when the
model is built, defaults included) plus `_class_name`, `_library` and `_library_version`.
Composite models name the constructor arguments that are models of their own in `_hub_parts`
(`GaussianDiffusion(denoise_fn=Unet3D(...))`): each part is saved in a subfolder of that name with
its own `config.json` and weights, as diffusers pipelines do, recorded in `_parts` by class name;
`model.safetensors` of the composite holds only the weights outside its parts. A part passed to
`from_pretrained` by keyword is used as given instead of being loaded.

Weights are written atomically (a temporary file renamed over the target); loading is strict
and a mismatch is a `ValueError` naming the missing, unexpected and mis-shaped keys. Folders of
an older format are read by the class's `_hub_load_legacy` hook.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from huggingface_hub import ModelHubMixin, snapshot_download
from torch import Tensor, nn

from mp_layers.pretrained import atomic_write, load_state_checked, plain_state_dict, write_config
from mp_layers.typecheck import typechecked

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "HubModel", "resolve_folder"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_META = ("_class_name", "_library", "_library_version", "_parts")
_T = TypeVar("_T", bound="HubModel")
_REGISTRY: dict[str, type[HubModel]] = {}
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


@typechecked
def resolve_folder(
    source: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """A local folder as given, else the snapshot of the Hub repo `source` (downloaded into the
    Hub cache, or found there: with `HF_HUB_OFFLINE=1` or `local_files_only` nothing is fetched).
    A repo that cannot be had (no such repo, offline and not cached, no access) is an `OSError`
    naming `source`, from the Hub's own error."""
    if os.path.isdir(source):
        return Path(source)
    text = str(source)
    if not _REPO_ID.fullmatch(text):
        raise ValueError(f"expected a folder or a Hub repo id ('org/name'), got {text!r}")
    try:
        snapshot = snapshot_download(
            repo_id=text,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
    except Exception as error:  # not found, offline without a cached snapshot, no access, ...
        # As transformers does: one OSError that names what was asked for.
        raise OSError(
            f"{text!r} is not a local folder, and its Hub snapshot"
            f"{f' at revision {revision!r}' if revision else ''} could not be had: "
            f"{type(error).__name__}: {error}"
        ) from error
    return Path(snapshot)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path.parent}: expected a saved model folder with {path.name}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: expected a JSON config, got invalid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _tuples(value: Any) -> Any:
    """JSON lists back to tuples, recursively (JSON has no tuples)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # tensors and other values without a boolean ==
        return False


@functools.cache
def _distribution(package: str) -> str:
    """The installed distribution that provides the top-level `package` (else its name)."""
    return packages_distributions().get(package, [package])[0]


def _class_key(klass: type) -> str:
    return f"{klass.__module__.split('.')[0]}.{klass.__qualname__}"


def _part_class(name: str, source: Path) -> type[HubModel]:
    """A registered `HubModel` class by `package.ClassName`, importing the package if needed
    (only a top-level package: a config file never names arbitrary code to run)."""
    if name not in _REGISTRY:
        package = name.split(".")[0]
        try:
            importlib.import_module(package)
        except ImportError as error:
            raise ValueError(f"{source}: its part class {name} needs {package}: {error}") from None
    if name not in _REGISTRY:
        raise ValueError(f"{source}: expected a HubModel class for a part, got {name!r}")
    return _REGISTRY[name]


class HubModel(ModelHubMixin):
    """`save_pretrained` / `from_pretrained` / `push_to_hub` for an `nn.Module` (see the module
    docstring). Subclasses may set `_hub_parts`, `_hub_eval_on_load`, and override
    `_hub_config`, `_hub_state_for_load` and `_hub_load_legacy`."""

    _hub_parts: ClassVar[tuple[str, ...]] = ()
    _hub_eval_on_load: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[_class_key(cls)] = cls

    # ------------------------------------------------------------------ saving

    def _hub_config(self) -> dict[str, Any]:
        """The constructor arguments to record (default: those `ModelHubMixin` captured)."""
        config = self._hub_mixin_config
        return dict(config) if isinstance(config, dict) else {}

    def _hub_part_modules(self) -> dict[str, nn.Module | None]:
        return {name: getattr(self, name) for name in self._hub_parts}

    def save_pretrained(  # type: ignore[override]
        self, save_directory: str | os.PathLike[str], **kwargs: Any
    ) -> Path | str | None:
        """Write `config.json`, `model.safetensors` (and a subfolder per part) to
        `save_directory`; returns the folder (the commit URL with `push_to_hub=True`)."""
        card = self._hub_mixin_info.model_card_data
        if card.library_name is None:  # the distribution that ships the class (`karras-unet3d`)
            card.library_name = _distribution(type(self).__module__.split(".")[0])
        url = super().save_pretrained(Path(save_directory), **kwargs)
        return url if kwargs.get("push_to_hub") else Path(save_directory)

    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_file

        config = {k: v for k, v in self._hub_config().items() if k not in self._hub_parts}
        parts: dict[str, str | None] = {}
        for name, part in self._hub_part_modules().items():
            if part is None:
                parts[name] = None
                continue
            if not isinstance(part, HubModel):
                raise TypeError(
                    f"save_pretrained: part {name!r} must be a HubModel to be saved, got "
                    f"{type(part).__name__}"
                )
            part.save_pretrained(save_directory / name)
            parts[name] = _class_key(type(part))
        prefixes = tuple(f"{name}." for name in self._hub_parts)
        assert isinstance(self, nn.Module)
        state = {k: v for k, v in plain_state_dict(self).items() if not k.startswith(prefixes)}
        atomic_write(
            save_directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, {"format": "pt"})
        )
        library = type(self).__module__.split(".")[0]
        try:
            library_version = version(_distribution(library))
        except PackageNotFoundError:
            library_version = None
        meta = {
            "_class_name": type(self).__name__,
            "_library": library,
            "_library_version": library_version,
        }
        if parts:
            meta["_parts"] = parts  # type: ignore[assignment]
        write_config(save_directory / CONFIG_NAME, {**meta, **config})

    # ------------------------------------------------------------------ loading

    def _hub_state_for_load(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The saved weights to load into this model (default: all of them)."""
        return state

    @classmethod
    def _hub_load_legacy(
        cls: type[_T], folder: Path, config: dict[str, Any], kwargs: dict[str, Any]
    ) -> _T | None:
        """A model from a folder of an older format (`config` is its `config.json`, `kwargs`
        what the caller passed), or None when `config` is not such a format."""
        return None

    @classmethod
    def from_pretrained(
        cls: type[_T], pretrained_model_name_or_path: str | os.PathLike[str], **kwargs: Any
    ) -> _T:
        """The model saved in a local folder or a Hub repo (`ModelHubMixin.from_pretrained`:
        `revision`, `cache_dir`, `local_files_only`, `token`, ...), on `map_location` (default
        the CPU); other keywords override the saved constructor arguments or pass the parts and
        objects that are not saved (a text encoder, a perceptual network)."""
        hub = ("revision", "cache_dir", "force_download", "local_files_only", "token")
        # the whole snapshot first (one clear OSError naming a repo that cannot be had), then
        # ModelHubMixin on the local folder
        folder = resolve_folder(
            pretrained_model_name_or_path, **{k: kwargs.pop(k) for k in hub if k in kwargs}
        )
        _read_json(folder / CONFIG_NAME)  # a clear error before ModelHubMixin reads it
        return super().from_pretrained(str(folder), **kwargs)

    @classmethod
    def _from_pretrained(
        cls: type[_T],
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str | torch.device = "cpu",
        **model_kwargs: Any,
    ) -> _T:
        folder = resolve_folder(
            model_id,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        raw = _read_json(folder / CONFIG_NAME)
        # ModelHubMixin.from_pretrained has put the config's values into model_kwargs; what the
        # caller passed differs from them (or is absent from the config)
        given = {k: v for k, v in model_kwargs.items() if not (k in raw and _same(v, raw[k]))}
        legacy = cls._hub_load_legacy(folder, raw, given)
        model = legacy if legacy is not None else cls._hub_build(folder, raw, model_kwargs)
        assert isinstance(model, nn.Module)
        model = model.to(map_location)
        return model.eval() if cls._hub_eval_on_load else model

    @classmethod
    def _hub_build(cls: type[_T], folder: Path, raw: dict[str, Any], kwargs: dict[str, Any]) -> _T:
        from safetensors.torch import load_file

        saved = raw.get("_class_name")
        saved_class = _REGISTRY.get(f"{raw.get('_library')}.{saved}")
        related = saved_class is not None and (
            issubclass(saved_class, cls) or issubclass(cls, saved_class)
        )
        if saved is not None and saved != cls.__name__ and not related:
            raise ValueError(
                f"{folder}: holds a {saved} ({raw.get('_library')}), not a {cls.__name__}"
            )
        init = {k: v for k, v in kwargs.items() if k not in _META}
        parameters = cls._hub_mixin_init_parameters
        for name, value in list(init.items()):
            annotation = str(parameters[name].annotation) if name in parameters else ""
            if isinstance(value, list) and "tuple" in annotation and "list" not in annotation:
                init[name] = _tuples(value)
        for name, klass_name in (raw.get("_parts") or {}).items():
            if name in init and init[name] is not None and not isinstance(init[name], Mapping):
                continue  # passed by the caller
            init[name] = (
                None
                if klass_name is None
                else _part_class(klass_name, folder).from_pretrained(folder / name)
            )
        try:
            model = cls(**init)
        except TypeError as error:  # beartype's violations are TypeErrors
            raise ValueError(f"{folder / CONFIG_NAME}: invalid config: {error}") from error
        path = folder / WEIGHTS_NAME
        if not path.is_file():
            raise ValueError(f"{folder}: expected a saved model folder with {WEIGHTS_NAME}")
        state = dict(load_file(path, device="cpu"))
        assert isinstance(model, nn.Module)
        expected = model.state_dict().keys()
        for name in raw.get("_parts") or {}:  # the parts' weights come with the parts
            part = getattr(model, name, None)
            if part is not None:
                own = {f"{name}.{k}": v for k, v in part.state_dict().items()}
                state.update({k: v for k, v in own.items() if k in expected})
        load_state_checked(model, model._hub_state_for_load(state), str(path))
        return model
