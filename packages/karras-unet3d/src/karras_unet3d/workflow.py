"""What `karras-unet3d train | sample | ema` do, as importable functions: build the model and the
data of a run, fit it (through `mp_layers.training.run_train_job`), sample one row per class and
report the samples' quality, and reconstruct post-hoc EMA weights. The CLI (`cli.py`) only turns
flags into the settings these take.

A run folder holds `karras_unet3d.json` (network and diffusion configuration), `checkpoints/`,
`metrics.csv`, `loss.png` and `samples.gif` (one row per class).
"""

from __future__ import annotations

import math
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from karras_unet3d.diffusion import EDM2Diffusion, edm2_lr_lambda
from karras_unet3d.unet import KarrasUnet3D
from mp_layers.typecheck import typechecked

__all__ = [
    "CLASSES",
    "CONFIG_FILE",
    "build_model",
    "data_rms",
    "find_run_config",
    "report_samples",
    "report_training",
    "sample_per_class",
    "synthesize_ema",
    "train_job",
]

CONFIG_FILE = "karras_unet3d.json"

CLASSES = {"colour": 4, "colour-shape": 12}
"""What a synthetic run's class labels ask for, and how many classes that makes: the colour, or
the colour and the shape (`colour * 3 + shape`, which lets the report measure shape accuracy)."""


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # A unique temporary name: under several processes every rank writes the same file.
    from mp_layers.pretrained import write_config

    write_config(path, data)


@typechecked
def data_rms(dataset: Any, *, num_clips: int = 64) -> float:
    """The root mean square of the first `num_clips` clips of `dataset` mapped to [-1, 1]: the
    `sigma_data` EDM's preconditioning assumes (`c_skip`, `c_out` and the loss weight are derived
    from the data's second moment `E[y^2] = sigma_data^2`, EDM appendix B.6). Natural images give
    about 0.5 (EDM's default); MovingShapes, a small sprite on black, gives 1.0."""
    import itertools

    from torch.utils.data import IterableDataset

    from mp_layers.validation import check_int

    num_clips = check_int("num_clips", num_clips)
    if isinstance(dataset, IterableDataset):  # a stream (VideoShards): its first clips
        items = list(itertools.islice(iter(dataset), num_clips))
    else:
        items = [dataset[index] for index in range(min(len(dataset), num_clips))]
    if not items:
        raise ValueError("dataset: expected at least one clip, got an empty dataset")
    total, size = 0.0, 0
    for item in items:
        video = item["video"].to(torch.float64) * 2 - 1
        total += float(video.square().sum())
        size += video.numel()
    return math.sqrt(total / size)


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


def run_classes(config: dict[str, Any]) -> str | None:
    """A run config's `classes` (None: labels that are not MovingShapes colours, or none).
    Runs written before the key existed were colour-conditional when they had 4 classes."""
    if "classes" in config:
        classes: str | None = config["classes"]
        return classes
    return "colour" if config["net"].get("num_classes") == 4 else None


def class_labels(batch: dict[str, Any], classes: str | None) -> torch.Tensor:
    """A batch's class indices: `colour * 3 + shape` for `colour-shape`, else its `label`."""
    labels: torch.Tensor = batch["label"]
    if classes == "colour-shape":
        from mp_layers.video import SHAPE_NAMES

        labels = labels * len(SHAPE_NAMES) + batch["shape"]
    return labels


@typechecked
def report_samples(
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


@typechecked
def init_from(model: EDM2Diffusion, source: str) -> None:
    """Load the EMA weights of a run folder or checkpoint into `model` (`--init-from`); layers
    the source lacks (a frame-conditioning input added to a trained model) keep their initial
    values, whose zero gain leaves the model's output as it was."""
    from mp_layers.training import load_model_weights, resolve_checkpoint

    load_model_weights(
        model, resolve_checkpoint(source), ema=True, allow_missing=("net.frame_cond_",)
    )


@typechecked
def train_job(settings: dict[str, Any], trainer_config: Any) -> Any:
    """The `TrainJob` of a run: its data (`make_dataset(settings["data"], ...)`), a fresh model
    (`settings["net"]`, `settings["diffusion"]`; `sigma_data="auto"` measures the data's RMS;
    `settings["init_from"]`: a run or checkpoint to start from),
    the EDM2 loss on the class labels `settings["classes"]` asks for, Adam with EDM2's
    learning-rate schedule (`settings["optimizer"]`), and the run config `sample` rebuilds the
    model from. `trainer_config`: the run's `TrainerConfig`."""
    from mp_layers.training import TrainJob, held_out_split, make_dataset
    from mp_layers.video import collate_videos

    synthetic = settings["data"] == "synthetic"
    classes = settings["classes"]
    dataset = make_dataset(
        settings["data"],
        image_size=settings["net"]["image_size"],
        num_frames=settings["net"]["frames"],
        seed=settings["seed"],
        **({"num_videos": settings["num_videos"]} if synthetic else {}),
        **settings.get("data_options", {}),
    )
    torch.manual_seed(settings["seed"])
    net = KarrasUnet3D(**settings["net"])
    diffusion = dict(settings["diffusion"])
    if diffusion["sigma_data"] == "auto" and settings.get("init_from"):  # the source's own
        diffusion["sigma_data"] = find_run_config(settings["init_from"])[1]["diffusion"][
            "sigma_data"
        ]
    if diffusion["sigma_data"] == "auto":
        diffusion["sigma_data"] = data_rms(dataset)
    diffusion["sigma_data"] = round(diffusion["sigma_data"], 4)
    model = EDM2Diffusion(net, **diffusion)
    if settings.get("init_from"):
        init_from(model, settings["init_from"])
    num_classes = net.num_classes
    held_out, extra = None, {}
    if not synthetic:  # the user's videos: train on a part, report on the rest
        split = held_out_split(dataset)
        dataset, held_out = split.train, split.held_out
        extra = {"data": "videos", "held_out": split.description}

    def loss_fn(wrapped: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        labels = class_labels(batch, classes) if num_classes else None
        loss: torch.Tensor = wrapped(batch["video"], class_labels=labels)
        return loss

    opt = settings["optimizer"]
    return TrainJob(
        model=model,
        data=dataset,
        loss_fn=loss_fn,
        optimizer_factory=partial(torch.optim.Adam, lr=opt["lr"], betas=(0.9, 0.99), eps=1e-8),
        config=trainer_config,
        run_config={"net": net.config, "diffusion": model.config, "classes": classes, **extra},
        run_config_file=CONFIG_FILE,
        trainer_kwargs={
            "lr_lambda": edm2_lr_lambda(
                batch_size=opt["batch_size"],
                ref_lr=opt["lr"],
                ref_batches=opt["decay_steps"],
                rampup_images=opt["warmup_steps"] * opt["batch_size"],
            ),
            "collate_fn": collate_videos,
        },
        held_out=held_out,
    )


@typechecked
def report_training(
    trainer: Any,
    result: Any,
    summary: dict[str, Any],
    *,
    num_per_class: int,
    sample_steps: int,
    guidance: float,
    seed: int,
    held_out: Any = None,
    held_out_text: str = "",
) -> None:
    """After a run (main process): sample `num_per_class` clips per class with the EMA weights of
    its last checkpoint, write `samples.gif`, print their quality and add it to `summary`. On
    the user's videos (`held_out` given) the figures are `real_data.report_real_data`'s."""
    from mp_layers.training import load_model_weights

    out = trainer.out_dir
    _, config = find_run_config(out)
    sampler = build_model(config)
    load_model_weights(sampler, result.checkpoint, ema=True)
    sampler.to(trainer.accelerator.device)
    if trainer.config.compile:  # the sampler's network calls, as in training
        sampler.net = torch.compile(sampler.net, backend=trainer.config.compile_backend)  # type: ignore[assignment]
    start = time.perf_counter()
    if held_out is not None:
        from karras_unet3d.real_data import report_real_data
        from mp_layers.training import write_sample_sheet

        videos = report_real_data(
            trainer,
            summary,
            sampler,
            held_out,
            held_out_text=held_out_text,
            sample_steps=sample_steps,
            seed=seed,
        )
        write_sample_sheet(videos, out / "samples.gif")
        summary.update(
            samples=str(out / "samples.gif"), sample_seconds=round(time.perf_counter() - start, 1)
        )
        print(f"samples: {out / 'samples.gif'}, loss plot: {out / 'loss.png'}")
        return
    videos, labels = sample_per_class(
        sampler, num_per_class=num_per_class, num_steps=sample_steps, guidance=guidance, seed=seed
    )
    accuracy = report_samples(
        videos,
        labels,
        out / "samples.gif",
        num_per_class=num_per_class,
        classes=run_classes(config),
    )
    summary.update(
        samples=str(out / "samples.gif"), sample_seconds=round(time.perf_counter() - start, 1)
    )
    print(f"samples: {out / 'samples.gif'} (one row per class), loss plot: {out / 'loss.png'}")
    if accuracy is not None:
        summary["color_accuracy"] = accuracy
        print(f"class-colour accuracy of {len(labels)} samples: {accuracy:.1%}")
