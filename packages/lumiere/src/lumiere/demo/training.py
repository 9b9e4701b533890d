"""The two training stages of the `lumiere-video` demo, on the shared `mp_layers.training.Trainer`.

Stage 1 (`train_base`) trains the class-conditional `UNet2DModel` on single frames and saves its
EMA weights and noise scheduler to `OUT/base/`; stage 2 (`train_temporal`) inflates it with
`lumiere.Lumiere` and trains only the temporal layers on clips with the same noise schedule
(`temporal_job`, run by `mp_layers.training.run_train_job`, which writes the run configuration),
saving the EMA adapter to `OUT/temporal/` (`Lumiere.save_temporal`). Both take the parsed
`lumiere-video train` flags.

On real data (`--data FOLDER` or shards) both stages hold data out
(`mp_layers.training.held_out_split`: whole videos for folders of >= 8 videos, else the end of
every video in time), train on the rest and report the EMA model's held-out diffusion loss at
fixed timesteps (`HELD_OUT_TIMESTEPS`, fixed noise: comparable between runs) as
`summary["held_out_loss"]`, logged to the `--report-to` tracker. Clips without a colour label get
their dominant palette colour as class (`colour_labels`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from lumiere.demo.diffusion import (
    diffusion_loss,
    diffusion_loss_at,
    frames_as_images,
    make_noise_scheduler,
)
from lumiere.demo.models import CONFIG_FILE, NUM_COLOURS, base_unet_config, inflate

__all__ = [
    "HELD_OUT_CLIPS",
    "HELD_OUT_TIMESTEPS",
    "colour_labels",
    "held_out_loss",
    "is_real_data",
    "temporal_job",
    "train_base",
    "train_temporal",
]

# Held-out clips read for the held-out loss and the comparison with real clips, and the fixed
# timesteps (of the 1000-step schedule: little, half and mostly noise) the held-out loss is at.
HELD_OUT_CLIPS = 16
HELD_OUT_TIMESTEPS = (100, 500, 900)

# What a stage's `report` callback gets on real data, on the main process, while the stage's
# tracker is open: (trainer, summary, EMA model, scheduler or held-out clips).
StageReport = Callable[[Any, dict[str, Any], Any, Any], None]


def _ints(flag: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{flag}: expected a comma list of ints, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{flag}: expected a comma list of positive ints, got {text!r}")
    return values


def is_real_data(args: argparse.Namespace) -> bool:
    """Whether `--data` is the user's videos (a folder or shards), not 'synthetic'."""
    return str(args.data) != "synthetic"


def colour_labels(batch: dict[str, Any]) -> Tensor:
    """Clip labels `(b,)` of a batch (`video` `(b, 3, t, h, w)`, `label` ints or a list);
    unlabelled clips (a video folder, label -1) get their dominant palette colour
    (`mp_layers.video.predict_palette_color`, black clips colour 0)."""
    labels = torch.as_tensor(batch["label"])
    if bool((labels < 0).any()):
        from mp_layers.video import predict_palette_color

        predicted = predict_palette_color(batch["video"]).clamp(min=0).to(labels.device)
        labels = torch.where(labels < 0, predicted, labels)
    return labels.to(batch["video"].device)


def held_out_loss(
    trainer: Any, model: nn.Module, clean: Tensor, labels: Tensor, scheduler: Any, *, seed: int
) -> dict[str, float]:
    """The EMA `model`'s held-out diffusion loss on `clean` (images `(b, 3, h, w)` or clips
    `(b, 3, t, h, w)` in [-1, 1], classes `labels`) at each of `HELD_OUT_TIMESTEPS` with fixed
    noise (`mp_layers.training.fixed_noise_losses`), logged to the trainer's tracker as
    `held_out/loss_t{timestep}`. Returns `{str(timestep): loss}`."""
    from mp_layers.training import fixed_noise_losses

    device = next(model.parameters()).device
    clean, labels = clean.to(device), labels.to(device)
    was_training = model.training
    model.eval()
    try:
        losses = fixed_noise_losses(
            lambda clips, t, generator: diffusion_loss_at(
                model, clips, labels, scheduler, int(t), generator
            ),
            clean,
            HELD_OUT_TIMESTEPS,
            seed=seed,
        )
    finally:
        model.train(was_training)
    trainer.log({f"held_out/loss_t{t}": value for t, value in losses.items()})
    return losses


def _loss_line(stage: str, losses: dict[str, float], clips: int, what: str) -> str:
    figures = ", ".join(f"t={t} {value:.4f}" for t, value in losses.items())
    return f"{stage}: held-out diffusion loss on {clips} {what} (fixed noise): {figures}"


def _warmup(steps: int) -> Any:
    return lambda step: min(1.0, (step + 1) / max(steps, 1))


def _millions(model: Any) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"


def _mean_tail(losses: Sequence[float], n: int = 50) -> float | None:
    tail = [x for x in losses[-n:] if math.isfinite(x)]
    return round(sum(tail) / len(tail), 5) if tail else None


def train_base(
    args: argparse.Namespace, out: Path, image_size: int, report: StageReport | None = None
) -> tuple[Path, dict[str, Any]]:
    """Stage 1: train the class-conditional `UNet2DModel` on frames (`OUT/base-run/`), save the
    EMA weights and the scheduler to `OUT/base/`, write `OUT/base-run/report.json`. Returns that
    folder and the fit summary.

    On real data the frames of held-out data are left out of training, the summary gets
    `held_out` (how the data was split) and `held_out_loss`, and `report(trainer, summary,
    base, scheduler)` runs before the tracker closes (main process)."""
    from diffusers import UNet2DModel

    from mp_layers.training import (
        Trainer,
        TrainerConfig,
        data_options,
        held_out_clips,
        held_out_split,
        load_model_weights,
        make_dataset,
        num_workers_from_args,
        timed_fit,
        write_report,
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
    options = data_options(args)
    options.pop("frame_stride", None)  # single frames
    options.pop("fps", None)
    frames = make_dataset(
        args.data,
        image_size=image_size,
        num_frames=1,
        seed=args.seed,
        **({"num_videos": args.num_images} if synthetic else {}),
        **options,
    )
    split = held_out_split(frames) if is_real_data(args) else None
    held = None
    if split is not None:
        frames = split.train
        held = held_out_clips(split.held_out, HELD_OUT_CLIPS * args.frames)  # before the fit
    torch.manual_seed(args.seed)
    unet: Any = UNet2DModel(**config)

    def loss_fn(model: nn.Module, batch: dict[str, Any]) -> Tensor:
        labels = colour_labels(batch)
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
            num_workers=num_workers_from_args(args),
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
            report_to=args.report_to,
        ),
        loss_fn=loss_fn,
        lr_lambda=_warmup(args.warmup_steps),
        collate_fn=collate_videos,
    )
    print(
        f"stage 1: UNet2DModel {_millions(unet)} on {image_size}x{image_size} frames "
        f"({args.prediction_type}), at most {args.base_steps} steps / {args.base_max_time:.0f} s"
    )
    if split is not None:
        print(f"stage 1: real data, {split.description} (not trained on)")
    folder = out / "base"
    try:
        result, summary = timed_fit(trainer, args.resume)
        if trainer.accelerator.is_main_process:
            assert result.checkpoint is not None
            final: Any = UNet2DModel(**config)
            load_model_weights(final, result.checkpoint, ema=True)
            final.save_pretrained(folder)
            scheduler.save_pretrained(folder)
            limit = " (its --base-max-time budget)" if result.time_limit_reached else ""
            print(
                f"stage 1: trained {result.step} steps in {summary['train_seconds']:.0f} s"
                f"{limit}; base model: {folder}"
            )
            summary["final_loss"] = _mean_tail(result.losses)
            if split is not None and held is not None:
                final = final.to(trainer.accelerator.device)
                images = frames_as_images(held["video"])
                labels = colour_labels(held).repeat_interleave(held["video"].shape[2])
                losses = held_out_loss(trainer, final, images, labels, scheduler, seed=args.seed)
                summary.update(held_out=split.description, held_out_loss=losses)
                print(_loss_line("stage 1", losses, len(images), "frames"))
                if report is not None:
                    report(trainer, summary, final.eval(), scheduler)
            write_report(run, summary)
    finally:
        trainer.end_tracking()
    return folder, summary


def clip_dataset(args: argparse.Namespace, image_size: int, frames: int) -> Any:
    """The clips of `--data` (`mp_layers.training.make_dataset`): `--num-videos` MovingShapes
    clips, or the user's videos cut as the clip flags say."""
    from mp_layers.training import data_options, make_dataset

    synthetic = not is_real_data(args)
    return make_dataset(
        args.data,
        image_size=image_size,
        num_frames=frames,
        seed=args.seed,
        **({"num_videos": args.num_videos} if synthetic else {}),
        **data_options(args),
    )


def temporal_job(
    args: argparse.Namespace,
    base: nn.Module,
    scheduler: Any,
    config: dict[str, Any],
    *,
    data: Any = None,
) -> Any:
    """Stage 2's `mp_layers.training.TrainJob`: `base` inflated as the run configuration `config`
    says (written to `OUT/lumiere_video.json`), its temporal layers only trained on clips (`data`,
    default `clip_dataset(args, ...)`) with the diffusion loss of `scheduler`, with the shared
    train flags `args`."""
    from mp_layers.training import TrainJob, trainer_config_from_args
    from mp_layers.video import collate_videos

    clips = clip_dataset(args, config["image_size"], config["frames"]) if data is None else data
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
        return diffusion_loss(model, batch["video"] * 2 - 1, colour_labels(batch), scheduler)

    return TrainJob(
        model=wrapper,
        data=clips,
        loss_fn=loss_fn,
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
        run_config=config,
        run_config_file=CONFIG_FILE,
        trainer_kwargs={
            "lr_lambda": _warmup(args.warmup_steps),
            "collate_fn": collate_videos,
            "parameters": lambda model: cast(Any, model).temporal_parameters(),
        },
    )


def train_temporal(
    args: argparse.Namespace,
    out: Path,
    base: nn.Module,
    scheduler: Any,
    config: dict[str, Any],
    report: StageReport | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Stage 2: write the run configuration, inflate `base` and train only its temporal layers
    on clips (`OUT/checkpoints`; `mp_layers.training.run_train_job` on `temporal_job`); save the
    EMA adapter to `OUT/temporal/`. Returns the inflated model (EMA weights) and the fit
    summary.

    On real data held-out clips are left out of training, the summary gets `held_out` and
    `held_out_loss`, and `report(trainer, summary, model, held_out_clips)` (a batch dict,
    `mp_layers.training.held_out_clips`) runs before the tracker closes (main process)."""
    from accelerate import PartialState

    from mp_layers.training import (
        held_out_clips,
        held_out_split,
        load_model_weights,
        run_train_job,
    )

    exported: dict[str, Any] = {}

    def export(trainer: Any, result: Any, summary: dict[str, Any]) -> None:
        """The EMA adapter to `OUT/temporal/` (main process, before the fit is printed)."""
        assert result.checkpoint is not None
        final = inflate(base, config)
        load_model_weights(final, result.checkpoint, ema=True)
        final.save_temporal(out / "temporal")
        exported["model"] = final.to(trainer.accelerator.device).eval()
        for key in ("checkpoint", "loss_plot"):  # the demo's report.json keeps its 0.1.0 keys
            summary.pop(key, None)
        summary["final_loss"] = _mean_tail(result.losses)
        if split is None or held is None:
            return
        model = exported["model"]
        losses = held_out_loss(
            trainer, model, held["video"] * 2 - 1, colour_labels(held), scheduler, seed=args.seed
        )
        summary.update(held_out=split.description, held_out_loss=losses)
        print(_loss_line("stage 2", losses, len(held["video"]), "clips"))
        if report is not None:
            report(trainer, summary, model, held)

    clips = clip_dataset(args, config["image_size"], config["frames"])
    split = held_out_split(clips) if is_real_data(args) else None
    held = None
    if split is not None:
        clips = split.train
        held = held_out_clips(split.held_out, HELD_OUT_CLIPS)  # before the fit
        print(f"stage 2: real data, {split.description} (not trained on)")
    job = temporal_job(args, base, scheduler, config, data=clips)
    summary = run_train_job(job, resume=args.resume, report=export, report_first=True)
    if "model" in exported:
        return exported["model"], summary
    return inflate(base, config).to(PartialState().device).eval(), summary  # other processes
