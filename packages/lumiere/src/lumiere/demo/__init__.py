"""The `lumiere-video` two-stage image-to-video demo (extra `lumiere-video[train]`).

Stage 1 trains a small class-conditional diffusers `UNet2DModel` (class = the `MovingShapes`
colour) on single frames; stage 2 inflates it with `lumiere.Lumiere` and trains only the temporal
layers on clips with the same noise schedule; both are sampled with DDIM.

- `lumiere.demo.diffusion`: noise schedulers, the denoising loss, DDIM sampling, noise and labels.
- `lumiere.demo.models`: the base `UNet2DModel` (configuration, loading), the inflated model
  (`inflate`, `load_run`) and where it is inflated (`default_module_names`).
- `lumiere.demo.training`: stage 1 (`train_base`) and stage 2 (`train_temporal`).
- `lumiere.demo.evaluation`: samples, colour accuracy, temporal coherence, the loss plot.
- `lumiere.demo.commands`: `lumiere-video train` and `sample` (flags -> run configuration -> steps).

This package re-exports the model, noise-scheduler and sampling helpers (images are in [-1, 1]
inside the diffusion, [0, 1] outside).
"""

from lumiere.demo.diffusion import (
    PREDICTION_TYPES,
    class_labels,
    ddim_sample,
    ddim_scheduler,
    diffusion_loss,
    diffusion_loss_at,
    frames_as_images,
    make_noise_scheduler,
    model_output,
    sample_frames_independently,
    video_noise,
)
from lumiere.demo.models import base_unet_config, default_module_names

__all__ = [
    "PREDICTION_TYPES",
    "base_unet_config",
    "class_labels",
    "ddim_sample",
    "ddim_scheduler",
    "default_module_names",
    "diffusion_loss",
    "diffusion_loss_at",
    "frames_as_images",
    "make_noise_scheduler",
    "model_output",
    "sample_frames_independently",
    "video_noise",
]
