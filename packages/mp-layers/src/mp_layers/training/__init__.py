"""mp_layers.training (extra `mp-layers[train]`): one Accelerate-based training loop for all models.

- `Trainer(model=, data=, optimizer_factory=, config=TrainerConfig(...), loss_fn=, lr_lambda=,
  scheduler_factory=, sample_fn=, parameters=, phases=)` and
  `Trainer.fit(resume=None | 'latest' | path) -> FitResult`: gradient accumulation, clipping,
  mixed precision ('no', 'bf16', 'fp16'), EMA and post-hoc EMA (ema-pytorch), GIF sample sheets,
  `metrics.csv` + `loss.png`, a tqdm bar on the main process. The same script runs on CPU, one
  GPU, or many through `accelerate launch` / `torchrun`.
- `TrainingPhase(name=, parameters=, optimizer_factory=, loss_fn=, max_grad_norm=, every=)`: an
  extra optimizer stepped after the main one in each step on the same micro-batches (GAN training:
  `parameters=` picks the generator for the main optimizer, a phase trains the discriminator);
  its optimizer state is checkpointed as `optimizer-{name}.pt`, its loss logged as `loss_{name}`.
- Checkpoints (`checkpoints/step-XXXXXXXXX/`): safetensors weights, optimizer / scheduler / scaler /
  RNG state loaded with `weights_only=True`, `state.json` with the SHA-256 of every file; written
  atomically, last K kept, verified on resume (`resume='latest'` skips damaged ones), and a
  resumed run continues exactly as an uninterrupted one (deterministic `ResumableBatchSampler`).
  `CheckpointError` (a `ValueError`) names the folder, the file and the reason.
- `TrainerConfig(distributed='fsdp')`: FSDP2 through Accelerate (on GPUs, and on CPU processes
  with gloo), sharded checkpoints via torch.distributed.checkpoint; `compile=True`: the training
  step and the sampler's network calls through `torch.compile`.
- CLI helpers shared by the model packages: `add_train_arguments`, `add_sample_arguments`,
  `parse_train_args` (TOML `--config`), `trainer_config_from_args`, `make_dataset`, and the
  skeleton of every `train` command: `TrainJob` -> `run_train_job` (run config, fit, report,
  `report.json`).
- Evaluation on any data: `held_out_split` (whole videos, shards, or the end of every video in
  time for small folders), `held_out_clips`, `write_report`; experiment trackers through
  Accelerate (`TrainerConfig.report_to`, `--report-to`; `mp_layers.training.trackers`).
"""

from mp_layers.training.checkpoint import (
    CheckpointError,
    find_run_config,
    latest_checkpoint,
    list_checkpoints,
    load_model_weights,
    resolve_checkpoint,
    verify_checkpoint,
)
from mp_layers.training.cli import (
    add_sample_arguments,
    add_train_arguments,
    data_options,
    default_num_workers,
    load_toml_config,
    make_dataset,
    num_workers_from_args,
    parse_train_args,
    print_fit,
    timed_fit,
    trainer_config_from_args,
)
from mp_layers.training.command import TrainJob, run_train_job
from mp_layers.training.config import TrainerConfig
from mp_layers.training.data import EpochSubset
from mp_layers.training.evaluation import (
    HeldOutSplit,
    data_conditioning,
    fixed_noise_losses,
    held_out_clips,
    held_out_split,
    report_against_real,
    write_report,
)
from mp_layers.training.metrics import plot_loss, read_metrics
from mp_layers.training.sampler import ResumableBatchSampler
from mp_layers.training.samples import write_sample_sheet
from mp_layers.training.sources import model_source
from mp_layers.training.trainer import FitResult, NonFiniteLossError, Trainer, TrainingPhase

__all__ = [
    "CheckpointError",
    "EpochSubset",
    "FitResult",
    "HeldOutSplit",
    "NonFiniteLossError",
    "ResumableBatchSampler",
    "TrainJob",
    "Trainer",
    "TrainerConfig",
    "TrainingPhase",
    "add_sample_arguments",
    "add_train_arguments",
    "data_conditioning",
    "data_options",
    "default_num_workers",
    "find_run_config",
    "fixed_noise_losses",
    "held_out_clips",
    "held_out_split",
    "latest_checkpoint",
    "list_checkpoints",
    "load_model_weights",
    "load_toml_config",
    "make_dataset",
    "model_source",
    "num_workers_from_args",
    "parse_train_args",
    "plot_loss",
    "print_fit",
    "read_metrics",
    "report_against_real",
    "resolve_checkpoint",
    "run_train_job",
    "timed_fit",
    "trainer_config_from_args",
    "verify_checkpoint",
    "write_report",
    "write_sample_sheet",
]
