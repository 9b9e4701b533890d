"""The `video-ddpm` demo: what `video-ddpm train | sample` do, as importable steps.

The CLI (`video_ddpm.cli`) only turns its flags into a `TrainSettings` / `SampleSettings` and calls:

- `build_data(settings)`: MovingShapes or a folder of videos (`video_ddpm.demo.data`);
- `build_model(settings)`, `make_run_config(model, settings)`: a fresh `GaussianDiffusion` around a
  `Unet3D` and the run's `config.json`; `sampling_model`, `load_run_model`: the model to sample
  (`video_ddpm.demo.models`);
- `train_job(settings, trainer_config)`: the run's `mp_layers.training.TrainJob` (data, model,
  loss, optimizer, run config), which `mp_layers.training.run_train_job` fits; `report_run`: its
  report once fitted (a sample sheet of the EMA weights); `write_run_config`
  (`video_ddpm.demo.training`);
- `evaluate(model, run_config, path, sampling)`, `sample_sheet`: a GIF/MP4 sheet, one row per
  prompt or class, and its quality figures (`video_ddpm.demo.evaluation`);
- `report_training`, `report_sampling`: what the commands print (`video_ddpm.demo.report`).

Training needs the `[train]` extra (mp_layers.training, mp_layers.video), imported on use.
"""

from video_ddpm.demo.config import (
    CONDITIONS,
    CONFIG_FILE,
    DEFAULT_PROMPTS,
    SampleSettings,
    TrainSettings,
)
from video_ddpm.demo.data import build_data, make_loss_fn
from video_ddpm.demo.evaluation import evaluate, sample_sheet
from video_ddpm.demo.models import (
    build_model,
    load_run_model,
    make_run_config,
    make_text_encoder,
    sampling_model,
)
from video_ddpm.demo.report import print_quality, report_sampling, report_training
from video_ddpm.demo.training import report_run, train_job, write_run_config

__all__ = [
    "CONDITIONS",
    "CONFIG_FILE",
    "DEFAULT_PROMPTS",
    "SampleSettings",
    "TrainSettings",
    "build_data",
    "build_model",
    "evaluate",
    "load_run_model",
    "make_loss_fn",
    "make_run_config",
    "make_text_encoder",
    "print_quality",
    "report_run",
    "report_sampling",
    "report_training",
    "sample_sheet",
    "sampling_model",
    "train_job",
    "write_run_config",
]
