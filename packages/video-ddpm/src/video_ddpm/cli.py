"""`video-ddpm train | sample | convert`: train a text-, class- or unconditional video diffusion
model on MovingShapes or a folder of videos, sample GIF/MP4 sheets, and convert checkpoints of the
reference implementation. Needs the `[train]` extra (mp_layers.training, mp_layers.video).

    video-ddpm train                                   # text-conditional, MovingShapes, CPU
    video-ddpm sample --checkpoint runs/video-ddpm --out samples.gif --prompts "a red square"
    video-ddpm convert results/model-10.pt --out converted --image-size 64 --frames 16

A run folder holds `config.json` (network, diffusion, conditioning), `checkpoints/`,
`metrics.csv`, `loss.png` and `samples.gif` (one row per prompt or class).

This module only turns flags into settings (`video_ddpm.demo.TrainSettings`, `SampleSettings`)
and calls the demo's steps (`video_ddpm.demo`: the run's `TrainJob`, fitted by the shared
`mp_layers.training.run_train_job`, its report, sampling) or `convert_reference_checkpoint`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from mp_layers.cli import run_subcommand
from mp_layers.pretrained import write_config as write_config  # importable here, as in 0.1.0
from video_ddpm.demo import (
    CONDITIONS,
    SampleSettings,
    TrainSettings,
    evaluate,
    load_run_model,
    report_run,
    report_sampling,
    train_job,
)
from video_ddpm.demo import CONFIG_FILE as CONFIG_FILE
from video_ddpm.demo import DEFAULT_PROMPTS as DEFAULT_PROMPTS
from video_ddpm.demo import sample_sheet as sample_sheet
from video_ddpm.gaussian_diffusion import GaussianDiffusion as GaussianDiffusion
from video_ddpm.pretrained import model_from_config as model_from_config
from video_ddpm.sampling import SAMPLERS
from video_ddpm.saving import FORMAT as FORMAT
from video_ddpm.saving import FORMAT_VERSION as FORMAT_VERSION
from video_ddpm.unet import Unet3D as Unet3D

# The default run: a text-conditional model on 16x16, 8-frame MovingShapes with all-MiniLM-L6-v2
# captions, sized to train on a 2-core CPU within 10 minutes (README: measured time, accuracy).
DEFAULTS: dict[str, Any] = {
    "steps": 800,
    "max_time": 480.0,  # a safeguard on slower machines: stop (and sample) after 8 minutes
    "batch_size": 8,
    "lr": 1e-3,
    "out": "runs/video-ddpm",
    "save_every": 500,
    "sample_every": 0,
}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


# ---------------------------------------------------------------------------------------------
# train


def _train_parser() -> argparse.ArgumentParser:
    from mp_layers.training import add_train_arguments

    parser = argparse.ArgumentParser(
        prog="video-ddpm train", description="Train a Video Diffusion Model (Accelerate)."
    )
    add_train_arguments(parser)
    parser.set_defaults(**DEFAULTS)
    add = parser.add_argument
    add(
        "--cond",
        default="auto",
        choices=CONDITIONS,
        help="conditioning: auto (text for MovingShapes or captioned videos, else none)",
    )
    add("--text-encoder", default=None, help="transformers name or folder (default: MiniLM-L6)")
    add("--text-use-cls", action="store_true", help="pool the [CLS] token instead of the mean")
    add("--num-classes", type=int, default=None, help="--cond class: default 4 (colours)")
    add("--image-size", type=int, default=16, help="height and width of the clips")
    add("--frames", type=int, default=8, help="frames per clip")
    add("--dim", type=int, default=32, help="base width of the U-Net")
    add("--dim-mults", default="1,2", help="comma list of width multipliers, one per level")
    add("--attn-heads", type=int, default=4)
    add("--attn-dim-head", type=int, default=16)
    add("--norm", default="group", choices=("group", "rms"))
    add("--no-linear-attn", action="store_true", help="drop the linear spatial attention")
    add("--timesteps", type=int, default=1000)
    add("--beta-schedule", default="cosine", choices=("cosine", "linear", "sigmoid"))
    add("--objective", default="pred_v", choices=("pred_noise", "pred_x0", "pred_v"))
    add("--loss-type", default="l2", choices=("l1", "l2"))
    add("--cond-drop-prob", type=float, default=0.1, help="trains the CFG null embedding")
    add("--num-videos", type=int, default=4096, help="MovingShapes clips")
    add("--warmup-steps", type=int, default=50, help="linear LR warm-up")
    add("--ema-beta", type=float, default=0.99, help="EMA decay of the sampled weights")
    add("--sampler", default="ddim", choices=SAMPLERS, help="sampler of the final samples")
    add("--sample-steps", type=int, default=50, help="sampler steps of the final samples")
    add("--guidance", type=float, default=None, help="CFG weight (default: 3, 1 without cond)")
    add("--num-per-row", type=int, default=4, help="final samples per prompt or class")
    add("--prompts", default=None, help="'|'-separated prompts of the final samples")
    add("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _train_settings(args: argparse.Namespace) -> TrainSettings:
    from mp_layers.training import data_options

    num_classes = None
    if args.cond == "class":
        num_classes = args.num_classes if args.num_classes is not None else 4
    return TrainSettings(
        out=args.out,
        data=args.data,
        seed=args.seed,
        cond=args.cond,
        num_classes=num_classes,
        text_encoder=args.text_encoder,
        text_use_cls=args.text_use_cls,
        image_size=args.image_size,
        frames=args.frames,
        num_videos=args.num_videos,
        dim=args.dim,
        dim_mults=_ints(args.dim_mults),
        attn_heads=args.attn_heads,
        attn_dim_head=args.attn_dim_head,
        norm=args.norm,
        linear_attn=not args.no_linear_attn,
        timesteps=args.timesteps,
        beta_schedule=args.beta_schedule,
        objective=args.objective,
        loss_type=args.loss_type,
        cond_drop_prob=args.cond_drop_prob,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        data_options=data_options(args),
    )


def train(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`video-ddpm train`: returns a summary dict (also printed)."""
    from mp_layers.training import parse_train_args, run_train_job, trainer_config_from_args

    args = parse_train_args(argv, parser=_train_parser())
    trainer_config = trainer_config_from_args(
        args,
        ema_beta=args.ema_beta,
        ema_update_after_step=0,
        ema_update_every=1,
        progress_bar=not args.no_progress,
        sample_every=0,
    )
    job = train_job(_train_settings(args), trainer_config)
    sampling = SampleSettings(
        prompts=args.prompts,
        per_row=args.num_per_row,
        sampler=args.sampler,
        steps=args.sample_steps,
        guidance=args.guidance,
        seed=args.seed,
    )
    report = partial(report_run, job=job, sampling=sampling)
    return run_train_job(job, resume=args.resume, report=report)


# ---------------------------------------------------------------------------------------------
# sample


def _sample_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="video-ddpm sample", description="Sample a GIF/MP4 sheet from a trained model."
    )
    add = parser.add_argument
    add(
        "--checkpoint",
        required=True,
        help="run, checkpoint, save_pretrained or converted folder, or Hub repo id",
    )
    add("--out", required=True, help="output .gif or .mp4: one row per prompt or class")
    add("--prompts", default=None, help="'|'-separated prompts (text models)")
    add("--num-per-row", type=int, default=4, help="samples per prompt or class")
    add("--sampler", default="ddim", choices=SAMPLERS)
    add("--sample-steps", type=int, default=None, help="sampler steps (ddim 50, ddpm all)")
    add("--guidance", type=float, default=None, help="CFG weight (default: 3, 1 without cond)")
    add("--frames", type=int, default=None, help="frames to generate (default: training frames)")
    add("--seed", type=int, default=0)
    add("--no-ema", action="store_true", help="raw weights instead of the EMA weights")
    add("--fps", type=int, default=8)
    from mp_layers.video.conditional_cli import add_conditioning_arguments

    return add_conditioning_arguments(parser)


def sample(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`video-ddpm sample`: returns a summary dict (also printed)."""
    args = _sample_parser().parse_args(argv)
    model, checkpoint, config = load_run_model(args.checkpoint, ema=not args.no_ema)
    steps = args.sample_steps
    if steps is None and args.sampler == "ddim":
        steps = 50
    sampling = SampleSettings(
        prompts=args.prompts,
        per_row=args.num_per_row,
        sampler=args.sampler,
        steps=steps,
        guidance=args.guidance,
        frames=args.frames,
        seed=args.seed,
        fps=args.fps,
    )
    out = Path(args.out)
    from video_ddpm.demo.conditional import conditional_sheet

    conditional = conditional_sheet(model, config, out, sampling, args)
    if conditional is not None:
        return {**conditional, "checkpoint": str(checkpoint)}
    report, _ = evaluate(model, config, out, sampling)
    return report_sampling(out, checkpoint, report)


# ---------------------------------------------------------------------------------------------
# convert and the entry point


def _convert(argv: Sequence[str] | None) -> dict[str, Any]:
    from video_ddpm.pretrained import convert_reference_checkpoint

    parser = argparse.ArgumentParser(
        prog="video-ddpm convert",
        description="Convert a video-diffusion-pytorch Trainer checkpoint (model-N.pt).",
    )
    add = parser.add_argument
    add("checkpoint", help="the reference Trainer's model-N.pt")
    add("--out", required=True, help="output folder (model.safetensors + config.json)")
    add("--image-size", type=int, required=True, help="the image size it was trained at")
    add("--frames", type=int, required=True, help="the frame count it was trained at")
    add("--no-ema", action="store_true", help="the raw weights instead of the EMA weights")
    add("--resnet-groups", type=int, default=8, help="GroupNorm groups (0.6.1 files)")
    add("--loss-type", default="l1", choices=("l1", "l2"))
    add("--text-use-bert-cls", action="store_true")
    add("--use-bert-text-cond", action="store_true", help="the model was text-conditioned")
    args = parser.parse_args(argv)
    out = convert_reference_checkpoint(
        args.checkpoint,
        args.out,
        image_size=args.image_size,
        num_frames=args.frames,
        use_ema=not args.no_ema,
        loss_type=args.loss_type,
        text_use_bert_cls=args.text_use_bert_cls,
        use_bert_text_cond=args.use_bert_text_cond,
        resnet_groups=args.resnet_groups,
    )
    print(f"wrote {out}")
    return {"out": str(out)}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `video-ddpm` console script."""
    commands = {"train": train, "sample": sample, "convert": _convert}
    return run_subcommand("video-ddpm", commands, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
