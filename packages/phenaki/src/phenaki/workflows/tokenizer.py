"""Training a C-ViViT tokenizer (`phenaki train-tokenizer`): build, data, fit, evaluate, report.

The tokenizer trains on MovingShapes (`data="synthetic"`, the default) or a folder of videos with
the shared `mp_layers.training.Trainer`: the autoencoder's optimizer, then (with `gan="frame"` or
`"video"`) the discriminator's as a second `TrainingPhase`, with the gradient penalty every
`gp_every` steps. Optionally images first (`image_pretrain_steps`: one-frame clips) or mixed
image/video batches (`image_fraction`: clips cut to their first frame through the frame mask). At
the end it writes, under `out`:

- `recons.gif`: held-out clips, each original beside its reconstruction;
- `loss.png` and `metrics.csv` (the Trainer's), `checkpoints/`;
- `tokenizer/`: the (EMA) tokenizer, loadable with `CViViT.from_pretrained`;

and prints the held-out reconstruction PSNR, the palette-colour accuracy of the reconstructions
(MovingShapes) and the fraction of codebook entries the held-out clips use.

On real data (a folder of videos or tar shards) the held-out clips come from
`mp_layers.training.held_out_split` (whole videos for folders of 8 or more videos, else the end of
every video in time, so even a folder of one video trains and evaluates); the run reports the
held-out reconstruction PSNR and SSIM (`mp_layers.video.psnr` / `ssim`) and codebook use, and
`report_against_real` of the reconstructions against their originals (motion, colour histogram
distance, `OUT/reconstructions_vs_real.gif` and `.mp4`); no MovingShapes figures. Every figure goes
to `OUT/report.json` and, with `report_to`, to the experiment tracker (`OUT/tracking`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from mp_layers.flags import DataFlags
from mp_layers.typecheck import typechecked
from phenaki.cvivit import CViViT

__all__ = [
    "GIF_PAIRS",
    "PERCEPTUAL_CHOICES",
    "ClipInputs",
    "TokenizerConfig",
    "build_tokenizer",
    "check_tokenizer_config",
    "evaluate_real_reconstructions",
    "evaluate_reconstructions",
    "fit_tokenizer",
    "real_data_split",
    "report_tokenizer",
    "tokenizer_datasets",
    "train_tokenizer_run",
]

PERCEPTUAL_CHOICES = ("none", "vgg16")
GIF_PAIRS = 8  # held-out clips shown in recons.gif


@typechecked
@dataclass(frozen=True)
class TokenizerConfig(DataFlags):
    """What a tokenizer run does; the defaults are `phenaki train-tokenizer`'s (a ~8-minute CPU
    run on MovingShapes, 9 frames of 32x32). Each field is the flag of the same name (the data
    flags come from `DataFlags`)."""

    # the run (the shared training flags)
    data: str = "synthetic"
    out: str = "runs/tokenizer"
    steps: int = 4000
    batch_size: int = 8
    lr: float = 2e-3
    resume: str | None = None
    mixed_precision: str = "no"
    seed: int = 0
    grad_accum_steps: int = 1
    save_every: int = 500
    max_time: float | None = 450.0  # seconds; 0 or less: no limit
    distributed: str = "ddp"
    compile: bool = False
    report_to: str = "none"
    progress: bool = True
    # the tokenizer
    image_size: int = 32
    frames: int = 9
    patch_size: int = 4
    temporal_patch_size: int = 2
    dim: int = 64
    spatial_depth: int = 1
    temporal_depth: int = 1
    heads: int = 4
    dim_head: int = 16
    codebook_size: int = 1024
    quantizer: Literal["lfq", "vq"] = "lfq"
    entropy_loss_weight: float = 0.02
    gan: Literal["none", "frame", "video"] = "none"
    gan_loss: Literal["hinge", "bce"] = "hinge"
    discr_base_dim: int = 8
    perceptual: str = "none"
    perceptual_weight: float = 1.0
    # the optimisation and the data
    discr_lr: float | None = None
    gp_every: int = 4
    image_pretrain_steps: int = 0
    image_fraction: float = 0.0
    warmup_steps: int = 200
    max_grad_norm: float = 1.0
    ema_beta: float = 0.99
    num_videos: int = 4096
    num_held_out: int = 64


def check_tokenizer_config(config: TokenizerConfig) -> None:
    """The checks of a run's options that the tokenizer's constructor does not make."""
    if config.gan == "none" and config.perceptual != "none":
        raise ValueError("--perceptual: the perceptual loss comes with the GAN; expected --gan")
    if not 0.0 <= config.image_fraction <= 1.0:
        raise ValueError(
            f"--image-fraction: expected a value in [0, 1], got {config.image_fraction}"
        )
    for name in ("image_pretrain_steps", "num_held_out", "warmup_steps"):
        if getattr(config, name) < 0:
            raise ValueError(
                f"--{name.replace('_', '-')}: expected >= 0, got {getattr(config, name)}"
            )
    if config.gp_every < 1:
        raise ValueError(f"--gp-every: expected >= 1, got {config.gp_every}")


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


def build_tokenizer(config: TokenizerConfig) -> CViViT:
    """The `CViViT` the config describes."""
    gan = config.gan != "none"
    lfq_kwargs = {"entropy_loss_weight": config.entropy_loss_weight}
    return CViViT(
        dim=config.dim,
        codebook_size=config.codebook_size,
        image_size=config.image_size,
        patch_size=config.patch_size,
        temporal_patch_size=config.temporal_patch_size,
        spatial_depth=config.spatial_depth,
        temporal_depth=config.temporal_depth,
        discr_base_dim=config.discr_base_dim,
        dim_head=config.dim_head,
        heads=config.heads,
        use_vgg_and_gan=gan,
        vgg=_perceptual_network(config.perceptual) if gan else None,
        use_hinge_loss=config.gan_loss == "hinge",
        lookup_free_quantization=config.quantizer == "lfq",
        lookup_free_quantization_kwargs=lfq_kwargs if config.quantizer == "lfq" else None,
        discriminator="video" if config.gan == "video" else "frame",
        perceptual_weight=config.perceptual_weight if config.perceptual != "none" else 0.0,
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


def tokenizer_datasets(config: TokenizerConfig) -> tuple[Any, Any]:
    """(training set, held-out set): MovingShapes with another seed, or the two parts of
    `mp_layers.training.held_out_split` of a folder or shard set (never empty)."""
    if config.data == "synthetic":
        from mp_layers.training import make_dataset

        train = make_dataset(
            "synthetic",
            image_size=config.image_size,
            num_frames=config.frames,
            num_videos=config.num_videos,
            seed=config.seed,
        )
        held_out = make_dataset(
            "synthetic",
            image_size=config.image_size,
            num_frames=config.frames,
            num_videos=max(config.num_held_out, 1),
            seed=config.seed + 1_000,
        )
        return train, held_out
    split = real_data_split(config)
    return split.train, split.held_out


def real_data_split(config: TokenizerConfig) -> Any:
    """`mp_layers.training.held_out_split` of the folder or shards `config.data` (at the
    tokenizer's size and frame count; `max_held_out` is `num_held_out`, at least 1)."""
    from mp_layers.training import data_options, held_out_split, make_dataset

    data = make_dataset(
        config.data,
        image_size=config.image_size,
        num_frames=config.frames,
        seed=config.seed,
        **data_options(config),
    )
    return held_out_split(data, max_held_out=max(config.num_held_out, 1))


def _trainer_config(config: TokenizerConfig) -> Any:
    from mp_layers.training import TrainerConfig, num_workers_from_args

    max_time = config.max_time
    return TrainerConfig(
        out_dir=config.out,
        num_workers=num_workers_from_args(config),
        steps=config.steps,
        batch_size=config.batch_size,
        mixed_precision=config.mixed_precision,
        seed=config.seed,
        grad_accum_steps=config.grad_accum_steps,
        save_every=config.save_every,
        sample_every=0,
        max_time_s=None if max_time is not None and max_time <= 0 else max_time,
        distributed=config.distributed,
        compile=config.compile,
        report_to=config.report_to,
        ema_beta=config.ema_beta or None,
        ema_update_after_step=0,
        ema_update_every=1,
        max_grad_norm=config.max_grad_norm or None,
        progress_bar=config.progress,
    )


def fit_tokenizer(
    config: TokenizerConfig, model: CViViT, train_set: Any
) -> tuple[Any, Any, dict[str, Any]]:
    """Train `model` on `train_set`: returns the `Trainer`, its `FitResult` and the fit summary."""
    from mp_layers.training import Trainer, TrainingPhase, timed_fit
    from mp_layers.video import collate_videos

    inputs = ClipInputs(
        seed=config.seed,
        image_pretrain_steps=config.image_pretrain_steps,
        image_fraction=config.image_fraction,
    )
    trainer: Trainer | None = None

    def autoencoder_loss(net: torch.nn.Module, batch: dict[str, Any]) -> Tensor:
        assert trainer is not None
        video, mask = inputs(batch["video"], trainer.step)
        loss: Tensor = net(video, mask=mask)
        return loss

    def discriminator_loss(net: torch.nn.Module, batch: dict[str, Any], step: int) -> Tensor:
        video, mask = inputs(batch["video"], step)
        penalty = step % config.gp_every == 0
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
                    torch.optim.Adam, lr=config.discr_lr or config.lr, betas=(0.5, 0.9)
                ),
                loss_fn=discriminator_loss,
                max_grad_norm=config.max_grad_norm or None,
            )
        )
    trainer_config = _trainer_config(config)
    warmup = max(config.warmup_steps, 1)
    trainer = Trainer(
        model=model,
        data=train_set,
        optimizer_factory=partial(torch.optim.Adam, lr=config.lr, betas=(0.9, 0.99)),
        parameters=lambda bare: [
            p for n, p in bare.named_parameters() if not n.startswith("discr.")
        ],
        phases=phases,
        config=trainer_config,
        loss_fn=autoencoder_loss,
        lr_lambda=lambda step: min(1.0, (step + 1) / warmup),
        collate_fn=collate_videos,
    )
    result, summary = timed_fit(trainer, config.resume)
    return trainer, result, summary


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


@torch.no_grad()
def evaluate_real_reconstructions(
    tokenizer: CViViT, clips: Tensor, *, batch_size: int = 16
) -> dict[str, Any]:
    """Reconstruct held-out real `clips` `(n, c, f, h, w)` in [0, 1].

    Returns `psnr` (dB, `mp_layers.video.psnr` averaged over clips), `ssim`
    (`mp_layers.video.ssim` averaged over clips), `codebook_usage` (distinct codes used /
    codebook size) and `recons` (every reconstruction, clamped to [0, 1], on the CPU)."""
    from mp_layers.video import psnr, ssim

    device = next(tokenizer.parameters()).device
    codes, recons = [], []
    for start in range(0, clips.shape[0], batch_size):
        video = clips[start : start + batch_size].to(device)
        ids = tokenizer(video, return_only_codebook_ids=True)
        recons.append(tokenizer.decode_from_codebook_indices(ids).clamp(0, 1).float().cpu())
        codes.append(ids.flatten())
    recon_all = torch.cat(recons)
    originals = clips.float().cpu()
    return {
        "psnr": float(psnr(originals, recon_all).mean()),
        "ssim": float(ssim(originals, recon_all).mean()),
        "codebook_usage": torch.cat(codes).unique().numel() / tokenizer.codebook_size,
        "recons": recon_all,
    }


def report_tokenizer(
    config: TokenizerConfig,
    result: Any,
    summary: dict[str, Any],
    *,
    held_out: int,
    trainer: Any = None,
    real: tuple[Tensor, Tensor] | None = None,
) -> None:
    """Print what the run did and wrote, and the figures on the `held_out` clips (in `summary`:
    `psnr`, `codebook_usage`, and `color_accuracy` on MovingShapes or `ssim` on real data);
    with `real = (reconstructions, originals)` and the run's `trainer`, add their
    `report_against_real` (its figures added to `summary`, printed, the sheets written, logged);
    write `summary` to `report.json` (`mp_layers.training.write_report`)."""
    from mp_layers.training import print_fit, report_against_real, write_report

    out = Path(config.out)
    print_fit(result, summary, out)
    print(f"tokenizer: {out / 'tokenizer'} (CViViT.from_pretrained), loss plot: {out / 'loss.png'}")
    print(
        f"reconstructions: {out / 'recons.gif'} (each held-out original beside its reconstruction)"
    )
    colour = summary.get("color_accuracy")
    similarity = summary.get("ssim")
    split = f"; {summary['held_out_split']}" if "held_out_split" in summary else ""
    print(
        f"held-out ({held_out} clips{split}): PSNR {summary['psnr']:.2f} dB, "
        + (f"SSIM {similarity:.3f}, " if similarity is not None else "")
        + (f"palette colour {colour:.1%}, " if colour is not None else "")
        + f"codebook use {summary['codebook_usage']:.1%} of {config.codebook_size}"
    )
    if real is not None:
        if trainer is None:
            raise ValueError("report_tokenizer: `real` figures need the run's trainer")
        recons, originals = real
        report_against_real(
            trainer, summary, recons, originals, name="reconstructions", what="reconstructions"
        )
    write_report(out, summary)


@typechecked
def train_tokenizer_run(config: TokenizerConfig) -> dict[str, Any]:
    """A whole tokenizer run (see the module docstring): returns its summary (also printed and
    written to `report.json`)."""
    check_tokenizer_config(config)
    synthetic = config.data == "synthetic"
    if synthetic:
        train_set, held_out = tokenizer_datasets(config)
        split = None
    else:
        split = real_data_split(config)
        train_set, held_out = split.train, split.held_out
    torch.manual_seed(config.seed)
    model = build_tokenizer(config)
    trainer, result, summary = fit_tokenizer(config, model, train_set)
    try:
        if trainer.accelerator.is_main_process:
            _evaluate_and_report(config, trainer, result, summary, held_out, split)
    finally:
        trainer.end_tracking()
    return summary


def _evaluate_and_report(
    config: TokenizerConfig,
    trainer: Any,
    result: Any,
    summary: dict[str, Any],
    held_out: Any,
    split: Any,
) -> None:
    """Save the (EMA) tokenizer, reconstruct the held-out clips, extend `summary` with the
    figures (MovingShapes: `evaluate_reconstructions`; real data with its `split`:
    `evaluate_real_reconstructions` and `report_against_real`), log them and report."""
    from mp_layers.training import held_out_clips, load_model_weights, write_sample_sheet

    out = Path(config.out)
    assert result.checkpoint is not None
    tokenizer = build_tokenizer(config)
    load_model_weights(tokenizer, result.checkpoint, ema=True)
    tokenizer.save_pretrained(out / "tokenizer")
    tokenizer = tokenizer.copy_for_eval().to(trainer.accelerator.device)
    start = time.perf_counter()
    if split is None:
        report = evaluate_reconstructions(tokenizer, held_out)
        originals, recons = report.pop("originals"), report.pop("recons")
        count = len(held_out)
    else:
        originals = held_out_clips(held_out, max(config.num_held_out, 1))["video"]
        report = evaluate_real_reconstructions(tokenizer, originals)
        recons = report.pop("recons")
        count = originals.shape[0]
    pairs = torch.stack([originals[:GIF_PAIRS], recons[:GIF_PAIRS]], dim=1).flatten(0, 1)
    write_sample_sheet(pairs, out / "recons.gif", nrow=4)
    summary.update(
        checkpoint=str(result.checkpoint),
        tokenizer=str(out / "tokenizer"),
        recons=str(out / "recons.gif"),
        loss_plot=str(out / "loss.png"),
        eval_seconds=round(time.perf_counter() - start, 1),
        **report,
    )
    names = ("psnr", "codebook_usage") + (("color_accuracy",) if split is None else ("ssim",))
    trainer.log({f"held_out/{k}": float(report[k]) for k in names if report[k] is not None})
    if split is not None:
        summary.update(held_out_split=split.description, held_out_clips=count)
    report_tokenizer(
        config,
        result,
        summary,
        held_out=count,
        trainer=trainer,
        real=None if split is None else (recons, originals),
    )
