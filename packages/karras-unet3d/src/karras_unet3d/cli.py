"""`karras-unet3d train | sample | ema`: train on MovingShapes or a video folder, sample GIFs, and
reconstruct post-hoc EMA weights. Needs the `[train]` extra (mp_layers.training, mp_layers.video).

    karras-unet3d train                      # small class-conditional model on MovingShapes (CPU)
    karras-unet3d sample --checkpoint runs/karras-unet3d --out samples.gif --guidance 2
    karras-unet3d ema --run runs/karras-unet3d --sigma-rel 0.1 --out runs/karras-unet3d/ema-0.10

A run folder holds `karras_unet3d.json` (network and diffusion configuration), `checkpoints/`,
`metrics.csv`, `loss.png` and `samples.gif` (one row per class).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from karras_unet3d.diffusion import EDM2Diffusion, edm2_lr_lambda
from karras_unet3d.unet import KarrasUnet3D
from mp_layers.typecheck import typechecked

__all__ = [
    "build_model",
    "data_rms",
    "find_run_config",
    "main",
    "sample",
    "sample_per_class",
    "synthesize_ema",
    "train",
]

CONFIG_FILE = "karras_unet3d.json"

CLASSES = {"colour": 4, "colour-shape": 12}
"""What a synthetic run's class labels ask for, and how many classes that makes: the colour, or
the colour and the shape (`colour * 3 + shape`, which lets the report measure shape accuracy)."""

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


@typechecked
def data_rms(dataset: Any, *, num_clips: int = 64) -> float:
    """The root mean square of the first `num_clips` clips of `dataset` mapped to [-1, 1]: the
    `sigma_data` EDM's preconditioning assumes (`c_skip`, `c_out` and the loss weight are derived
    from the data's second moment `E[y^2] = sigma_data^2`, EDM appendix B.6). Natural images give
    about 0.5 (EDM's default); MovingShapes, a small sprite on black, gives 1.0."""
    from mp_layers.validation import check_int

    num_clips = check_int("num_clips", num_clips)
    count = min(len(dataset), num_clips)
    if count == 0:
        raise ValueError("dataset: expected at least one clip, got an empty dataset")
    total, size = 0.0, 0
    for index in range(count):
        video = dataset[index]["video"].to(torch.float64) * 2 - 1
        total += float(video.square().sum())
        size += video.numel()
    return math.sqrt(total / size)


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
        "--classes",
        default="colour",
        choices=tuple(CLASSES),
        help="synthetic data: condition on the colour (4 classes) or colour and shape (12)",
    )
    add("--num-classes", type=int, default=None, help="default: 4 or 12 for synthetic data")
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
    add("--guidance", type=float, default=1.5, help="CFG weight of the final samples")
    add("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # A unique temporary name: under several processes every rank writes the same file.
    from mp_layers.pretrained import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2)))


@typechecked
def build_model(config: dict[str, Any]) -> EDM2Diffusion:
    """An `EDM2Diffusion` from a run's `karras_unet3d.json` contents (`{"net": ..., "diffusion": ...}`)."""
    net = KarrasUnet3D.from_config(config["net"])
    return EDM2Diffusion(net, **config["diffusion"])


@typechecked
def find_run_config(checkpoint: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """The `karras_unet3d.json` of a run folder, a checkpoint folder in it, or an EMA export."""
    from mp_layers.training import find_run_config as find

    return find(checkpoint, CONFIG_FILE)


@torch.no_grad()
@typechecked
def sample_per_class(
    model: EDM2Diffusion,
    *,
    num_per_class: int,
    num_steps: int,
    guidance: float = 1.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `num_per_class` clips of every class (class-major order) or `num_per_class` clips of
    an unconditional model. Returns `(videos (n, c, f, h, w) in [0, 1], labels (n,))`."""
    device = next(model.parameters()).device
    classes = model.net.num_classes
    if classes is None:
        labels = torch.full((num_per_class,), -1, dtype=torch.long)
        class_labels = None
    else:
        labels = torch.arange(classes).repeat_interleave(num_per_class)
        class_labels = labels.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    videos = model.sample(
        len(labels),
        class_labels=class_labels,
        num_steps=num_steps,
        guidance=guidance,
        generator=generator,
    )
    return videos.cpu(), labels


def _run_classes(config: dict[str, Any]) -> str | None:
    """A run config's `classes` (None: labels that are not MovingShapes colours, or none).
    Runs written before the key existed were colour-conditional when they had 4 classes."""
    if "classes" in config:
        classes: str | None = config["classes"]
        return classes
    return "colour" if config["net"].get("num_classes") == 4 else None


def _class_labels(batch: dict[str, Any], classes: str | None) -> torch.Tensor:
    """A batch's class indices: `colour * 3 + shape` for `colour-shape`, else its `label`."""
    labels: torch.Tensor = batch["label"]
    if classes == "colour-shape":
        from mp_layers.video import SHAPE_NAMES

        labels = labels * len(SHAPE_NAMES) + batch["shape"]
    return labels


def _report_samples(
    videos: torch.Tensor,
    labels: torch.Tensor,
    path: Path,
    *,
    num_per_class: int,
    classes: str | None,
    fps: int = 8,
) -> float | None:
    """Write the one-row-per-class sheet, print `mp_layers.video.sample_quality_report`'s line
    (object rate, motion; colour and shape when the classes ask for them) and return the palette
    colour accuracy (None when the labels are not colours)."""
    from mp_layers.training import write_sample_sheet
    from mp_layers.video import SHAPE_NAMES, sample_quality_report

    write_sample_sheet(videos, path, fps=fps, nrow=num_per_class)
    if videos.shape[1] not in (1, 3):
        return None
    colours = shapes = None
    if classes == "colour":
        colours = labels
    elif classes == "colour-shape":
        colours, shapes = labels // len(SHAPE_NAMES), labels % len(SHAPE_NAMES)
    figures, line = sample_quality_report(videos, labels=colours, shapes=shapes)
    print(line)
    return figures["colour"]


@typechecked
def train(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`karras-unet3d train`: returns a summary dict (also printed)."""
    from mp_layers.training import (
        Trainer,
        load_model_weights,
        make_dataset,
        parse_train_args,
        print_fit,
        timed_fit,
        trainer_config_from_args,
    )
    from mp_layers.video import collate_videos

    args = parse_train_args(argv, parser=_train_parser())
    out = Path(args.out)
    synthetic = args.data == "synthetic"
    if not synthetic and args.classes != "colour":
        raise ValueError(
            f"--classes: {args.classes!r} needs the synthetic MovingShapes data, got --data "
            f"{args.data!r} (a video folder's labels are not colours and shapes)"
        )
    classes = args.classes if synthetic else None
    num_classes = args.num_classes
    if synthetic:
        num_classes = CLASSES[args.classes]
        if args.num_classes not in (None, num_classes):
            raise ValueError(
                f"--num-classes: --classes {classes} of MovingShapes has {num_classes} classes, "
                f"got {args.num_classes}"
            )
    dataset = make_dataset(
        args.data,
        image_size=args.image_size,
        num_frames=args.frames,
        **({"num_videos": args.num_videos, "seed": args.seed} if synthetic else {}),
    )
    blocks = _ints(args.num_blocks_per_stage)
    net_config: dict[str, Any] = {
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
    }
    torch.manual_seed(args.seed)
    net = KarrasUnet3D(**net_config)
    sigma_data = data_rms(dataset) if args.sigma_data == "auto" else args.sigma_data
    model = EDM2Diffusion(
        net,
        sigma_data=round(sigma_data, 4),
        P_mean=args.p_mean,
        P_std=args.p_std,
        label_dropout=args.label_dropout if num_classes else 0.0,
    )
    out.mkdir(parents=True, exist_ok=True)
    run_config = {"net": net.config, "diffusion": model.config, "classes": classes}
    _write_json(out / CONFIG_FILE, run_config)

    def loss_fn(wrapped: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        labels = _class_labels(batch, classes) if num_classes else None
        loss: torch.Tensor = wrapped(batch["video"], class_labels=labels)
        return loss

    sigma_rels = _floats(args.post_hoc_ema)
    config = trainer_config_from_args(
        args,
        ema_beta=args.ema_beta,
        ema_update_after_step=0,
        ema_update_every=1,
        post_hoc_ema_sigma_rels=sigma_rels,
        post_hoc_ema_every=max(args.steps // 20, 1),
        progress_bar=not args.no_progress,
        sample_every=0,
    )
    trainer = Trainer(
        model=model,
        data=dataset,
        optimizer_factory=partial(torch.optim.Adam, lr=args.lr, betas=(0.9, 0.99), eps=1e-8),
        config=config,
        loss_fn=loss_fn,
        lr_lambda=edm2_lr_lambda(
            batch_size=args.batch_size,
            ref_lr=args.lr,
            ref_batches=args.decay_steps,
            rampup_images=args.warmup_steps * args.batch_size,
        ),
        collate_fn=collate_videos,
    )
    result, summary = timed_fit(trainer, args.resume)
    if trainer.accelerator.is_main_process:
        sampler = build_model({"net": net.config, "diffusion": model.config})
        assert result.checkpoint is not None
        load_model_weights(sampler, result.checkpoint, ema=True)
        sampler.to(trainer.accelerator.device)
        if config.compile:  # the sampler's network calls, as in training
            sampler.net = torch.compile(sampler.net, backend=config.compile_backend)  # type: ignore[assignment]
        start = time.perf_counter()
        videos, labels = sample_per_class(
            sampler,
            num_per_class=args.num_per_class,
            num_steps=args.sample_steps,
            guidance=args.guidance,
            seed=args.seed,
        )
        accuracy = _report_samples(
            videos, labels, out / "samples.gif", num_per_class=args.num_per_class, classes=classes
        )
        summary.update(
            checkpoint=str(result.checkpoint),
            samples=str(out / "samples.gif"),
            loss_plot=str(out / "loss.png"),
            sample_seconds=round(time.perf_counter() - start, 1),
            final_loss=result.losses[-1] if result.losses else None,
        )
        print_fit(result, summary, out)
        print(f"samples: {out / 'samples.gif'} (one row per class), loss plot: {out / 'loss.png'}")
        if accuracy is not None:
            summary["color_accuracy"] = accuracy
            print(f"class-colour accuracy of {len(labels)} samples: {accuracy:.1%}")
    return summary


def _sample_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="karras-unet3d sample", description="Sample a GIF sheet from a trained run."
    )
    add = parser.add_argument
    add("--checkpoint", required=True, help="a run folder (newest checkpoint) or checkpoint folder")
    add("--out", required=True, help="output .gif (or .mp4): one row per class")
    add("--steps", type=int, default=32, help="Heun steps")
    add("--guidance", type=float, default=1.0, help="classifier-free guidance weight")
    add("--num-per-class", type=int, default=4, help="clips per class (per row)")
    add("--frames", type=int, default=None, help="frames to generate (default: training frames)")
    add("--seed", type=int, default=0)
    add("--no-ema", action="store_true", help="raw weights instead of the EMA weights")
    add("--fps", type=int, default=8)
    return parser


@typechecked
def sample(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`karras-unet3d sample`: returns a summary dict (also printed)."""
    from mp_layers.training import load_model_weights, resolve_checkpoint

    args = _sample_parser().parse_args(argv)
    checkpoint = resolve_checkpoint(args.checkpoint)
    _, config = find_run_config(checkpoint)
    if args.frames is not None:
        config["net"]["frames"] = args.frames
    model = build_model(config)
    load_model_weights(model, checkpoint, ema=not args.no_ema)
    videos, labels = sample_per_class(
        model,
        num_per_class=args.num_per_class,
        num_steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
    )
    out = Path(args.out)
    accuracy = _report_samples(
        videos,
        labels,
        out,
        num_per_class=args.num_per_class,
        classes=_run_classes(config),
        fps=args.fps,
    )
    print(f"wrote {out} from {checkpoint}")
    summary: dict[str, Any] = {"out": str(out), "checkpoint": str(checkpoint)}
    if accuracy is not None:
        summary["color_accuracy"] = accuracy
        print(f"class-colour accuracy of {len(labels)} samples: {accuracy:.1%}")
    return summary


@typechecked
def synthesize_ema(run: str | Path, sigma_rel: float, out: str | Path) -> Path:
    """Post-hoc EMA (EDM2 section 3): reconstruct the EMA of relative width `sigma_rel` from the
    power-function EMA snapshots a run saved (`train --post-hoc-ema 0.05,0.1`, through
    `ema_pytorch.PostHocEMA`), and write it as a checkpoint folder `out` (`model.safetensors` plus
    the run's config) that `sample --checkpoint out` reads."""
    from ema_pytorch import PostHocEMA
    from safetensors.torch import save_model

    from mp_layers.training import latest_checkpoint
    from mp_layers.training.checkpoint import read_state

    run = Path(run)
    _, config = find_run_config(run)
    latest = latest_checkpoint(run / "checkpoints")
    if latest is None:
        raise ValueError(f"--run: expected a run folder with checkpoints, got {run}")
    sigma_rels = tuple(read_state(latest)["config"]["post_hoc_ema_sigma_rels"])
    if len(sigma_rels) < 2:
        raise ValueError(f"--run: {run} was trained without --post-hoc-ema (no EMA profiles)")
    model = build_model(config)
    post_hoc = PostHocEMA(
        model,
        sigma_rels=sigma_rels,
        checkpoint_folder=str(run / "post_hoc_ema"),
        checkpoint_every_num_steps="manual",
    )
    synthesized = post_hoc.synthesize_ema_model(sigma_rel=sigma_rel)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_model(synthesized.ema_model, str(out / "model.safetensors"))
    _write_json(out / CONFIG_FILE, config)
    return out


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
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": train, "sample": sample, "ema": _ema_main}
    if not argv or argv[0] not in commands:
        print(f"usage: karras-unet3d {{{','.join(commands)}}} [options]  (-h for help)")
        return 2
    try:
        commands[argv[0]](argv[1:])
    except ValueError as error:
        print(f"karras-unet3d {argv[0]}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
