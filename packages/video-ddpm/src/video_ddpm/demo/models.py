"""The models of a demo run: a fresh `GaussianDiffusion` around a `Unet3D`, its run config, and
the models that sample (the EMA weights of a finished run, or any run or converted folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch

from video_ddpm.conditioning import TextEncoderLike
from video_ddpm.demo.config import CONFIG_FILE, TrainSettings
from video_ddpm.gaussian_diffusion import GaussianDiffusion
from video_ddpm.pretrained import model_from_config
from video_ddpm.saving import FORMAT, FORMAT_VERSION
from video_ddpm.unet import Unet3D

__all__ = [
    "build_model",
    "load_run_model",
    "make_run_config",
    "make_text_encoder",
    "sampling_model",
]


def make_text_encoder(name: str | None, *, use_cls: bool) -> Any:
    """A `video_ddpm.TextEncoder` for `name` (None: the offline all-MiniLM-L6-v2), pooled with
    [CLS] when `use_cls`, else the mean; its weights load on first use."""
    from video_ddpm.text import TextEncoder, default_text_encoder_path

    return TextEncoder(name or default_text_encoder_path(), pooling="cls" if use_cls else "mean")


def build_model(settings: TrainSettings) -> GaussianDiffusion:
    """A fresh `GaussianDiffusion` around a `Unet3D`, initialised from `settings.seed`.

    The condition width is the text encoder's (`cond="text"`, the encoder attached to the model),
    the class count (`"class"`) or none; the encoder's config is read, not its weights.
    """
    encoder = None
    cond_dim = settings.num_classes
    if settings.cond == "text":
        encoder = make_text_encoder(settings.text_encoder, use_cls=settings.text_use_cls)
        cond_dim = encoder.dim  # reads the encoder's config only, not its weights
    torch.manual_seed(settings.seed)
    net = Unet3D(
        dim=settings.dim,
        cond_dim=cond_dim,
        dim_mults=settings.dim_mults,
        channels=3,
        attn_heads=settings.attn_heads,
        attn_dim_head=settings.attn_dim_head,
        use_sparse_linear_attn=settings.linear_attn,
        norm=settings.norm,
    )
    return GaussianDiffusion(
        net,
        image_size=settings.image_size,
        num_frames=settings.frames,
        text_use_bert_cls=settings.text_use_cls,
        timesteps=settings.timesteps,
        loss_type=settings.loss_type,
        beta_schedule=settings.beta_schedule,
        objective=settings.objective,
        cond_drop_prob=settings.cond_drop_prob,
        text_encoder=encoder,
    )


def make_run_config(model: GaussianDiffusion, settings: TrainSettings) -> dict[str, Any]:
    """The run's `config.json`: the folder format's header, the network's and the diffusion's
    configs (without an encoder object), the conditioning and the text encoder's name."""
    net = cast(Unet3D, model.denoise_fn)
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "unet": net.config,
        "diffusion": {k: v for k, v in model.config.items() if k != "text_encoder"},
        "cond": settings.cond,
        "text_encoder": settings.text_encoder,
    }


def sampling_model(
    run_config: dict[str, Any],
    checkpoint: Path,
    *,
    text_encoder: TextEncoderLike | None,
    device: torch.device,
) -> GaussianDiffusion:
    """A fresh model of `run_config` with the EMA weights of `checkpoint`, on `device`, in eval
    mode; `text_encoder` (the trained model's, already loaded) is reused with its cache."""
    from mp_layers.training import load_model_weights

    model = GaussianDiffusion(
        Unet3D.from_config(run_config["unet"]), **run_config["diffusion"], text_encoder=text_encoder
    )
    load_model_weights(model, checkpoint, ema=True)
    model.to(device).eval()
    return model


def load_run_model(
    path: str | Path, *, ema: bool
) -> tuple[GaussianDiffusion, Path, dict[str, Any]]:
    """The model of a run, checkpoint or model folder or Hub repo id (`path`,
    `mp_layers.training.model_source`), with its EMA weights (`ema`) or
    the raw ones, in eval mode; also the checkpoint it read and the run config.

    A run's checkpoint is rebuilt from the run's `config.json` and loaded (verified against its
    `state.json`); a `save_pretrained` folder (or one `video-ddpm convert` wrote) is loaded by
    `GaussianDiffusion.from_pretrained`, its config given in the run config's layout (no `cond`:
    sampled without a condition, as a 0.1.0 folder was)."""
    from mp_layers.training import find_run_config, load_model_weights, model_source

    kind, checkpoint = model_source(path)
    folder, config = (
        (checkpoint, {"_class_name": "GaussianDiffusion"})
        if kind == "pretrained"
        else find_run_config(checkpoint, CONFIG_FILE)
    )
    if "_class_name" in config:  # a HubModel folder: its weights are split into parts
        model = GaussianDiffusion.from_pretrained(folder)
        net = cast(Unet3D, model.denoise_fn)
        config = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "unet": net.config,
            "diffusion": model.config,
        }
        return model, checkpoint, config
    model = model_from_config(config)
    load_model_weights(model, checkpoint, ema=ema)
    model.eval()
    return model, checkpoint, config
