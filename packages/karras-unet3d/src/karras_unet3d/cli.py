"""`karras-unet3d train | sample | ema`: train on MovingShapes or a video folder, sample GIFs, and
reconstruct post-hoc EMA weights. Needs the `[train]` extra (mp_layers.training, mp_layers.video).
This module only turns flags into settings; the work is in `karras_unet3d.workflow`.

    karras-unet3d train                      # small class-conditional model on MovingShapes (CPU)
    karras-unet3d sample --checkpoint runs/karras-unet3d --out samples.gif --guidance 2
    karras-unet3d ema --run runs/karras-unet3d --sigma-rel 0.1 --out runs/karras-unet3d/ema-0.10

A run folder holds `karras_unet3d.json` (network and diffusion configuration), `checkpoints/`,
`metrics.csv`, `loss.png` and `samples.gif` (one row per class).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from karras_unet3d.conditional_cli import sample_conditional_sheet
from karras_unet3d.real_data import CONDITIONS, default_guidance, resolve_cond
from karras_unet3d.workflow import (
    CLASSES,
    CONFIG_FILE,
    build_model,
    data_rms,
    find_run_config,
    report_samples,
    report_training,
    run_classes,
    sample_per_class,
    synthesize_ema,
    train_job,
)
from mp_layers.cli import run_subcommand
from mp_layers.typecheck import typechecked

__all__ = [
    "CLASSES",
    "CONFIG_FILE",
    "build_model",
    "data_rms",
    "find_run_config",
    "main",
    "sample",
    "sample_per_class",
    "synthesize_ema",
    "train",
]

# The default run: a class-conditional model on 16x16, 8-frame MovingShapes, sized to train on a
# 2-core CPU within 10 minutes (see the README for measured times and accuracy).
DEFAULTS: dict[str, Any] = {
    "steps": 3000,
    "max_time": 480.0,  # stop (with a checkpoint, then sample) after 8 minutes on a slow machine
    "batch_size": 8,
    "lr": 2e-2,
    "out": "runs/karras-unet3d",
    "save_every": 250,
    "sample_every": 0,
}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _strs(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def _sigma_data(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a finite float > 0, got {text!r}"
        ) from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected 'auto' or a finite float > 0, got {text!r}")
    return value


def _train_parser() -> argparse.ArgumentParser:
    from mp_layers.training import add_train_arguments

    parser = argparse.ArgumentParser(
        prog="karras-unet3d train", description="Train a KarrasUnet3D with EDM2 (Accelerate)."
    )
    add_train_arguments(parser)
    parser.set_defaults(**DEFAULTS)
    add = parser.add_argument
    add("--image-size", type=int, default=16, help="height and width of the clips")
    add("--frames", type=int, default=8, help="frames per clip")
    add("--dim", type=int, default=16, help="channels of the first level")
    add("--dim-max", type=int, default=32, help="channel cap")
    add("--num-downsamples", type=int, default=2)
    add("--num-blocks-per-stage", default="1", help="int or comma list (one per down-sampling)")
    add(
        "--downsample-types",
        default="image,image",
        help="comma list of all|frame|image (default: keep every frame, see the README)",
    )
    add("--attn-res", default="4", help="comma list of image resolutions with attention")
    add("--attn-dim-head", type=int, default=16)
    add("--dropout", type=float, default=0.0)
    add("--factorize-space-time-attn", action="store_true")
    add("--gradient-checkpointing", action="store_true")
    add(
        "--cond",
        default="auto",
        choices=CONDITIONS,
        help="auto: class labels for MovingShapes, none for videos (no text conditioning)",
    )
    add(
        "--classes",
        default="colour",
        choices=tuple(CLASSES),
        help="synthetic data: condition on the colour (4 classes) or colour and shape (12)",
    )
    add("--num-classes", type=int, default=None, help="default: 4 or 12 for synthetic data")
    add(
        "--cond-frames",
        default="none",
        choices=("none", "first"),
        help="first: train image to video (the first frame as extra, zero-initialised input)",
    )
    add("--init-from", default=None, help="start from a run or checkpoint's weights (EMA)")
    add("--label-dropout", type=float, default=0.1, help="trains the unconditional CFG branch")
    add(
        "--sigma-data",
        type=_sigma_data,
        default="auto",
        help="EDM sigma_data: a float, or 'auto' for the RMS of the first clips in [-1, 1]",
    )
    add("--p-mean", type=float, default=0.4, help="training noise: ln(sigma) ~ N(P_mean, P_std^2)")
    add("--p-std", type=float, default=1.0, help="training noise: ln(sigma) ~ N(P_mean, P_std^2)")
    add("--num-videos", type=int, default=4096, help="MovingShapes clips")
    add("--warmup-steps", type=int, default=50, help="linear LR warm-up (EDM2 rampup)")
    add("--decay-steps", type=int, default=1000, help="inverse-sqrt LR decay after these steps")
    add("--ema-beta", type=float, default=0.99, help="EMA decay of the sampled weights")
    add("--post-hoc-ema", default="", help="comma list of >= 2 sigma_rels, e.g. 0.05,0.1")
    add("--sample-steps", type=int, default=16, help="Heun steps of the final samples")
    add("--num-per-class", type=int, default=8, help="final samples per class (rows of the GIF)")
    add(
        "--guidance",
        type=float,
        default=None,
        help="CFG weight of the final samples (default: 1.5 with classes, 1 without)",
    )
    add("--no-progress", action="store_true", help="hide the progress bar")
    return parser


@typechecked
def train(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`karras-unet3d train`: returns a summary dict (also printed)."""
    from mp_layers.training import parse_train_args, run_train_job, trainer_config_from_args

    args = parse_train_args(argv, parser=_train_parser())
    settings = _train_settings(args)
    guidance = default_guidance(settings["net"]["num_classes"] is not None, args.guidance)
    trainer_config = trainer_config_from_args(
        args,
        ema_beta=args.ema_beta,
        ema_update_after_step=0,
        ema_update_every=1,
        post_hoc_ema_sigma_rels=_floats(args.post_hoc_ema),
        post_hoc_ema_every=max(args.steps // 20, 1),
        progress_bar=not args.no_progress,
        sample_every=0,
    )
    job = train_job(settings, trainer_config)
    report = partial(
        report_training,
        num_per_class=args.num_per_class,
        sample_steps=args.sample_steps,
        guidance=guidance,
        seed=args.seed,
        held_out=job.held_out,
        held_out_text=job.run_config.get("held_out", ""),
    )
    return run_train_job(job, resume=args.resume, report=report)


def _train_settings(args: argparse.Namespace) -> dict[str, Any]:
    """`workflow.train_job`'s settings from the train flags (and their combinations' checks)."""
    synthetic = args.data == "synthetic"
    cond = resolve_cond(args.cond, synthetic)
    if not synthetic and args.classes != "colour":
        raise ValueError(
            f"--classes: {args.classes!r} needs the synthetic MovingShapes data, got --data "
            f"{args.data!r} (a video folder's labels are not colours and shapes)"
        )
    classes = args.classes if cond == "class" else None
    num_classes = args.num_classes if cond == "class" else None
    if cond == "class":
        num_classes = CLASSES[args.classes]
        if args.num_classes not in (None, num_classes):
            raise ValueError(
                f"--num-classes: --classes {classes} of MovingShapes has {num_classes} classes, "
                f"got {args.num_classes}"
            )
    blocks = _ints(args.num_blocks_per_stage)
    from mp_layers.training.cli import data_options

    return {
        "data": args.data,
        "data_options": data_options(args),
        "num_videos": args.num_videos,
        "seed": args.seed,
        "classes": classes,
        "init_from": args.init_from,
        "net": {
            "image_size": args.image_size,
            "frames": args.frames,
            "dim": args.dim,
            "dim_max": args.dim_max,
            "num_classes": num_classes,
            "channels": 3,
            "num_downsamples": args.num_downsamples,
            "num_blocks_per_stage": blocks[0] if len(blocks) == 1 else blocks,
            "downsample_types": _strs(args.downsample_types),
            "attn_res": _ints(args.attn_res),
            "attn_dim_head": args.attn_dim_head,
            "dropout": args.dropout,
            "factorize_space_time_attn": args.factorize_space_time_attn,
            "gradient_checkpointing": args.gradient_checkpointing,
            "frame_condition": args.cond_frames == "first",
        },
        "diffusion": {
            "sigma_data": args.sigma_data,
            "P_mean": args.p_mean,
            "P_std": args.p_std,
            "label_dropout": args.label_dropout if num_classes else 0.0,
        },
        "optimizer": {
            "lr": args.lr,
            "batch_size": args.batch_size,
            "decay_steps": args.decay_steps,
            "warmup_steps": args.warmup_steps,
        },
    }


def _sample_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="karras-unet3d sample", description="Sample a GIF sheet from a trained run."
    )
    add = parser.add_argument
    add(
        "--checkpoint",
        required=True,
        help="a run folder (newest checkpoint), checkpoint, save_pretrained folder or Hub repo id",
    )
    add("--out", required=True, help="output .gif (or .mp4): one row per class")
    add("--steps", type=int, default=32, help="Heun steps")
    add("--guidance", type=float, default=None, help="CFG weight (default: 1.5 with classes)")
    add("--num-per-class", type=int, default=4, help="clips per class (per row)")
    add("--frames", type=int, default=None, help="frames to generate (default: training frames)")
    add("--seed", type=int, default=0)
    add("--no-ema", action="store_true", help="raw weights instead of the EMA weights")
    add("--fps", type=int, default=8)
    from mp_layers.video.conditional_cli import add_conditioning_arguments

    return add_conditioning_arguments(parser)


@typechecked
def sample(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`karras-unet3d sample`: returns a summary dict (also printed)."""
    from karras_unet3d.diffusion import EDM2Diffusion
    from mp_layers.training import load_model_weights, model_source

    args = _sample_parser().parse_args(argv)
    kind, checkpoint = model_source(args.checkpoint)
    if kind == "pretrained":  # a save_pretrained folder or a Hub repo: no run to report on
        model = EDM2Diffusion.from_pretrained(checkpoint)
        config: dict[str, Any] = {"classes": None, "data": "pretrained"}
    else:
        _, config = find_run_config(checkpoint)
        model = build_model(config)
        load_model_weights(model, checkpoint, ema=not args.no_ema)
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames: expected an int >= 1, got {args.frames}")
    classes_kind = run_classes(config) if kind == "run" else None
    conditional = sample_conditional_sheet(model, args, checkpoint, classes_kind)
    if conditional is not None:
        return conditional
    videos, labels = sample_per_class(
        model,
        num_per_class=args.num_per_class,
        num_steps=args.steps,
        guidance=default_guidance(model.net.num_classes is not None, args.guidance),
        seed=args.seed,
    )
    out = Path(args.out)
    if config.get("data") in ("videos", "pretrained"):  # MovingShapes figures: its runs only
        from mp_layers.training import write_sample_sheet

        write_sample_sheet(videos, out, fps=args.fps, nrow=args.num_per_class)
        print(f"wrote {out} from {checkpoint}")
        return {"out": str(out), "checkpoint": str(checkpoint)}
    accuracy = report_samples(
        videos,
        labels,
        out,
        num_per_class=args.num_per_class,
        classes=run_classes(config),
        fps=args.fps,
    )
    print(f"wrote {out} from {checkpoint}")
    summary: dict[str, Any] = {"out": str(out), "checkpoint": str(checkpoint)}
    if accuracy is not None:
        summary["color_accuracy"] = accuracy
        print(f"class-colour accuracy of {len(labels)} samples: {accuracy:.1%}")
    return summary


def _ema_main(argv: Sequence[str] | None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="karras-unet3d ema", description="Reconstruct a post-hoc EMA of any length."
    )
    parser.add_argument("--run", required=True, help="run folder trained with --post-hoc-ema")
    parser.add_argument("--sigma-rel", type=float, required=True, help="relative EMA width")
    parser.add_argument("--out", required=True, help="output checkpoint folder")
    args = parser.parse_args(argv)
    path = synthesize_ema(args.run, args.sigma_rel, args.out)
    print(f"wrote the sigma_rel={args.sigma_rel} post-hoc EMA to {path}")
    return {"out": str(path)}


@typechecked
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `karras-unet3d` console script."""
    commands = {"train": train, "sample": sample, "ema": _ema_main}
    return run_subcommand("karras-unet3d", commands, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
