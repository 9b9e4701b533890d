"""The folder formats of a `GaussianDiffusion` around a `Unet3D`: safetensors + JSON.

`PretrainedMixin` puts `GaussianDiffusion` on `mp_layers.hub.HubModel` (`save_pretrained`,
`from_pretrained` from a folder or a Hub repo, `push_to_hub`). A folder it writes (0.2.0) holds:

- `config.json`: the diffusion's `config` (`image_size`, `num_frames`, `timesteps`, ...) plus
  `_class_name`, `_library`, `_library_version` and `_parts` (`{"denoise_fn": "video_ddpm.Unet3D"}`);
- `model.safetensors`: the weights outside the network (the schedule buffers `betas`,
  `alphas_cumprod`, ...);
- `denoise_fn/`: the network, a `Unet3D` folder of its own (`config.json`, `model.safetensors`);
- `README.md`: the model card.

Folders of 0.1.0 (and of `video-ddpm convert` 0.1.0) still load, through `_hub_load_legacy`:

- `model.safetensors`: the whole `GaussianDiffusion` state dict (the network under `denoise_fn.`,
  plus the schedule buffers), weights only;
- `config.json`: `{"format": "video-ddpm", "version": 1, "unet": net.config, "diffusion":
  model.config}`, enough to rebuild the modules before the weights are loaded. A training run's
  `config.json` (`video-ddpm train`) is still written in this layout, with `"cond"` and
  `"text_encoder"` added (`build_from_config` rebuilds its model).

The functions here take the diffusion class as an argument (`cls`), so this module sits below
`video_ddpm.gaussian_diffusion`; the public `video_ddpm.save_pretrained` / `load_pretrained` are
in `video_ddpm.pretrained`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from safetensors.torch import load_file, save_file
from torch import nn

from mp_layers.hub import HubModel
from mp_layers.pretrained import atomic_write, load_state_checked, plain_state_dict, write_config
from mp_layers.typecheck import typechecked
from video_ddpm.unet import Unet3D

__all__ = [
    "CONFIG_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "PretrainedMixin",
    "build_from_config",
    "check_config",
    "check_folder",
    "read_config",
    "read_legacy_folder",
    "write_legacy_folder",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "video-ddpm"
FORMAT_VERSION = 1

PathLike = str | os.PathLike[str]
M = TypeVar("M", bound=nn.Module)
_P = TypeVar("_P", bound="PretrainedMixin")


# ---------------------------------------------------------------------------------------------
# the HubModel folder (0.2.0)


class PretrainedMixin(HubModel):
    """`mp_layers.hub.HubModel` for a `GaussianDiffusion`: its network is the part `denoise_fn`
    (saved in the subfolder `denoise_fn/`), its config is the model's `config` (a text encoder
    given as an object is not saved: pass it to `from_pretrained` as `text_encoder=`), a loaded
    model is in eval mode, and a 0.1.0 folder loads as it did."""

    _hub_parts = ("denoise_fn",)
    _hub_eval_on_load = True

    def _hub_config(self) -> dict[str, Any]:
        return dict(cast(Any, self).config)

    def save_pretrained(  # type: ignore[override]
        self, save_directory: PathLike, **kwargs: Any
    ) -> Path | str | None:
        """Write `config.json`, `model.safetensors` (the schedule buffers), `README.md` and the
        network's folder `denoise_fn/` to `save_directory` (created if needed; each file is
        written to a temporary name and renamed). Returns the folder (the commit URL with
        `push_to_hub=True`)."""
        net = cast(Any, self).denoise_fn
        if not isinstance(net, HubModel):  # before anything is written
            raise TypeError(
                f"model.denoise_fn: expected a video_ddpm.Unet3D (or another HubModel: its "
                f"config is saved), got {type(net).__name__}"
            )
        return super().save_pretrained(save_directory, **kwargs)

    @classmethod
    def from_pretrained(
        cls: type[_P], pretrained_model_name_or_path: PathLike, **kwargs: Any
    ) -> _P:
        """The model saved by `save_pretrained` (a local folder or a Hub repo id), converted by
        `video-ddpm convert`, or written by 0.1.0, on `map_location` (default the CPU), in eval
        mode. Other keywords override the saved arguments or pass what is not saved (a
        `text_encoder` object, a `denoise_fn`). ValueError when a file is missing, the config is
        not a video-ddpm config, or the weights do not fit it (the message lists the missing,
        unexpected and mis-shaped keys)."""
        if os.path.isdir(pretrained_model_name_or_path):
            check_folder(Path(pretrained_model_name_or_path))
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _hub_load_legacy(
        cls: type[_P], folder: Path, config: dict[str, Any], kwargs: dict[str, Any]
    ) -> _P | None:
        if "_class_name" in config:
            return None  # a HubModel folder (0.2.0)
        return cast(_P, read_legacy_folder(cast(type[nn.Module], cls), folder, config, kwargs))


def check_folder(folder: Path) -> None:
    """A ValueError naming the files a saved-model folder lacks (`config.json`,
    `model.safetensors`), if any."""
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        raise ValueError(
            f"{folder}: expected a save_pretrained folder with {CONFIG_NAME} and "
            f"{WEIGHTS_NAME}, missing {missing}"
        )


# ---------------------------------------------------------------------------------------------
# the 0.1.0 folder: save


@typechecked
def write_legacy_folder(model: nn.Module, folder: PathLike) -> Path:
    """Write `model` (a `GaussianDiffusion` around a `Unet3D`) to `folder` in the 0.1.0 layout
    (what 0.1.0's `save_pretrained` wrote; `from_pretrained` still reads it).

    Files: `model.safetensors` (the state dict: `denoise_fn.*` and the schedule buffers) and
    `config.json` (`{"format", "version", "unet", "diffusion"}`), each written to a temporary
    name and renamed. Returns the folder.
    """
    net = model.denoise_fn
    if not isinstance(net, Unet3D):
        raise TypeError(
            f"model.denoise_fn: expected a video_ddpm.Unet3D (its config is saved), "
            f"got {type(net).__name__}"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = plain_state_dict(model)
    config: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "unet": net.config,
        "diffusion": model.config,
    }
    atomic_write(
        folder / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"})
    )
    write_config(folder / CONFIG_NAME, config)
    return folder


# ---------------------------------------------------------------------------------------------
# the 0.1.0 folder: load


def check_config(config: Any, path: Path) -> dict[str, Any]:
    """`config` (read from `path`) when it is a video-ddpm config of this version with its
    "unet" and "diffusion" sections, else a ValueError that says what is wrong."""
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{path}: expected a config with format {FORMAT!r}, got {found!r}")
    if config.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: expected config version {FORMAT_VERSION}, got {config.get('version')!r}"
        )
    missing = [key for key in ("unet", "diffusion") if not isinstance(config.get(key), dict)]
    if missing:
        raise ValueError(f"{path}: expected the sections {missing} (objects) in the config")
    return config


def read_config(path: Path) -> dict[str, Any]:
    """The 0.1.0-layout config at `path` (`check_config`)."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: expected a JSON config, got invalid JSON ({error})") from None
    return check_config(config, path)


def build_from_config(
    cls: type[M], config: dict[str, Any], overrides: Mapping[str, Any] | None = None
) -> M:
    """A fresh `cls(Unet3D, **diffusion)` from a config (`{"unet": ..., "diffusion": ...}`, as
    0.1.0's `save_pretrained` and `video-ddpm train` write it); `overrides` replace diffusion
    arguments (a `denoise_fn` given there is used instead of a new `Unet3D`). A text-conditional
    run's config also says `"cond": "text"` and names its encoder in `"text_encoder"` (None: the
    default offline all-MiniLM-L6-v2); that encoder is attached, to be loaded on first use."""
    diffusion = {**config["diffusion"], **(overrides or {})}
    net = diffusion.pop("denoise_fn", None)
    if net is None:
        net = Unet3D.from_config(config["unet"])
    if config.get("cond") == "text" and diffusion.get("text_encoder") is None:
        from video_ddpm.text import TextEncoder, default_text_encoder_path

        name = config.get("text_encoder") or default_text_encoder_path()
        pooling = "cls" if diffusion.get("text_use_bert_cls") else "mean"
        diffusion["text_encoder"] = TextEncoder(name, pooling=pooling)
    return cls(net, **diffusion)


def read_legacy_folder(
    cls: type[M],
    folder: Path,
    config: Any,
    overrides: Mapping[str, Any] | None = None,
) -> M:
    """Rebuild a `cls` (a `GaussianDiffusion`) from a 0.1.0 folder whose `config.json` holds
    `config`, with `overrides` (`build_from_config`), and load its weights strictly (on the CPU,
    in training mode: `from_pretrained` moves it and sets eval mode)."""
    check_folder(folder)
    path = folder / CONFIG_NAME
    config = check_config(config, path)
    try:
        model = build_from_config(cls, config, overrides)
    except (TypeError, ValueError) as error:  # beartype's violations are TypeErrors
        raise ValueError(f"{path}: invalid config: {error}") from error
    state = load_file(folder / WEIGHTS_NAME, device="cpu")
    load_state_checked(model, state, str(folder / WEIGHTS_NAME))
    return model
