"""The folder format of a `GaussianDiffusion` around a `Unet3D`: safetensors + JSON.

A pretrained folder holds two files:

- `model.safetensors`: the `GaussianDiffusion` state dict (the network under `denoise_fn.`, plus
  the schedule buffers `betas`, `alphas_cumprod`, ...), weights only;
- `config.json`: `{"format": "video-ddpm", "version": 1, "unet": net.config, "diffusion":
  model.config}`, enough to rebuild the modules before the weights are loaded.

The functions here take the diffusion class as an argument (`cls`), so this module sits below
`video_ddpm.gaussian_diffusion`, whose `from_pretrained` / `save_pretrained` call it; the public
`video_ddpm.save_pretrained` / `load_pretrained` are in `video_ddpm.pretrained`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mp_layers.pretrained import atomic_write, load_state_checked, plain_state_dict, write_config
from mp_layers.typecheck import typechecked
from video_ddpm.unet import Unet3D

__all__ = [
    "CONFIG_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "build_from_config",
    "read_config",
    "read_folder",
    "write_folder",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "video-ddpm"
FORMAT_VERSION = 1

PathLike = str | os.PathLike[str]
M = TypeVar("M", bound=nn.Module)


# ---------------------------------------------------------------------------------------------
# save


@typechecked
def write_folder(model: nn.Module, folder: PathLike) -> Path:
    """Write `model` (a `GaussianDiffusion` around a `Unet3D`) to `folder` (created if needed).

    Files: `model.safetensors` (the state dict: `denoise_fn.*` and the schedule buffers) and
    `config.json` (`{"format", "version", "unet", "diffusion"}`). Each file is written to a
    temporary name and renamed, so a crash never leaves a half-written file. A text encoder
    passed as an object is not saved (a name or path given as `text_encoder` is, in the config).
    Returns the folder.
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
# load


def read_config(path: Path) -> dict[str, Any]:
    """The config at `path`: a video-ddpm config of this version with its "unet" and
    "diffusion" sections, else a ValueError that says what is wrong."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: expected a JSON config, got invalid JSON ({error})") from None
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


def build_from_config(cls: type[M], config: dict[str, Any]) -> M:
    """A fresh `cls(Unet3D, **diffusion)` from a config (`{"unet": ..., "diffusion": ...}`, as
    `write_folder` and `video-ddpm train` write it). A text-conditional run's config also says
    `"cond": "text"` and names its encoder in `"text_encoder"` (None: the default offline
    all-MiniLM-L6-v2); that encoder is attached, to be loaded on first use."""
    net = Unet3D.from_config(config["unet"])
    diffusion = dict(config["diffusion"])
    if config.get("cond") == "text" and diffusion.get("text_encoder") is None:
        from video_ddpm.text import TextEncoder, default_text_encoder_path

        name = config.get("text_encoder") or default_text_encoder_path()
        pooling = "cls" if diffusion.get("text_use_bert_cls") else "mean"
        diffusion["text_encoder"] = TextEncoder(name, pooling=pooling)
    return cls(net, **diffusion)


def _build(cls: type[M], config: dict[str, Any], source: Path) -> M:
    try:
        return build_from_config(cls, config)
    except (TypeError, ValueError) as error:  # beartype's violations are TypeErrors
        raise ValueError(f"{source}: invalid config: {error}") from error


@typechecked
def read_folder(cls: type[M], folder: PathLike, *, map_location: str | torch.device = "cpu") -> M:
    """Rebuild a `cls` (a `GaussianDiffusion`) from a `write_folder` folder and load its weights
    strictly.

    Returns the model on `map_location`, in eval mode. ValueError when a file is missing, the
    config is not a video-ddpm config, or the weights do not fit it (the message lists the
    missing, unexpected and mis-shaped keys).
    """
    folder = Path(folder)
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        raise ValueError(
            f"{folder}: expected a save_pretrained folder with {CONFIG_NAME} and "
            f"{WEIGHTS_NAME}, missing {missing}"
        )
    model = _build(cls, read_config(folder / CONFIG_NAME), folder / CONFIG_NAME)
    state = load_file(folder / WEIGHTS_NAME, device="cpu")
    load_state_checked(model, state, str(folder / WEIGHTS_NAME))
    return model.to(map_location).eval()
