"""Save and load a `GaussianDiffusion` as safetensors + JSON, and convert reference checkpoints.

`save_pretrained(model, folder)` / `load_pretrained(folder_or_repo_id)` are
`model.save_pretrained(folder)` / `GaussianDiffusion.from_pretrained(...)` (`mp_layers.hub`; the
formats are `video_ddpm.saving`'s): a folder holds `config.json` (the diffusion's config),
`model.safetensors` (the schedule buffers), `README.md` and the network's own folder
`denoise_fn/` (`config.json` + `model.safetensors`). Folders of 0.1.0 (`{"format": "video-ddpm",
"version": 1, "unet", "diffusion"}` + one `model.safetensors`) still load.

`convert_reference_checkpoint` reads a `model-N.pt` written by the `Trainer` of
video-diffusion-pytorch 0.6.1 / 0.7.0 (`{"step", "model", "ema", "scaler"}`) with
`torch.load(..., weights_only=True)` (never unpickling arbitrary objects), infers the `Unet3D`
architecture from the tensor shapes and writes such a folder.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mp_layers.pretrained import atomic_write as atomic_write  # re-exported, as in 0.1.0
from mp_layers.pretrained import load_state_checked
from mp_layers.pretrained import plain_state_dict as plain_state_dict  # re-exported
from mp_layers.pretrained import write_config as write_config  # re-exported
from mp_layers.typecheck import typechecked
from video_ddpm.gaussian_diffusion import GaussianDiffusion
from video_ddpm.saving import CONFIG_NAME as CONFIG_NAME
from video_ddpm.saving import FORMAT as FORMAT
from video_ddpm.saving import FORMAT_VERSION as FORMAT_VERSION
from video_ddpm.saving import WEIGHTS_NAME as WEIGHTS_NAME
from video_ddpm.saving import PathLike, build_from_config
from video_ddpm.schedules import cosine_beta_schedule
from video_ddpm.unet import Unet3D

__all__ = ["convert_reference_checkpoint", "load_pretrained", "save_pretrained"]

REFERENCE_KEYS = ("step", "model", "ema", "scaler")


# ---------------------------------------------------------------------------------------------
# save / load


@typechecked
def save_pretrained(model: GaussianDiffusion, folder: PathLike) -> Path:
    """Write `model` (a `GaussianDiffusion` around a `Unet3D`) to `folder` (created if needed):
    `model.save_pretrained(folder)`.

    Files: `config.json` (the diffusion's config and `_parts`), `model.safetensors` (the schedule
    buffers), `README.md` and `denoise_fn/` (the network's `config.json` + `model.safetensors`).
    Each file is written to a temporary name and renamed, so a crash never leaves a half-written
    file. A text encoder passed as an object is not saved (a name or path given as
    `text_encoder` is, in the config). Returns the folder.
    """
    model.save_pretrained(folder)
    return Path(folder)


def model_from_config(config: dict[str, Any]) -> GaussianDiffusion:
    """A fresh `GaussianDiffusion` from a config (`{"unet": ..., "diffusion": ...}`, as
    0.1.0's `save_pretrained` and `video-ddpm train` write it). A text-conditional run's config
    also says `"cond": "text"` and names its encoder in `"text_encoder"` (None: the default
    offline all-MiniLM-L6-v2); that encoder is attached, to be loaded on first use."""
    return build_from_config(GaussianDiffusion, config)


@typechecked
def load_pretrained(
    folder: PathLike, *, map_location: str | torch.device = "cpu"
) -> GaussianDiffusion:
    """Rebuild a `GaussianDiffusion` from a `save_pretrained` folder (or a Hub repo id, or a
    0.1.0 folder) and load its weights strictly: `GaussianDiffusion.from_pretrained(folder)`.

    Returns the model on `map_location`, in eval mode. ValueError when a file is missing, the
    config is not a video-ddpm config, or the weights do not fit it (the message lists the
    missing, unexpected and mis-shaped keys).
    """
    return GaussianDiffusion.from_pretrained(folder, map_location=map_location)


# ---------------------------------------------------------------------------------------------
# reference checkpoints


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _torch_load(path: Path) -> Any:
    """`torch.load(weights_only=True)`, with a one-line ValueError for what it cannot read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found:
            raise ValueError(
                f"{path}: refused: it holds {found.group(1)}, which only unsafe "
                "unpickling could load (torch.load with weights_only=False can run arbitrary "
                "code); expected a reference Trainer checkpoint of tensors and plain values"
            ) from None
        detail = [line for line in str(error).splitlines() if line.strip()]
        reason = detail[-2].strip() if len(detail) > 1 else _first_line(error)
        raise ValueError(f"{path}: not a PyTorch checkpoint ({reason})") from None
    except FileNotFoundError:
        raise
    except Exception as error:  # the weights-only unpickler fails on junk in assorted ways
        raise ValueError(f"{path}: not a PyTorch checkpoint ({_first_line(error)})") from None


def _reference_state(checkpoint: Any, path: Path, use_ema: bool) -> dict[str, Tensor]:
    """The selected GaussianDiffusion state dict of a reference Trainer checkpoint."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(
            f"{path}: expected a video-diffusion-pytorch Trainer checkpoint (a dict with keys "
            f"{list(REFERENCE_KEYS)}), got {type(checkpoint).__name__}"
        )
    wanted = "ema" if use_ema else "model"
    missing = [key for key in ("model", "ema") if key not in checkpoint]
    if wanted in missing:
        raise ValueError(
            f"{path}: expected a video-diffusion-pytorch Trainer checkpoint with keys "
            f"{list(REFERENCE_KEYS)}; missing {missing}, found {sorted(map(str, checkpoint))}"
        )
    state = checkpoint[wanted]
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, Tensor) for key, value in state.items()
    ):
        raise ValueError(f"{path}: expected {wanted!r} to be a state dict of tensors")
    return dict(state)


_NET = "denoise_fn."
_REQUIRED = (
    "betas",
    _NET + "time_mlp.1.weight",
    _NET + "init_conv.weight",
    _NET + "time_rel_pos_bias.relative_attention_bias.weight",
    _NET + "init_temporal_attn.fn.fn.fn.to_qkv.weight",
    _NET + "downs.0.0.block1.proj.weight",
    _NET + "final_conv.1.weight",
)


@typechecked
def infer_reference_unet_config(
    state: Mapping[str, Tensor],
    *,
    use_bert_text_cond: bool = False,
    resnet_groups: int = 8,
    source: str = "state dict",
) -> dict[str, Any]:
    """The `Unet3D` config of a reference GaussianDiffusion state dict, from its tensor shapes.

    `resnet_groups` (GroupNorm only) and `use_bert_text_cond` cannot be read from shapes.
    """
    missing = [key for key in _REQUIRED if key not in state]
    if missing:
        raise ValueError(
            f"{source}: expected a video-diffusion-pytorch GaussianDiffusion state dict; "
            f"missing keys {missing}"
        )

    def shape(key: str) -> tuple[int, ...]:
        return tuple(state[_NET + key].shape)

    time_dim, dim = shape("time_mlp.1.weight")
    init_dim, channels, _, kernel, _ = shape("init_conv.weight")
    levels = 0
    while _NET + f"downs.{levels}.0.block1.proj.weight" in state:
        levels += 1
    widths = [shape(f"downs.{i}.0.block1.proj.weight")[0] for i in range(levels)]
    if time_dim != 4 * dim or any(width % dim for width in widths):
        raise ValueError(
            f"{source}: inconsistent shapes: time_mlp {time_dim}x{dim}, level widths {widths}"
        )
    heads = shape("time_rel_pos_bias.relative_attention_bias.weight")[1]
    qkv = shape("init_temporal_attn.fn.fn.fn.to_qkv.weight")[0]
    if qkv % (3 * heads):
        raise ValueError(f"{source}: to_qkv width {qkv} is not a multiple of 3 x {heads} heads")
    cond = state.get(_NET + "null_cond_emb")
    if use_bert_text_cond and cond is None:
        raise ValueError(
            f"{source}: use_bert_text_cond=True, but the network has no null_cond_emb "
            "(it is unconditional)"
        )
    norm = "group" if _NET + "downs.0.0.block1.norm.bias" in state else "rms"
    return {
        "dim": dim,
        "cond_dim": None if cond is None else int(cond.shape[-1]),
        "out_dim": shape("final_conv.1.weight")[0],
        "dim_mults": [width // dim for width in widths],
        "channels": channels,
        "attn_heads": heads,
        "attn_dim_head": qkv // (3 * heads),
        "use_bert_text_cond": use_bert_text_cond,
        "init_dim": init_dim,
        "init_kernel_size": kernel,
        "use_sparse_linear_attn": any(key.startswith(_NET + "downs.0.2.") for key in state),
        "resnet_groups": resnet_groups,
        "norm": norm,
    }


@typechecked
def convert_reference_checkpoint(
    path: PathLike,
    out: PathLike,
    *,
    image_size: int | tuple[int, int] | list[int],
    num_frames: int,
    use_ema: bool = True,
    timesteps: int | None = None,
    loss_type: str = "l1",
    text_use_bert_cls: bool = False,
    use_bert_text_cond: bool = False,
    resnet_groups: int = 8,
) -> Path:
    """Convert a video-diffusion-pytorch 0.6.1/0.7.0 `Trainer` checkpoint into a pretrained folder.

    Reads `path` (`model-N.pt`: `{"step", "model", "ema", "scaler"}`) with `weights_only=True`,
    takes the EMA weights (`use_ema=True`) or the trained ones, infers the `Unet3D` architecture
    from the tensor shapes (GroupNorm for 0.6.1, RMSNorm for 0.7.0), the number of timesteps from
    `betas` (`timesteps`, when given, must agree), and writes `save_pretrained(out)`. The
    reference's schedule is the cosine one; other `GaussianDiffusion` settings are the defaults.
    `image_size`, `num_frames`, `resnet_groups` and `use_bert_text_cond` are not stored in the
    checkpoint: pass those used in training. Returns `out` as a Path.
    """
    path = Path(path)
    state = _reference_state(_torch_load(path), path, use_ema)
    unet_config = infer_reference_unet_config(
        state,
        use_bert_text_cond=use_bert_text_cond,
        resnet_groups=resnet_groups,
        source=str(path),
    )
    found = int(state["betas"].shape[0])
    if timesteps is not None and timesteps != found:
        raise ValueError(f"timesteps: the checkpoint has {found} (len(betas)), got {timesteps}")
    expected_betas = cosine_beta_schedule(found).to(torch.float32)
    if not torch.allclose(state["betas"].float(), expected_betas, rtol=1e-5, atol=1e-7):
        raise ValueError(f"{path}: betas are not the reference cosine schedule of {found} steps")
    try:
        net = Unet3D.from_config(unet_config)
        model = GaussianDiffusion(
            net,
            image_size=image_size,
            num_frames=num_frames,
            text_use_bert_cls=text_use_bert_cls,
            channels=unet_config["channels"],
            timesteps=found,
            loss_type=loss_type,
        )
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{path}: cannot build the inferred model {unet_config}: {error}"
        ) from None
    load_state_checked(model, state, str(path))
    return save_pretrained(model, out)
