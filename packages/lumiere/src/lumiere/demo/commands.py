"""The `lumiere-video train` and `sample` commands: flags -> run configuration -> the demo's steps.

`train` runs stage 1 (`lumiere.demo.training.train_base`, or loads `--base`), then stage 2
(`train_temporal`: the run configuration `lumiere.demo.models.CONFIG_FILE` and the fit, through
`mp_layers.training.run_train_job`), then `lumiere.demo.evaluation.evaluate` and `plot_stages`,
and writes the report (`REPORT_FILE`).
`sample` rebuilds a run's inflated model (`load_run`) and writes a sample sheet.

On real data (`--data FOLDER` or shards) the MovingShapes figures (colour accuracy, centroid
displacement of real MovingShapes clips) are not computed: each stage reports its held-out loss
at fixed noise, and `lumiere.demo.evaluation.evaluate_real` compares samples with held-out real
clips, inside the stage that trained last (its tracker still open).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lumiere.demo.evaluation import evaluate, evaluate_real, plot_stages, sample_inflated
from lumiere.demo.models import (
    CONFIG_FILE,
    NUM_COLOURS,
    default_module_names,
    load_base,
    load_run,
    load_scheduler,
    lumiere_class,
)
from lumiere.demo.training import (
    HELD_OUT_CLIPS,
    clip_dataset,
    is_real_data,
    train_base,
    train_temporal,
)
from mp_layers.pretrained import write_config

__all__ = ["DEFAULTS", "REPORT_FILE", "sample", "train"]

REPORT_FILE = "report.json"

# Stage 2 (the temporal layers) takes the shared flags; stage 1 has its own `--base-*` budget.
# Measured on a 2-core CPU, see the README: both stages, sampling and evaluation within 10 min.
DEFAULTS: dict[str, Any] = {
    "steps": 2000,
    "max_time": 240.0,
    "batch_size": 4,
    "lr": 1e-3,
    "out": "runs/lumiere-video",
    "save_every": 250,
    "sample_every": 0,
}


def _placement(text: str, default: list[str]) -> list[str]:
    """`auto` → `default` (the demo's placement), else the comma list ('' → none)."""
    if text.strip() == "auto":
        return list(default)
    return [part.strip() for part in text.split(",") if part.strip()]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # A unique temporary name: under several processes every rank writes the same file.
    from mp_layers.pretrained import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2)))


def _train_parser() -> argparse.ArgumentParser:
    from mp_layers.training import add_train_arguments

    parser = argparse.ArgumentParser(
        prog="lumiere-video train",
        description="Stage 1: a class-conditional UNet2DModel on frames (or --base DIR); stage 2: "
        "inflate it with Lumiere and train only the temporal layers on clips. The shared flags "
        "(--steps, --batch-size, --lr, --max-time, ...) set stage 2; --base-* set stage 1.",
    )
    add_train_arguments(parser)
    parser.set_defaults(**DEFAULTS)
    add = parser.add_argument
    add(
        "--base",
        default=None,
        help="a diffusers UNet2DModel folder (save_pretrained): skip stage 1",
    )
    add("--base-only", action="store_true", help="stop after stage 1 (train and evaluate the base)")
    add("--image-size", type=int, default=None, help="frame size (default 32, or the --base's)")
    add("--frames", type=int, default=8, help="frames per clip (stage 2 and samples)")
    add("--base-channels", default="16,32,64", help="UNet2DModel block_out_channels (stage 1)")
    add("--layers-per-block", type=int, default=1, help="UNet2DModel layers_per_block (stage 1)")
    add(
        "--prediction-type",
        default="v_prediction",
        choices=("epsilon", "v_prediction"),
        help="what the base predicts (stage 1; a --base brings its own scheduler_config.json)",
    )
    add("--base-steps", type=int, default=3000, help="stage-1 optimizer steps")
    add("--base-max-time", type=float, default=180.0, help="stage-1 time budget (seconds)")
    add("--base-batch-size", type=int, default=32, help="stage-1 frames per step")
    add("--base-lr", type=float, default=1e-3, help="stage-1 learning rate")
    add("--num-images", type=int, default=16384, help="stage-1 MovingShapes frames")
    add("--num-videos", type=int, default=4096, help="stage-2 MovingShapes clips")
    add(
        "--conv-modules",
        default="auto",
        help="comma list of base modules followed by a temporal "
        "convolution; auto: every ResNet of the down, middle and up blocks",
    )
    add(
        "--attn-modules",
        default="auto",
        help="comma list of base modules followed by temporal "
        "attention; auto: the middle block's attention; '' for none",
    )
    add("--warmup-steps", type=int, default=50, help="linear learning-rate warm-up (both stages)")
    add("--ema-beta", type=float, default=0.99, help="EMA decay of the sampled weights (0: none)")
    add("--sample-steps", type=int, default=50, help="DDIM steps of the final samples")
    add("--num-per-class", type=int, default=4, help="final samples per colour (row of the GIF)")
    add("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    for flag in (
        "frames",
        "base_steps",
        "base_batch_size",
        "num_images",
        "num_videos",
        "sample_steps",
        "num_per_class",
        "layers_per_block",
    ):
        value = getattr(args, flag)
        if value < 1:
            raise ValueError(f"--{flag.replace('_', '-')}: expected an int >= 1, got {value}")
    for flag in ("warmup_steps",):
        if getattr(args, flag) < 0:
            raise ValueError(
                f"--{flag.replace('_', '-')}: expected an int >= 0, got {args.warmup_steps}"
            )
    for flag in ("base_lr", "base_max_time"):
        value = getattr(args, flag)
        if not value > 0:
            raise ValueError(f"--{flag.replace('_', '-')}: expected a number > 0, got {value}")
    if not 0.0 <= args.ema_beta < 1.0:
        raise ValueError(f"--ema-beta: expected a number in [0, 1), got {args.ema_beta}")
    if args.image_size is not None and args.image_size < 8:
        raise ValueError(f"--image-size: expected an int >= 8, got {args.image_size}")
    if args.base is not None and args.base_only:
        raise ValueError("--base-only: expected no --base (stage 1 is skipped with --base)")


def train(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`lumiere-video train`: both stages, samples and figures; returns the report (also written
    to `OUT/report.json`)."""
    from accelerate import PartialState

    from mp_layers.training import parse_train_args

    start = time.perf_counter()
    args = parse_train_args(argv, parser=_train_parser())
    _check_args(args)
    if not args.base_only:
        lumiere_class()  # fail before stage 1, not after it
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    real = is_real_data(args)
    real_figures: dict[str, Any] = {}

    def evaluate_base(trainer: Any, summary: dict[str, Any], unet: Any, scheduler: Any) -> None:
        """`--base-only` on real data: the base against held-out clips (stage 1's tracker)."""
        from mp_layers.training import held_out_clips, held_out_split

        size = int(unet.config.sample_size)
        held = held_out_clips(
            held_out_split(clip_dataset(args, size, args.frames)).held_out, HELD_OUT_CLIPS
        )
        real_figures.update(evaluate_real(trainer, None, unet, scheduler, held, out, **sampling))

    def evaluate_both(trainer: Any, summary: dict[str, Any], wrapper: Any, held: Any) -> None:
        """Both models against stage 2's held-out clips (stage 2's tracker)."""
        model = base.to(next(wrapper.parameters()).device)
        real_figures.update(
            evaluate_real(trainer, wrapper, model, scheduler, held, out, **sampling)
        )

    sampling = {"steps": args.sample_steps, "seed": args.seed, "progress": not args.no_progress}
    base_folder = Path(args.base) if args.base else out / "base"
    if args.base is None and not (args.resume and (base_folder / "config.json").is_file()):
        size = args.image_size or 32
        stage_report = evaluate_base if real and args.base_only else None
        base_folder, report["stage1"] = train_base(args, out, size, stage_report)
    elif args.base is None:
        print(f"stage 1: done before, loading {base_folder} (delete it to train stage 1 further)")
    state = PartialState()  # several processes under `accelerate launch`: the main one writes
    state.wait_for_everyone()
    base = load_base(base_folder)
    scheduler = load_scheduler(base_folder, args.prediction_type)
    size = int(base.config.sample_size)
    if args.image_size is not None and args.image_size != size:
        raise ValueError(
            f"--image-size: expected the base's sample_size {size}, got {args.image_size}"
        )
    if args.base is not None and state.is_main_process:
        base.save_pretrained(out / "base")
        scheduler.save_pretrained(out / "base")
    conv, attn = default_module_names(base)
    config: dict[str, Any] = {
        "base": "base",
        "image_size": size,
        "frames": args.frames,
        "conv_module_names": _placement(args.conv_modules, conv),
        "attn_module_names": _placement(args.attn_modules, attn),
        "prediction_type": scheduler.config.prediction_type,
        "data": "real" if real else "synthetic",
    }
    wrapper = None
    if not args.base_only:  # writes the run configuration (`mp_layers.training.run_train_job`)
        wrapper, report["stage2"] = train_temporal(
            args, out, base, scheduler, config, evaluate_both if real else None
        )
    elif state.is_main_process:
        write_config(out / CONFIG_FILE, config)
    if not state.is_main_process:
        return report
    if real:
        if not real_figures:  # --base-only with a base trained before: no stage ran
            print(
                "real data: no stage trained in this run, so nothing was compared with "
                "held-out clips"
            )
        held_out = report.get("stage2", report.get("stage1", {})).get("held_out")
        report["figures"] = {"held_out": held_out, **real_figures}
    else:
        base = base.to(state.device if wrapper is None else next(wrapper.parameters()).device)
        report["figures"] = evaluate(
            wrapper,
            base,
            scheduler,
            out,
            image_size=size,
            frames=args.frames,
            per_class=args.num_per_class,
            steps=args.sample_steps,
            seed=args.seed,
            progress=not args.no_progress,
        )
    plot_stages(
        [
            ("stage 1: base UNet2DModel on frames", out / "base-run" / "metrics.csv"),
            ("stage 2: temporal layers on clips", out / "metrics.csv"),
        ],
        out / "loss.png",
    )
    report.update(config=config, wall_seconds=round(time.perf_counter() - start, 1))
    _write_json(out / REPORT_FILE, report)
    print(
        f"loss plot: {out / 'loss.png'}, figures: {out / REPORT_FILE}; "
        f"wall time {report['wall_seconds']:.0f} s"
    )
    return report


def _sample_parser() -> argparse.ArgumentParser:
    from mp_layers.training import add_sample_arguments

    parser = argparse.ArgumentParser(
        prog="lumiere-video sample",
        description="Sample clips (one row per colour) from a `lumiere-video train` run folder, "
        "or from a Hub repo id holding one (its config, base/ and temporal/).",
    )
    add_sample_arguments(parser)
    parser.set_defaults(out="runs/lumiere-video")
    add = parser.add_argument
    add("--steps", type=int, default=50, help="DDIM steps")
    add("--frames", type=int, default=None, help="frames per clip (default: the training frames)")
    add("--gif", default=None, help="output file (.gif or .mp4; default OUT/samples/samples.gif)")
    add("--fps", type=int, default=8, help="frames per second of the file")
    add("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _run_folder(source: str) -> tuple[Path, bool]:
    """A local folder as given, or the snapshot of the Hub repo `source` (`org/name`, through
    the Hub cache; `HF_HUB_OFFLINE=1` downloads nothing); and whether it came from the Hub."""
    from mp_layers.hub import resolve_folder

    if Path(source).exists() or source.count("/") != 1 or source.startswith((".", "/")):
        return Path(source), False
    try:
        return resolve_folder(source), True
    except Exception as error:  # no such repo, offline without a cached snapshot, ...
        raise ValueError(
            f"expected a lumiere-video train folder or a Hub repo id holding one, got "
            f"{source!r} ({type(error).__name__}: {error})"
        ) from error


def sample(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`lumiere-video sample`: clips from a run's base + temporal adapter; returns a summary
    (colour accuracy and centroid displacement for a MovingShapes run, motion for a run on
    real data)."""
    from mp_layers.training import parse_train_args, write_sample_sheet
    from mp_layers.video import motion_stats, palette_color_accuracy

    args = parse_train_args(argv, parser=_sample_parser())
    for flag in ("steps", "num_samples", "fps"):
        if getattr(args, flag) < 1:
            raise ValueError(
                f"--{flag.replace('_', '-')}: expected an int >= 1, got {getattr(args, flag)}"
            )
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames: expected an int >= 1, got {args.frames}")
    out, from_hub = _run_folder(args.out)
    checkpoint = args.checkpoint
    if checkpoint != "latest" and not Path(checkpoint).exists():  # an adapter on the Hub
        checkpoint = str(_run_folder(checkpoint)[0])
    wrapper, scheduler, config = load_run(out, checkpoint, ema=not args.no_ema)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    wrapper = wrapper.to(device).eval()
    per_class = math.ceil(args.num_samples / NUM_COLOURS)
    frames = args.frames or config["frames"]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.mixed_precision)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        videos, labels, _ = sample_inflated(
            wrapper,
            scheduler,
            image_size=config["image_size"],
            frames=frames,
            per_class=per_class,
            steps=args.steps,
            seed=args.seed,
            progress=not args.no_progress,
        )
    default = Path("samples.gif") if from_hub else out / "samples" / "samples.gif"
    path = Path(args.gif) if args.gif else default  # never into the read-only Hub cache
    write_sample_sheet(videos, path, nrow=per_class, fps=args.fps)
    if config.get("data") == "real":  # MovingShapes figures mean nothing on the user's videos
        from mp_layers.video import mean_frame_difference

        summary = {"out": str(path), "motion": mean_frame_difference(videos)}
        print(
            f"wrote {path}: {len(labels)} clips of {frames} frames, one row per colour class; "
            f"motion (mean frame difference) {summary['motion']:.4f}"
        )
        return summary
    summary = {
        "out": str(path),
        "colour_accuracy": palette_color_accuracy(videos, labels),
        "displacement": motion_stats(videos)["displacement"],
    }
    print(
        f"wrote {path}: {len(labels)} clips of {frames} frames, one row per colour; colour "
        f"accuracy {summary['colour_accuracy']:.1%}, centroid displacement "
        f"{summary['displacement']:.2f} px/frame"
    )
    return summary
