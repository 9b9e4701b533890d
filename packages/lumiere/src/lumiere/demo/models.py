"""The models of the `lumiere-video` demo: the base image U-Net and the inflated video model.

The base is a small class-conditional diffusers `UNet2DModel` (class = the `MovingShapes` colour,
`NUM_COLOURS` classes) on RGB frames (`base_unet_config`, `load_base`), with its training noise
scheduler (`load_scheduler`). `inflate` wraps it with `lumiere.Lumiere` as a run configuration
says, and `load_run` rebuilds the inflated model of a `lumiere-video train` folder.

A run configuration (`CONFIG_FILE` in the run folder) is a JSON object: `base` (the base's
folder, relative to the run), `image_size`, `frames`, `conv_module_names`, `attn_module_names`
and `prediction_type`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lumiere.demo.diffusion import make_noise_scheduler

__all__ = [
    "CONFIG_FILE",
    "NUM_COLOURS",
    "base_unet_config",
    "default_module_names",
    "inflate",
    "load_base",
    "load_run",
    "load_scheduler",
    "lumiere_class",
]

CONFIG_FILE = "lumiere_video.json"
NUM_COLOURS = 4


def base_unet_config(
    *,
    image_size: int,
    block_out_channels: Sequence[int] = (32, 64, 64),
    layers_per_block: int = 1,
    num_classes: int = 4,
    attention_head_dim: int = 16,
    norm_num_groups: int = 8,
) -> dict[str, Any]:
    """The `UNet2DModel` configuration of the demo's base model: RGB frames `(b, 3, s, s)`, one
    level per entry of `block_out_channels` (each but the last halves the resolution), self-attention
    only at the coarsest level (and in the middle block), `num_classes` class embeddings."""
    levels = len(block_out_channels)
    if levels < 1:
        raise ValueError(
            f"block_out_channels: expected at least one level, got {block_out_channels}"
        )
    if image_size % 2 ** (levels - 1):
        raise ValueError(
            f"image_size: expected a multiple of {2 ** (levels - 1)} for {levels} levels, "
            f"got {image_size}"
        )
    for width in block_out_channels:
        if width % norm_num_groups or width % attention_head_dim:
            raise ValueError(
                f"block_out_channels: expected multiples of {norm_num_groups} (group norm) and "
                f"{attention_head_dim} (attention heads), got {tuple(block_out_channels)}"
            )
    down = ["DownBlock2D"] * (levels - 1) + ["AttnDownBlock2D"]
    up = ["AttnUpBlock2D"] + ["UpBlock2D"] * (levels - 1)
    return {
        "sample_size": image_size,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": tuple(block_out_channels),
        "layers_per_block": layers_per_block,
        "down_block_types": tuple(down),
        "up_block_types": tuple(up),
        "norm_num_groups": norm_num_groups,
        "attention_head_dim": attention_head_dim,
        "num_class_embeds": num_classes,
    }


def default_module_names(unet: nn.Module) -> tuple[list[str], list[str]]:
    """Where the demo inflates a diffusers `UNet2DModel`: a temporal convolution after every
    ResNet block of the down, middle and up blocks (each returns a `(b, c, h, w)` feature map), and
    temporal attention after every attention layer of the middle block (the coarsest level, as in
    Lumiere). Returns `(conv_module_names, attn_module_names)`."""
    conv, attn = [], []
    for name, _ in unet.named_modules():
        parts = name.split(".")
        if len(parts) < 2 or not parts[-1].isdigit():
            continue
        if parts[-2] == "resnets" and parts[0] in ("down_blocks", "mid_block", "up_blocks"):
            conv.append(name)
        elif parts[-2] == "attentions" and parts[0] == "mid_block":
            attn.append(name)
    return conv, attn


def lumiere_class() -> type[nn.Module]:
    """`lumiere.Lumiere`, or an `ImportError` that says what stage 2 needs."""
    try:
        from lumiere import Lumiere
    except ImportError as error:
        raise ImportError(
            "stage 2 needs the wrapper lumiere.Lumiere, which this installation of lumiere-video "
            f"does not provide ({error}); run with --base-only to train the base model alone"
        ) from None
    return Lumiere


def load_base(folder: str | Path) -> Any:
    """A class-conditional diffusers `UNet2DModel` from a `save_pretrained` folder, checked for
    what the demo needs (RGB in and out, at least 4 class embeddings for the colours)."""
    from diffusers import UNet2DModel

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"--base: expected a diffusers UNet2DModel folder (save_pretrained) with config.json, "
            f"got {folder}"
        )
    config = json.loads((folder / "config.json").read_text())
    if config.get("_class_name") not in (None, "UNet2DModel"):
        raise ValueError(
            f"--base: expected a UNet2DModel folder, got a {config.get('_class_name')} in {folder}"
        )
    unet = UNet2DModel.from_pretrained(folder)
    classes = unet.config.num_class_embeds
    if classes is None or classes < NUM_COLOURS:
        raise ValueError(
            f"--base: expected a class-conditional UNet2DModel with num_class_embeds >= "
            f"{NUM_COLOURS} (one class per colour), got num_class_embeds={classes}"
        )
    if unet.config.in_channels != 3 or unet.config.out_channels != 3:
        raise ValueError(
            "--base: expected RGB in and out (in_channels = out_channels = 3), got "
            f"{unet.config.in_channels} and {unet.config.out_channels}"
        )
    return unet


def load_scheduler(folder: str | Path, prediction_type: str) -> Any:
    """The base's training scheduler: `folder/scheduler_config.json` when present (written by
    stage 1), else the demo's default `DDPMScheduler` with `prediction_type`."""
    from diffusers import DDPMScheduler

    if (Path(folder) / "scheduler_config.json").is_file():
        return DDPMScheduler.from_pretrained(folder)
    return make_noise_scheduler(prediction_type=prediction_type)


def inflate(base: nn.Module, config: dict[str, Any]) -> Any:
    """Wrap `base` with `lumiere.Lumiere` as the run configuration says."""
    lumiere = lumiere_class()
    return lumiere(
        base,
        image_size=config["image_size"],
        unet_time_kwarg="timestep",
        conv_module_names=list(config["conv_module_names"]),
        attn_module_names=list(config["attn_module_names"]),
        example_kwargs={"class_labels": torch.zeros(1, dtype=torch.long)},
    )


def load_run(
    run: str | Path, checkpoint: str = "latest", *, ema: bool = True
) -> tuple[Any, Any, dict[str, Any]]:
    """The inflated model of a run folder, its scheduler and configuration. `checkpoint`:
    'latest' (the exported adapter `OUT/temporal/`; with `ema=False` the newest stage-2
    checkpoint's raw weights), a stage-2 checkpoint folder, or an adapter folder."""
    from lumiere.adapter import is_adapter_folder
    from mp_layers.training import latest_checkpoint, load_model_weights

    run = Path(run)
    if not (run / CONFIG_FILE).is_file():
        raise ValueError(
            f"--out: expected a lumiere-video train folder with {CONFIG_FILE}, got {run}"
        )
    config = json.loads((run / CONFIG_FILE).read_text())
    base = load_base(run / config["base"])
    scheduler = load_scheduler(run / config["base"], config["prediction_type"])
    wrapper = inflate(base, config)
    if checkpoint == "latest" and ema and (run / "temporal").is_dir():
        wrapper.load_temporal(run / "temporal")
        return wrapper, scheduler, config
    folder = latest_checkpoint(run / "checkpoints") if checkpoint == "latest" else Path(checkpoint)
    if folder is None:
        raise ValueError(
            f"--checkpoint latest: expected {run / 'temporal'} or stage-2 checkpoints "
            f"in {run / 'checkpoints'}, got neither"
        )
    if not folder.is_dir():
        raise ValueError(
            f"--checkpoint: expected 'latest', a checkpoint or an adapter folder, got {folder}"
        )
    weights = (folder / "model.safetensors").is_file() or (folder / "ema.safetensors").is_file()
    if weights and not is_adapter_folder(folder):  # an adapter has a model.safetensors too
        load_model_weights(wrapper, folder, ema=ema)
    else:
        wrapper.load_temporal(folder)
    return wrapper, scheduler, config
