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
from typing import Any, cast

import torch
from torch import Tensor, nn

CONFIG_FILE = "lumiere_video.json"
REPORT_FILE = "report.json"
NUM_COLOURS = 4

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


def _ints(flag: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{flag}: expected a comma list of ints, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{flag}: expected a comma list of positive ints, got {text!r}")
    return values


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


# ----------------------------------------------------------------------------- models


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

    from lumiere.demo import make_noise_scheduler

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


def _colour_labels(batch: dict[str, Any]) -> Tensor:
    """Clip labels; unlabelled clips (a video folder, label -1) get their dominant palette
    colour (`mp_layers.video.predict_palette_color`, black clips colour 0)."""
    labels = torch.as_tensor(batch["label"])
    if bool((labels < 0).any()):
        from mp_layers.video import predict_palette_color

        predicted = predict_palette_color(batch["video"]).clamp(min=0).to(labels.device)
        labels = torch.where(labels < 0, predicted, labels)
    return labels.to(batch["video"].device)


def _warmup(steps: int) -> Any:
    return lambda step: min(1.0, (step + 1) / max(steps, 1))


# ----------------------------------------------------------------------------- stage 1


def train_base(args: argparse.Namespace, out: Path, image_size: int) -> tuple[Path, dict[str, Any]]:
    """Stage 1: train the class-conditional `UNet2DModel` on frames (`OUT/base-run/`), save the
    EMA weights and the scheduler to `OUT/base/`. Returns that folder and the fit summary."""
    from diffusers import UNet2DModel

    from lumiere.demo import (
        base_unet_config,
        diffusion_loss,
        frames_as_images,
        make_noise_scheduler,
    )
    from mp_layers.training import (
        Trainer,
        TrainerConfig,
        load_model_weights,
        make_dataset,
        timed_fit,
    )
    from mp_layers.video import collate_videos

    config = base_unet_config(
        image_size=image_size,
        block_out_channels=_ints("--base-channels", args.base_channels),
        layers_per_block=args.layers_per_block,
        num_classes=NUM_COLOURS,
    )
    scheduler = make_noise_scheduler(prediction_type=args.prediction_type)
    synthetic = args.data == "synthetic"
    frames = make_dataset(
        args.data,
        image_size=image_size,
        num_frames=1,
        **({"num_videos": args.num_images, "seed": args.seed} if synthetic else {}),
    )
    torch.manual_seed(args.seed)
    unet: Any = UNet2DModel(**config)

    def loss_fn(model: nn.Module, batch: dict[str, Any]) -> Tensor:
        labels = _colour_labels(batch)
        frames_per_clip = batch["video"].shape[2]
        images = frames_as_images(batch["video"])
        return diffusion_loss(model, images, labels.repeat_interleave(frames_per_clip), scheduler)

    run = out / "base-run"
    trainer = Trainer(
        model=unet,
        data=frames,
        optimizer_factory=partial(torch.optim.Adam, lr=args.base_lr),
        config=TrainerConfig(
            out_dir=str(run),
            steps=args.base_steps,
            batch_size=args.base_batch_size,
            mixed_precision=args.mixed_precision,
            seed=args.seed,
            grad_accum_steps=args.grad_accum_steps,
            max_grad_norm=1.0,
            ema_beta=args.ema_beta or None,
            ema_update_after_step=0,
            ema_update_every=1,
            save_every=args.save_every,
            max_time_s=args.base_max_time,
            progress_bar=not args.no_progress,
        ),
        loss_fn=loss_fn,
        lr_lambda=_warmup(args.warmup_steps),
        collate_fn=collate_videos,
    )
    print(
        f"stage 1: UNet2DModel {_millions(unet)} on {image_size}x{image_size} frames "
        f"({args.prediction_type}), at most {args.base_steps} steps / {args.base_max_time:.0f} s"
    )
    result, summary = timed_fit(trainer, args.resume)
    folder = out / "base"
    if trainer.accelerator.is_main_process:
        assert result.checkpoint is not None
        final: Any = UNet2DModel(**config)
        load_model_weights(final, result.checkpoint, ema=True)
        final.save_pretrained(folder)
        scheduler.save_pretrained(folder)
        limit = " (its --base-max-time budget)" if result.time_limit_reached else ""
        print(
            f"stage 1: trained {result.step} steps in {summary['train_seconds']:.0f} s{limit}; "
            f"base model: {folder}"
        )
        summary["final_loss"] = _mean_tail(result.losses)
    return folder, summary


# ----------------------------------------------------------------------------- stage 2


def train_temporal(
    args: argparse.Namespace, out: Path, base: nn.Module, scheduler: Any, config: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """Stage 2: inflate `base` and train only its temporal layers on clips (`OUT/checkpoints`);
    save the EMA adapter to `OUT/temporal/`. Returns the inflated model (EMA weights) and the fit
    summary."""
    from lumiere.demo import diffusion_loss
    from mp_layers.training import (
        Trainer,
        load_model_weights,
        make_dataset,
        print_fit,
        timed_fit,
        trainer_config_from_args,
    )
    from mp_layers.video import collate_videos

    synthetic = args.data == "synthetic"
    clips = make_dataset(
        args.data,
        image_size=config["image_size"],
        num_frames=config["frames"],
        **({"num_videos": args.num_videos, "seed": args.seed} if synthetic else {}),
    )
    torch.manual_seed(args.seed)
    wrapper = inflate(base, config)
    trainable = sum(p.numel() for p in wrapper.temporal_parameters())
    print(
        f"stage 2: {trainable / 1e6:.2f}M temporal parameters on {config['frames']}-frame clips "
        f"(conv after {len(config['conv_module_names'])} modules, attention after "
        f"{len(config['attn_module_names'])}), at most {args.steps} steps / "
        f"{args.max_time or math.inf:.0f} s"
    )

    def loss_fn(model: nn.Module, batch: dict[str, Any]) -> Tensor:
        return diffusion_loss(model, batch["video"] * 2 - 1, _colour_labels(batch), scheduler)

    trainer = Trainer(
        model=wrapper,
        data=clips,
        optimizer_factory=partial(torch.optim.Adam, lr=args.lr),
        config=trainer_config_from_args(
            args,
            max_grad_norm=1.0,
            ema_beta=args.ema_beta or None,
            ema_update_after_step=0,
            ema_update_every=1,
            progress_bar=not args.no_progress,
            sample_every=0,
        ),
        loss_fn=loss_fn,
        lr_lambda=_warmup(args.warmup_steps),
        collate_fn=collate_videos,
        parameters=lambda model: cast(Any, model).temporal_parameters(),
    )
    result, summary = timed_fit(trainer, args.resume)
    final = inflate(base, config)
    if trainer.accelerator.is_main_process:
        assert result.checkpoint is not None
        load_model_weights(final, result.checkpoint, ema=True)
        final.save_temporal(out / "temporal")
        print_fit(result, summary, out)
        summary["final_loss"] = _mean_tail(result.losses)
    return final.to(trainer.accelerator.device).eval(), summary


# ----------------------------------------------------------------------------- evaluation


def _millions(model: Any) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"


def _mean_tail(losses: Sequence[float], n: int = 50) -> float | None:
    tail = [x for x in losses[-n:] if math.isfinite(x)]
    return round(sum(tail) / len(tail), 5) if tail else None


def frame_colour_accuracy(videos: Tensor, labels: Tensor) -> float:
    """`palette_color_accuracy` of every frame of `videos (b, 3, t, h, w)` as a 1-frame clip."""
    from einops import rearrange, repeat

    from mp_layers.video import palette_color_accuracy

    frames = rearrange(videos, "b c t h w -> (b t) c 1 h w")
    return palette_color_accuracy(frames, repeat(labels.cpu(), "b -> (b t)", t=videos.shape[2]))


def _bar(total: int, desc: str, disable: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, disable=disable)


def sample_inflated(
    wrapper: nn.Module,
    scheduler: Any,
    *,
    image_size: int,
    frames: int,
    per_class: int,
    steps: int,
    seed: int,
    progress: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """`per_class` clips of every colour from the inflated model by DDIM. Returns
    `(videos (n, 3, t, h, w) in [0, 1], labels (n,), noise)` in class-major order."""
    from lumiere.demo import class_labels, ddim_sample, video_noise

    device = next(wrapper.parameters()).device
    labels = class_labels(NUM_COLOURS, per_class, device)
    noise = video_noise(len(labels), frames, image_size, seed=seed, device=device)
    with _bar(steps, "sampling (inflated)", not progress) as bar:
        videos = ddim_sample(
            wrapper, noise, labels, scheduler, steps=steps, progress=lambda _: bar.update(1)
        )
    return videos.cpu(), labels.cpu(), noise


def evaluate(
    wrapper: nn.Module | None,
    base: nn.Module,
    scheduler: Any,
    out: Path,
    *,
    image_size: int,
    frames: int,
    per_class: int,
    steps: int,
    seed: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Sample the inflated model (`samples.gif`, one row per colour) and the base model frame by
    frame from the same noise (`base_samples.gif`); measure colour accuracy and temporal
    coherence (mean centroid displacement per frame, `mp_layers.video.motion_stats`) of both and
    of real MovingShapes clips. Prints the figures and returns them."""
    from lumiere.demo import class_labels, sample_frames_independently, video_noise
    from mp_layers.training import write_sample_sheet
    from mp_layers.video import motion_stats, object_rate, palette_color_accuracy, real_motion_stats

    figures: dict[str, Any] = {"num_samples": per_class * NUM_COLOURS, "frames": frames}
    start = time.perf_counter()
    device = next(base.parameters()).device
    labels = class_labels(NUM_COLOURS, per_class, device)
    noise = video_noise(len(labels), frames, image_size, seed=seed, device=device)
    base = base.eval()
    with _bar(steps, "sampling (base, frame by frame)", not progress) as bar:
        base_videos = sample_frames_independently(
            base, noise, labels, scheduler, steps=steps, progress=lambda _: bar.update(1)
        )
    base_videos = base_videos.cpu()
    write_sample_sheet(base_videos, out / "base_samples.gif", nrow=per_class)
    labels = labels.cpu()
    base_motion = motion_stats(base_videos)
    real = real_motion_stats(image_size, frames)
    figures.update(
        base_frame_colour_accuracy=frame_colour_accuracy(base_videos, labels),
        base_object_rate=object_rate(base_videos),
        base_displacement=base_motion["displacement"],
        real_displacement=real["displacement"],
    )
    if wrapper is not None:
        videos, _, _ = sample_inflated(
            wrapper.eval(),
            scheduler,
            image_size=image_size,
            frames=frames,
            per_class=per_class,
            steps=steps,
            seed=seed,
            progress=progress,
        )
        write_sample_sheet(videos, out / "samples.gif", nrow=per_class)
        motion = motion_stats(videos)
        figures.update(
            colour_accuracy=palette_color_accuracy(videos, labels),
            frame_colour_accuracy=frame_colour_accuracy(videos, labels),
            object_rate=object_rate(videos),
            displacement=motion["displacement"],
            path_deviation=motion["path_deviation"],
            smoother_than_base=base_motion["displacement"] / motion["displacement"],
            displacement_vs_real=motion["displacement"] / real["displacement"],
        )
    figures["sample_seconds"] = round(time.perf_counter() - start, 1)
    _print_figures(figures, out)
    return figures


def _print_figures(figures: dict[str, Any], out: Path) -> None:
    n, frames = figures["num_samples"], figures["frames"]
    print(
        "base image model, frame by frame: colour accuracy "
        f"{figures['base_frame_colour_accuracy']:.1%} of {n * frames} frames, one object in "
        f"{figures['base_object_rate']:.1%} ({out / 'base_samples.gif'})"
    )
    if "colour_accuracy" not in figures:
        print(
            "centroid displacement (px/frame): base frame by frame "
            f"{figures['base_displacement']:.2f} | real clips {figures['real_displacement']:.2f}"
        )
        return
    print(
        f"inflated model: colour accuracy {figures['colour_accuracy']:.1%} of {n} clips "
        f"(target >= 75%); per frame {figures['frame_colour_accuracy']:.1%}, one object in "
        f"{figures['object_rate']:.1%}; samples: {out / 'samples.gif'} (one row per colour)"
    )
    print(
        "temporal coherence, mean frame-to-frame centroid displacement (px/frame): "
        f"inflated {figures['displacement']:.2f} | base frame by frame "
        f"{figures['base_displacement']:.2f} | real clips {figures['real_displacement']:.2f}"
    )
    print(
        f"  base / inflated = {figures['smoother_than_base']:.1f}x (target >= 3x); "
        f"inflated / real = {figures['displacement_vs_real']:.2f}x (target within 2x)"
    )


def plot_stages(runs: Sequence[tuple[str, Path]], path: Path) -> None:
    """One loss panel per stage (`(title, metrics.csv)`, missing files left out) into `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mp_layers.training import read_metrics

    present = [(title, csv) for title, csv in runs if csv.is_file()]
    if not present:
        return
    figure = Figure(figsize=(5 * len(present), 4), dpi=100)
    FigureCanvasAgg(figure)
    for index, (title, csv) in enumerate(present):
        axes = figure.add_subplot(1, len(present), index + 1)
        rows = [r for r in read_metrics(csv) if r.get("loss") and math.isfinite(float(r["loss"]))]
        steps = [int(float(r["step"])) for r in rows]
        losses = [float(r["loss"]) for r in rows]
        axes.plot(steps, losses, linewidth=0.6, alpha=0.5, label="loss")
        window = max(1, len(losses) // 25)
        if window > 1:  # a running mean: single steps are noisy (one random timestep per sample)
            smooth = [
                sum(losses[max(0, i - window + 1) : i + 1])
                / len(losses[max(0, i - window + 1) : i + 1])
                for i in range(len(losses))
            ]
            axes.plot(steps, smooth, linewidth=1.5, label=f"mean of {window}")
            axes.legend()
        if losses and min(losses) > 0:
            axes.set_yscale("log")
        axes.set_title(title)
        axes.set_xlabel("step")
        axes.set_ylabel("loss")
        axes.grid(alpha=0.3)
    figure.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- commands


def train(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`lumiere-video train`: both stages, samples and figures; returns the report (also written
    to `OUT/report.json`)."""
    from accelerate import PartialState

    from lumiere.demo import default_module_names
    from mp_layers.training import parse_train_args

    start = time.perf_counter()
    args = parse_train_args(argv, parser=_train_parser())
    _check_args(args)
    if not args.base_only:
        lumiere_class()  # fail before stage 1, not after it
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    base_folder = Path(args.base) if args.base else out / "base"
    if args.base is None and not (args.resume and (base_folder / "config.json").is_file()):
        size = args.image_size or 32
        base_folder, report["stage1"] = train_base(args, out, size)
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
    }
    if state.is_main_process:
        _write_json(out / CONFIG_FILE, config)
    wrapper = None
    if not args.base_only:
        wrapper, report["stage2"] = train_temporal(args, out, base, scheduler, config)
    if not state.is_main_process:
        return report
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
        description="Sample clips (one row per colour) from a `lumiere-video train` run folder.",
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


def load_run(
    run: str | Path, checkpoint: str = "latest", *, ema: bool = True
) -> tuple[Any, Any, dict[str, Any]]:
    """The inflated model of a run folder, its scheduler and configuration. `checkpoint`:
    'latest' (the exported adapter `OUT/temporal/`; with `ema=False` the newest stage-2
    checkpoint's raw weights), a stage-2 checkpoint folder, or an adapter folder."""
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
    if (folder / "model.safetensors").is_file() or (folder / "ema.safetensors").is_file():
        load_model_weights(wrapper, folder, ema=ema)
    else:
        wrapper.load_temporal(folder)
    return wrapper, scheduler, config


def sample(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`lumiere-video sample`: clips from a run's base + temporal adapter; returns a summary."""
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
    out = Path(args.out)
    wrapper, scheduler, config = load_run(out, args.checkpoint, ema=not args.no_ema)
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
    path = Path(args.gif) if args.gif else out / "samples" / "samples.gif"
    write_sample_sheet(videos, path, nrow=per_class, fps=args.fps)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lumiere-video` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": train, "sample": sample}
    if not argv or argv[0] not in commands:
        print(f"usage: lumiere-video {{{','.join(commands)}}} [options]  (-h for help)")
        return 2
    try:
        commands[argv[0]](argv[1:])
    except (ValueError, ImportError) as error:
        print(f"lumiere-video {argv[0]}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
