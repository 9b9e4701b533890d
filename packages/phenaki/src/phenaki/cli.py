"""The `phenaki` command line (extra `phenaki[train]`).

`phenaki train-tokenizer` trains a `CViViT` on MovingShapes (`--data synthetic`, the default) or a
folder of videos with the shared `mp_layers.training.Trainer`: the autoencoder's optimizer, then
(with `--gan frame|video`) the discriminator's as a second `TrainingPhase`, with the gradient
penalty every `--gp-every` steps. Optionally images first (`--image-pretrain-steps`: one-frame
clips) or mixed image/video batches (`--image-fraction`: clips cut to their first frame through the
frame mask). At the end it writes, under `--out`:

- `recons.gif`: held-out clips, each original beside its reconstruction;
- `loss.png` and `metrics.csv` (the Trainer's), `checkpoints/`;
- `tokenizer/`: the (EMA) tokenizer, loadable with `CViViT.from_pretrained`;

and prints the held-out reconstruction PSNR, the palette-colour accuracy of the reconstructions
(MovingShapes) and the fraction of codebook entries the held-out clips use.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Subset

from phenaki.cvivit import CViViT

PERCEPTUAL_CHOICES = ("none", "vgg16")
GIF_PAIRS = 8  # held-out clips shown in recons.gif


def _train_parser() -> argparse.ArgumentParser:
    from mp_layers.training import add_train_arguments

    parser = argparse.ArgumentParser(
        prog="phenaki train-tokenizer",
        description="Train a C-ViViT video tokenizer (defaults: a ~8-minute CPU run on "
        "MovingShapes, 9 frames of 32x32).",
    )
    add_train_arguments(parser)
    parser.set_defaults(
        steps=4000,
        batch_size=8,
        lr=2e-3,
        out="runs/tokenizer",
        save_every=500,
        sample_every=0,
        max_time=450.0,
    )
    add = parser.add_argument
    add("--image-size", type=int, default=32, help="frame height and width")
    add("--frames", type=int, default=9, help="frames per clip (1 + k * temporal patch)")
    add("--patch-size", type=int, default=4, help="spatial patch size")
    add("--temporal-patch-size", type=int, default=2, help="frames per tubelet")
    add("--dim", type=int, default=64, help="token width")
    add("--spatial-depth", type=int, default=1, help="layers of each spatial transformer")
    add("--temporal-depth", type=int, default=1, help="layers of each temporal transformer")
    add("--heads", type=int, default=4, help="attention heads")
    add("--dim-head", type=int, default=16, help="width of an attention head")
    add("--codebook-size", type=int, default=1024, help="codes (a power of two with LFQ)")
    add("--quantizer", choices=("lfq", "vq"), default="lfq", help="LFQ or VectorQuantize")
    add("--entropy-loss-weight", type=float, default=0.02, help="LFQ entropy loss weight")
    add("--gan", choices=("none", "frame", "video"), default="none", help="discriminator")
    add("--gan-loss", choices=("hinge", "bce"), default="hinge", help="GAN loss")
    add("--discr-base-dim", type=int, default=8, help="discriminator base width")
    add("--discr-lr", type=float, default=None, help="discriminator learning rate (--lr)")
    add("--gp-every", type=int, default=4, help="gradient penalty every N discriminator steps")
    add(
        "--perceptual",
        default="none",
        help="perceptual network: 'none', 'vgg16' (torchvision ImageNet weights, extra "
        "phenaki[vgg]; must be cached offline) or a TorchScript file",
    )
    add("--perceptual-weight", type=float, default=1.0, help="perceptual loss weight")
    add("--image-pretrain-steps", type=int, default=0, help="first steps on single frames")
    add("--image-fraction", type=float, default=0.0, help="clips cut to one frame per batch")
    add("--warmup-steps", type=int, default=200, help="linear learning-rate warm-up")
    add("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0: off)")
    add("--ema-beta", type=float, default=0.99, help="EMA decay (0: no EMA)")
    add("--num-videos", type=int, default=4096, help="MovingShapes clips to train on")
    add("--num-held-out", type=int, default=64, help="held-out clips for the report")
    add("--no-progress", action="store_true", help="no progress bar")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.gan == "none" and args.perceptual != "none":
        raise ValueError("--perceptual: the perceptual loss comes with the GAN; expected --gan")
    if not 0.0 <= args.image_fraction <= 1.0:
        raise ValueError(f"--image-fraction: expected a value in [0, 1], got {args.image_fraction}")
    for name in ("image_pretrain_steps", "num_held_out", "warmup_steps"):
        if getattr(args, name) < 0:
            raise ValueError(
                f"--{name.replace('_', '-')}: expected >= 0, got {getattr(args, name)}"
            )
    if args.gp_every < 1:
        raise ValueError(f"--gp-every: expected >= 1, got {args.gp_every}")


def _perceptual_network(spec: str) -> torch.nn.Module | None:
    """`None` for the default VGG16 (loaded lazily by `PerceptualLoss`), or a TorchScript file."""
    if spec in ("none", "vgg16"):
        return None
    path = Path(spec)
    if not path.is_file():
        raise ValueError(
            f"--perceptual: expected one of {PERCEPTUAL_CHOICES} or a TorchScript file, got {spec}"
        )
    network: torch.nn.Module = torch.jit.load(str(path), map_location="cpu")
    return network


def build_tokenizer(args: argparse.Namespace) -> CViViT:
    """The `CViViT` the flags describe."""
    gan = args.gan != "none"
    lfq_kwargs = {"entropy_loss_weight": args.entropy_loss_weight}
    return CViViT(
        dim=args.dim,
        codebook_size=args.codebook_size,
        image_size=args.image_size,
        patch_size=args.patch_size,
        temporal_patch_size=args.temporal_patch_size,
        spatial_depth=args.spatial_depth,
        temporal_depth=args.temporal_depth,
        discr_base_dim=args.discr_base_dim,
        dim_head=args.dim_head,
        heads=args.heads,
        use_vgg_and_gan=gan,
        vgg=_perceptual_network(args.perceptual) if gan else None,
        use_hinge_loss=args.gan_loss == "hinge",
        lookup_free_quantization=args.quantizer == "lfq",
        lookup_free_quantization_kwargs=lfq_kwargs if args.quantizer == "lfq" else None,
        discriminator="video" if args.gan == "video" else "frame",
        perceptual_weight=args.perceptual_weight if args.perceptual != "none" else 0.0,
    )


class ClipInputs:
    """What a training step feeds the tokenizer: single frames during image pre-training, else
    the clips, with a frame mask cutting a random `image_fraction` of them to their first frame.

    The choice depends only on `(seed, step)`, so the autoencoder and discriminator phases of a
    step see the same inputs and a resumed run repeats them exactly."""

    def __init__(self, *, seed: int, image_pretrain_steps: int, image_fraction: float) -> None:
        self.seed = seed
        self.image_pretrain_steps = image_pretrain_steps
        self.image_fraction = image_fraction

    def __call__(self, video: Tensor, step: int) -> tuple[Tensor, Tensor | None]:
        if step < self.image_pretrain_steps:
            return video[:, :, 0], None
        if self.image_fraction <= 0 or video.shape[2] == 1:
            return video, None
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        images = torch.rand(video.shape[0], generator=generator) < self.image_fraction
        mask = torch.ones(video.shape[0], video.shape[2], dtype=torch.bool)
        mask[images, 1:] = False
        return video, mask.to(video.device)


def _datasets(args: argparse.Namespace) -> tuple[Any, Any]:
    """(training set, held-out set): MovingShapes with another seed, or a folder's last clips."""
    from mp_layers.training import make_dataset

    if args.data == "synthetic":
        train = make_dataset(
            "synthetic",
            image_size=args.image_size,
            num_frames=args.frames,
            num_videos=args.num_videos,
            seed=args.seed,
        )
        held_out = make_dataset(
            "synthetic",
            image_size=args.image_size,
            num_frames=args.frames,
            num_videos=max(args.num_held_out, 1),
            seed=args.seed + 1_000,
        )
        return train, held_out
    folder = make_dataset(args.data, image_size=args.image_size, num_frames=args.frames)
    held = min(args.num_held_out, len(folder) // 10)
    if len(folder) - held < 1:
        raise ValueError(f"--data: expected at least one clip to train on, got {len(folder)}")
    return Subset(folder, range(len(folder) - held)), Subset(
        folder, range(len(folder) - held, len(folder))
    )


@torch.no_grad()
def evaluate_reconstructions(
    tokenizer: CViViT, dataset: Any, *, batch_size: int = 16
) -> dict[str, Any]:
    """Reconstruct every clip of `dataset` (dict items with `video`, optionally `label`).

    Returns `psnr` (dB, mean over clips of `10 log10(1 / MSE)` with the reconstruction clamped to
    [0, 1]), `color_accuracy` (palette colour of the reconstructions against the labels, or None),
    `codebook_usage` (distinct codes used / codebook size), `originals` and `recons` (the first
    `GIF_PAIRS` clips)."""
    from mp_layers.video import palette_color_accuracy

    device = next(tokenizer.parameters()).device
    psnrs, codes, recons, labels, originals = [], [], [], [], []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        video = torch.stack([item["video"] for item in items]).to(device)
        ids = tokenizer(video, return_only_codebook_ids=True)
        recon = tokenizer.decode_from_codebook_indices(ids).clamp(0, 1)
        mse = (recon - video).pow(2).flatten(1).mean(dim=1).clamp_min(1e-10)
        psnrs.append(10 * torch.log10(1 / mse))
        codes.append(ids.flatten())
        recons.append(recon.cpu())
        originals.append(video.cpu())
        if all("label" in item for item in items):
            labels += [int(item["label"]) for item in items]
    recon_all = torch.cat(recons)
    accuracy = palette_color_accuracy(recon_all, labels) if len(labels) == len(recon_all) else None
    return {
        "psnr": float(torch.cat(psnrs).mean()),
        "color_accuracy": accuracy,
        "codebook_usage": torch.cat(codes).unique().numel() / tokenizer.codebook_size,
        "originals": torch.cat(originals)[:GIF_PAIRS],
        "recons": recon_all[:GIF_PAIRS],
    }


def train_tokenizer(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`phenaki train-tokenizer`: returns a summary dict (also printed)."""
    from mp_layers.training import (
        Trainer,
        TrainingPhase,
        load_model_weights,
        parse_train_args,
        print_fit,
        timed_fit,
        trainer_config_from_args,
        write_sample_sheet,
    )
    from mp_layers.video import collate_videos

    args = parse_train_args(argv, parser=_train_parser())
    _check_args(args)
    if args.max_time is not None and args.max_time <= 0:
        args.max_time = None  # --max-time 0: no time limit
    out = Path(args.out)
    train_set, held_out = _datasets(args)
    torch.manual_seed(args.seed)
    model = build_tokenizer(args)
    inputs = ClipInputs(
        seed=args.seed,
        image_pretrain_steps=args.image_pretrain_steps,
        image_fraction=args.image_fraction,
    )
    trainer: Trainer | None = None

    def autoencoder_loss(net: torch.nn.Module, batch: dict[str, Any]) -> Tensor:
        assert trainer is not None
        video, mask = inputs(batch["video"], trainer.step)
        loss: Tensor = net(video, mask=mask)
        return loss

    def discriminator_loss(net: torch.nn.Module, batch: dict[str, Any], step: int) -> Tensor:
        video, mask = inputs(batch["video"], step)
        penalty = step % args.gp_every == 0
        loss: Tensor = net(video, mask=mask, return_discr_loss=True, apply_grad_penalty=penalty)
        return loss

    phases = []
    if model.discr is not None:
        phases.append(
            TrainingPhase(
                name="discriminator",
                parameters=lambda bare: [
                    p for n, p in bare.named_parameters() if n.startswith("discr.")
                ],
                optimizer_factory=partial(
                    torch.optim.Adam, lr=args.discr_lr or args.lr, betas=(0.5, 0.9)
                ),
                loss_fn=discriminator_loss,
                max_grad_norm=args.max_grad_norm or None,
            )
        )
    config = trainer_config_from_args(
        args,
        ema_beta=args.ema_beta or None,
        ema_update_after_step=0,
        ema_update_every=1,
        max_grad_norm=args.max_grad_norm or None,
        progress_bar=not args.no_progress,
        sample_every=0,
    )
    warmup = max(args.warmup_steps, 1)
    trainer = Trainer(
        model=model,
        data=train_set,
        optimizer_factory=partial(torch.optim.Adam, lr=args.lr, betas=(0.9, 0.99)),
        parameters=lambda bare: [
            p for n, p in bare.named_parameters() if not n.startswith("discr.")
        ],
        phases=phases,
        config=config,
        loss_fn=autoencoder_loss,
        lr_lambda=lambda step: min(1.0, (step + 1) / warmup),
        collate_fn=collate_videos,
    )
    result, summary = timed_fit(trainer, args.resume)
    if not trainer.accelerator.is_main_process:
        return summary
    assert result.checkpoint is not None
    tokenizer = build_tokenizer(args)
    load_model_weights(tokenizer, result.checkpoint, ema=True)
    tokenizer.save_pretrained(out / "tokenizer")
    tokenizer = tokenizer.copy_for_eval().to(trainer.accelerator.device)
    start = time.perf_counter()
    report = evaluate_reconstructions(tokenizer, held_out)
    pairs = torch.stack([report.pop("originals"), report.pop("recons")], dim=1).flatten(0, 1)
    write_sample_sheet(pairs, out / "recons.gif", nrow=4)
    summary.update(
        checkpoint=str(result.checkpoint),
        tokenizer=str(out / "tokenizer"),
        recons=str(out / "recons.gif"),
        loss_plot=str(out / "loss.png"),
        eval_seconds=round(time.perf_counter() - start, 1),
        **report,
    )
    print_fit(result, summary, out)
    print(f"tokenizer: {out / 'tokenizer'} (CViViT.from_pretrained), loss plot: {out / 'loss.png'}")
    print(
        f"reconstructions: {out / 'recons.gif'} (each held-out original beside its reconstruction)"
    )
    colour = report["color_accuracy"]
    print(
        f"held-out ({len(held_out)} clips): PSNR {report['psnr']:.2f} dB, "
        + (f"palette colour {colour:.1%}, " if colour is not None else "")
        + f"codebook use {report['codebook_usage']:.1%} of {args.codebook_size}"
    )
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `phenaki` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from phenaki.cli_phenaki import sample, story, train

    commands = {
        "train-tokenizer": train_tokenizer,
        "train": train,
        "sample": sample,
        "story": story,
    }
    if not argv or argv[0] not in commands:
        print(f"usage: phenaki {{{','.join(commands)}}} [options]  (-h for help)")
        return 2
    try:
        commands[argv[0]](argv[1:])
    except (ValueError, OSError) as error:
        print(f"phenaki {argv[0]}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
