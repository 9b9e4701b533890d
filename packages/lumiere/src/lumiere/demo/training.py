"""The two training stages of the `lumiere-video` demo, on the shared `mp_layers.training.Trainer`.

Stage 1 (`train_base`) trains the class-conditional `UNet2DModel` on single frames and saves its
EMA weights and noise scheduler to `OUT/base/`; stage 2 (`train_temporal`) inflates it with
`lumiere.Lumiere` and trains only the temporal layers on clips with the same noise schedule
(`temporal_job`, run by `mp_layers.training.run_train_job`, which writes the run configuration),
saving the EMA adapter to `OUT/temporal/` (`Lumiere.save_temporal`). Both take the parsed
`lumiere-video train` flags.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from lumiere.demo.diffusion import diffusion_loss, frames_as_images, make_noise_scheduler
from lumiere.demo.models import CONFIG_FILE, NUM_COLOURS, base_unet_config, inflate

__all__ = ["temporal_job", "train_base", "train_temporal"]


def _ints(flag: str, text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{flag}: expected a comma list of ints, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{flag}: expected a comma list of positive ints, got {text!r}")
    return values


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


def _millions(model: Any) -> str:
    return f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"


def _mean_tail(losses: Sequence[float], n: int = 50) -> float | None:
    tail = [x for x in losses[-n:] if math.isfinite(x)]
    return round(sum(tail) / len(tail), 5) if tail else None


def train_base(args: argparse.Namespace, out: Path, image_size: int) -> tuple[Path, dict[str, Any]]:
    """Stage 1: train the class-conditional `UNet2DModel` on frames (`OUT/base-run/`), save the
    EMA weights and the scheduler to `OUT/base/`. Returns that folder and the fit summary."""
    from diffusers import UNet2DModel

    from mp_layers.training import (
        Trainer,
        TrainerConfig,
        data_options,
        load_model_weights,
        make_dataset,
        num_workers_from_args,
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


def temporal_job(
    args: argparse.Namespace, base: nn.Module, scheduler: Any, config: dict[str, Any]
) -> Any:
    """Stage 2's `mp_layers.training.TrainJob`: `base` inflated as the run configuration `config`
    says (written to `OUT/lumiere_video.json`), its temporal layers only trained on clips with the
    diffusion loss of `scheduler`, with the shared train flags `args`."""
    from mp_layers.training import TrainJob, data_options, make_dataset, trainer_config_from_args
    from mp_layers.video import collate_videos

    synthetic = args.data == "synthetic"
    clips = make_dataset(
        args.data,
        image_size=config["image_size"],
        num_frames=config["frames"],
        seed=args.seed,
        **({"num_videos": args.num_videos} if synthetic else {}),
        **data_options(args),
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
    args: argparse.Namespace, out: Path, base: nn.Module, scheduler: Any, config: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """Stage 2: write the run configuration, inflate `base` and train only its temporal layers
    on clips (`OUT/checkpoints`; `mp_layers.training.run_train_job` on `temporal_job`); save the
    EMA adapter to `OUT/temporal/`. Returns the inflated model (EMA weights) and the fit
    summary."""
    from accelerate import PartialState

    from mp_layers.training import load_model_weights, run_train_job

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

    job = temporal_job(args, base, scheduler, config)
    summary = run_train_job(job, resume=args.resume, report=export, report_first=True)
    if "model" in exported:
        return exported["model"], summary
    return inflate(base, config).to(PartialState().device).eval(), summary  # other processes
