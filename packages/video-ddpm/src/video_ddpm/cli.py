"""`video-ddpm train | sample | convert`: train a text-, class- or unconditional video diffusion
model on MovingShapes or a folder of videos, sample GIF/MP4 sheets, and convert checkpoints of the
reference implementation. Needs the `[train]` extra (mp_layers.training, mp_layers.video).

    video-ddpm train                                   # text-conditional, MovingShapes, CPU
    video-ddpm sample --checkpoint runs/video-ddpm --out samples.gif --prompts "a red square"
    video-ddpm convert results/model-10.pt --out converted --image-size 64 --frames 16

A run folder holds `config.json` (network, diffusion, conditioning), `checkpoints/`,
`metrics.csv`, `loss.png` and `samples.gif` (one row per prompt or class).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from video_ddpm.diffusion import GaussianDiffusion
from video_ddpm.pretrained import FORMAT, FORMAT_VERSION, model_from_config, write_config
from video_ddpm.unet import Unet3D

CONFIG_FILE = "config.json"
CONDITIONS = ("none", "class", "text")
SAMPLERS = ("ddpm", "ddim")
# One prompt per colour for the final samples of a MovingShapes run (rows of samples.gif).
DEFAULT_PROMPTS = (
    "a red circle moving right",
    "a green square moving left",
    "a blue triangle moving down",
    "a yellow circle moving up",
)

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


def _train_parser() -> argparse.ArgumentParser:
    from mp_layers.training import add_train_arguments

    parser = argparse.ArgumentParser(
        prog="video-ddpm train", description="Train a Video Diffusion Model (Accelerate)."
    )
    add_train_arguments(parser)
    parser.set_defaults(**DEFAULTS)
    add = parser.add_argument
    add("--cond", default="text", choices=CONDITIONS, help="conditioning of the model")
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
    add("--guidance", type=float, default=3.0, help="classifier-free guidance weight")
    add("--num-per-row", type=int, default=4, help="final samples per prompt or class")
    add("--prompts", default=None, help="'|'-separated prompts of the final samples")
    add("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _make_text_encoder(name: str | None, *, use_cls: bool) -> Any:
    from video_ddpm.text import TextEncoder, default_text_encoder_path

    return TextEncoder(name or default_text_encoder_path(), pooling="cls" if use_cls else "mean")


def _index_named(text: str, names: Sequence[str]) -> int:
    """Index of the first of `names` that is a word of `text`, or -1."""
    words = text.split()
    return next((i for i, name in enumerate(names) if name in words), -1)


def _rows(
    config: dict[str, Any], prompts: str | None, per_row: int
) -> tuple[Any, list[int], list[int]]:
    """The conditioning of the sample sheet, and the colour and shape asked for by each sample
    (-1: not asked): text prompts (default: one per palette colour), every class, or nothing."""
    from mp_layers.video import COLOR_NAMES, SHAPE_NAMES

    cond = config.get("cond", "none")
    if cond == "text":
        texts = [p.strip() for p in prompts.split("|")] if prompts else list(DEFAULT_PROMPTS)
        texts = [t for t in texts for _ in range(per_row)]
        colours = [_index_named(t, COLOR_NAMES) for t in texts]
        return texts, colours, [_index_named(t, SHAPE_NAMES) for t in texts]
    if cond == "class":
        classes = config["unet"]["cond_dim"]
        labels = torch.arange(classes).repeat_interleave(per_row)
        one_hot = torch.nn.functional.one_hot(labels, classes).float()
        return one_hot, labels.tolist(), [-1] * len(labels)
    return None, [-1] * per_row, [-1] * per_row


def sample_sheet(
    model: GaussianDiffusion,
    config: dict[str, Any],
    path: Path,
    *,
    prompts: str | None = None,
    per_row: int = 4,
    sampler: str = "ddim",
    steps: int | None = 50,
    guidance: float = 1.0,
    frames: int | None = None,
    seed: int = 0,
    fps: int = 8,
) -> tuple[dict[str, float | None], str] | None:
    """Sample one row per prompt / class, write the sheet to `path` (.gif or .mp4) and return
    `mp_layers.video.sample_quality_report` of the samples (colour accuracy when every sample
    asked for a palette colour, shape accuracy when every one named a shape), or None for clips
    that are not RGB or grey."""
    from mp_layers.training import write_sample_sheet
    from mp_layers.video import sample_quality_report

    cond, colours, shapes = _rows(config, prompts, per_row)
    device = next(model.parameters()).device
    if isinstance(cond, torch.Tensor):
        cond = cond.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    videos = model.sample(
        cond,
        cond_scale=guidance,
        batch_size=len(colours),
        sampler=sampler,
        steps=steps,
        num_frames=frames,
        generator=generator,
    ).cpu()
    write_sample_sheet(videos, path, fps=fps, nrow=per_row)
    if videos.shape[1] not in (1, 3):
        return None
    return sample_quality_report(
        videos,
        labels=colours if min(colours) >= 0 else None,
        shapes=shapes if min(shapes) >= 0 else None,
    )


def _loss_fn(cond: str, num_classes: int | None) -> Any:
    def loss_fn(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        videos = batch["video"]
        if cond == "text":
            loss: torch.Tensor = model(videos, cond=list(batch["text"]))
        elif cond == "class":
            labels = batch["label"]
            if bool((labels < 0).any()):
                raise ValueError(
                    "--cond class: expected labelled data (MovingShapes), got label -1"
                )
            one_hot = torch.nn.functional.one_hot(labels, num_classes or 0).to(videos.dtype)
            loss = model(videos, cond=one_hot)
        else:
            loss = model(videos)
        return loss

    return loss_fn


def train(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`video-ddpm train`: returns a summary dict (also printed)."""
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
    num_classes = None
    if args.cond == "class":
        num_classes = args.num_classes if args.num_classes is not None else 4
    dataset = make_dataset(
        args.data,
        image_size=args.image_size,
        num_frames=args.frames,
        **({"num_videos": args.num_videos, "seed": args.seed} if synthetic else {}),
    )
    encoder = None
    cond_dim = num_classes
    if args.cond == "text":
        encoder = _make_text_encoder(args.text_encoder, use_cls=args.text_use_cls)
        cond_dim = encoder.dim  # reads the encoder's config only, not its weights
    torch.manual_seed(args.seed)
    net = Unet3D(
        dim=args.dim,
        cond_dim=cond_dim,
        dim_mults=_ints(args.dim_mults),
        channels=3,
        attn_heads=args.attn_heads,
        attn_dim_head=args.attn_dim_head,
        use_sparse_linear_attn=not args.no_linear_attn,
        norm=args.norm,
    )
    model = GaussianDiffusion(
        net,
        image_size=args.image_size,
        num_frames=args.frames,
        text_use_bert_cls=args.text_use_cls,
        timesteps=args.timesteps,
        loss_type=args.loss_type,
        beta_schedule=args.beta_schedule,
        objective=args.objective,
        cond_drop_prob=args.cond_drop_prob,
        text_encoder=encoder,
    )
    run_config: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "unet": net.config,
        "diffusion": {k: v for k, v in model.config.items() if k != "text_encoder"},
        "cond": args.cond,
        "text_encoder": args.text_encoder,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_config(out / CONFIG_FILE, run_config)

    config = trainer_config_from_args(
        args,
        ema_beta=args.ema_beta,
        ema_update_after_step=0,
        ema_update_every=1,
        progress_bar=not args.no_progress,
        sample_every=0,
    )
    warmup = max(args.warmup_steps, 1)
    trainer = Trainer(
        model=model,
        data=dataset,
        optimizer_factory=partial(torch.optim.Adam, lr=args.lr),
        config=config,
        loss_fn=_loss_fn(args.cond, num_classes),
        lr_lambda=lambda step: min(1.0, (step + 1) / warmup),
        collate_fn=collate_videos,
    )
    result, summary = timed_fit(trainer, args.resume)
    if not trainer.accelerator.is_main_process:
        return summary
    sampler = GaussianDiffusion(
        Unet3D.from_config(net.config), **run_config["diffusion"], text_encoder=encoder
    )  # the loaded encoder and its cache are reused
    assert result.checkpoint is not None
    load_model_weights(sampler, result.checkpoint, ema=True)
    sampler.to(trainer.accelerator.device).eval()
    start = time.perf_counter()
    report = sample_sheet(
        sampler,
        run_config,
        out / "samples.gif",
        prompts=args.prompts,
        per_row=args.num_per_row,
        sampler=args.sampler,
        steps=args.sample_steps,
        guidance=args.guidance,
        seed=args.seed,
    )
    summary.update(
        checkpoint=str(result.checkpoint),
        samples=str(out / "samples.gif"),
        loss_plot=str(out / "loss.png"),
        sample_seconds=round(time.perf_counter() - start, 1),
        final_loss=result.losses[-1] if result.losses else None,
    )
    print_fit(result, summary, out)
    print(
        f"samples: {out / 'samples.gif'} (one row per prompt/class), loss plot: {out / 'loss.png'}"
    )
    _print_report(report, summary)
    return summary


def _print_report(
    report: tuple[dict[str, float | None], str] | None, summary: dict[str, Any]
) -> None:
    """Print the quality line (and the colour accuracy) of a sample sheet into `summary`."""
    if report is None:
        return
    figures, line = report
    summary["quality"] = figures
    print(line)
    if figures.get("colour") is not None:
        summary["color_accuracy"] = figures["colour"]
        print(
            f"colour accuracy of the samples against their prompt's colour: {figures['colour']:.1%}"
        )


def _sample_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="video-ddpm sample", description="Sample a GIF/MP4 sheet from a trained model."
    )
    add = parser.add_argument
    add("--checkpoint", required=True, help="run, checkpoint or converted-model folder")
    add("--out", required=True, help="output .gif or .mp4: one row per prompt or class")
    add("--prompts", default=None, help="'|'-separated prompts (text models)")
    add("--num-per-row", type=int, default=4, help="samples per prompt or class")
    add("--sampler", default="ddim", choices=SAMPLERS)
    add("--sample-steps", type=int, default=None, help="sampler steps (ddim 50, ddpm all)")
    add("--guidance", type=float, default=3.0, help="classifier-free guidance weight")
    add("--frames", type=int, default=None, help="frames to generate (default: training frames)")
    add("--seed", type=int, default=0)
    add("--no-ema", action="store_true", help="raw weights instead of the EMA weights")
    add("--fps", type=int, default=8)
    return parser


def sample(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`video-ddpm sample`: returns a summary dict (also printed)."""
    from mp_layers.training import find_run_config, load_model_weights, resolve_checkpoint

    args = _sample_parser().parse_args(argv)
    checkpoint = resolve_checkpoint(args.checkpoint)
    _, config = find_run_config(checkpoint, CONFIG_FILE)
    model = model_from_config(config)
    load_model_weights(model, checkpoint, ema=not args.no_ema)
    model.eval()
    steps = args.sample_steps
    if steps is None and args.sampler == "ddim":
        steps = 50
    out = Path(args.out)
    report = sample_sheet(
        model,
        config,
        out,
        prompts=args.prompts,
        per_row=args.num_per_row,
        sampler=args.sampler,
        steps=steps,
        guidance=args.guidance,
        frames=args.frames,
        seed=args.seed,
        fps=args.fps,
    )
    print(f"wrote {out} from {checkpoint}")
    summary: dict[str, Any] = {"out": str(out), "checkpoint": str(checkpoint)}
    _print_report(report, summary)
    return summary


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
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": train, "sample": sample, "convert": _convert}
    if not argv or argv[0] not in commands:
        print(f"usage: video-ddpm {{{','.join(commands)}}} [options]  (-h for help)")
        return 2
    try:
        commands[argv[0]](argv[1:])
    except (ValueError, OSError) as error:
        print(f"video-ddpm {argv[0]}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
