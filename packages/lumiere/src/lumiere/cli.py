"""`lumiere-video train | sample`: the two-stage image-to-video demo (extra `lumiere-video[train]`).

    lumiere-video train                        # both stages on MovingShapes, ~8 min on 2 CPU cores
    lumiere-video train --base runs/x/base     # skip stage 1: inflate a saved UNet2DModel
    lumiere-video sample --out runs/lumiere-video --num-samples 8 --seed 1

Stage 1 trains a small class-conditional diffusers `UNet2DModel` (class = the MovingShapes colour)
on single frames with a diffusers `DDPMScheduler`, and saves it with `save_pretrained` to
`OUT/base/` (with its `scheduler_config.json`). Stage 2 inflates it with `lumiere.Lumiere`
(temporal convolutions after every ResNet block, temporal attention in the middle block) and trains
only the temporal layers on clips with the same noise schedule; the adapter goes to
`OUT/temporal/` (`Lumiere.save_temporal`). Both are sampled with a `DDIMScheduler` (50 steps).

A run folder holds `lumiere_video.json` (the demo's configuration), `base/`, `base-run/` (stage-1
checkpoints and metrics), `checkpoints/` and `metrics.csv` (stage 2), `temporal/`, `samples.gif`
(inflated model, one row per colour), `base_samples.gif` (the base model frame by frame),
`loss.png` (both stages) and `report.json` (every figure printed).

The commands are `lumiere.demo.commands.train` and `sample`; this module is the console script's
entry point (`main`) and keeps the names it had in 0.1.0 (the demo's steps, from `lumiere.demo`).
"""

from __future__ import annotations

from collections.abc import Sequence

from lumiere.demo.commands import DEFAULTS, REPORT_FILE, sample, train
from lumiere.demo.evaluation import evaluate, frame_colour_accuracy, plot_stages, sample_inflated
from lumiere.demo.models import (
    CONFIG_FILE,
    NUM_COLOURS,
    inflate,
    load_base,
    load_run,
    load_scheduler,
    lumiere_class,
)
from lumiere.demo.training import train_base, train_temporal
from mp_layers.cli import run_subcommand

__all__ = [
    "CONFIG_FILE",
    "DEFAULTS",
    "NUM_COLOURS",
    "REPORT_FILE",
    "evaluate",
    "frame_colour_accuracy",
    "inflate",
    "load_base",
    "load_run",
    "load_scheduler",
    "lumiere_class",
    "main",
    "plot_stages",
    "sample",
    "sample_inflated",
    "train",
    "train_base",
    "train_temporal",
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lumiere-video` console script."""
    commands = {"train": train, "sample": sample}
    return run_subcommand("lumiere-video", commands, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
