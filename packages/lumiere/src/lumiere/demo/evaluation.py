"""Evaluation of the `lumiere-video` demo: samples, colour accuracy, temporal coherence, loss plot.

`evaluate` samples the inflated model (`samples.gif`, one row per colour) and the base model frame
by frame from the same noise (`base_samples.gif`), and measures colour accuracy and temporal
coherence (mean centroid displacement per frame) of both and of real `MovingShapes` clips;
`plot_stages` draws the loss of both stages (`loss.png`).

On the user's videos those MovingShapes figures mean nothing; `evaluate_real` instead samples
both models conditioned like held-out real clips and compares them with those clips
(`mp_layers.training.report_against_real`: motion, colour histograms, a comparison sheet).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from einops import rearrange, repeat
from torch import Tensor, nn

from lumiere.demo.diffusion import (
    class_labels,
    ddim_sample,
    sample_frames_independently,
    video_noise,
)
from lumiere.demo.models import NUM_COLOURS

__all__ = [
    "REAL_CONDITIONING",
    "evaluate",
    "evaluate_real",
    "frame_colour_accuracy",
    "plot_stages",
    "sample_inflated",
]

# How samples are conditioned on real data: the base model is class-conditional (no text input).
REAL_CONDITIONING = (
    "the dominant palette colour of each held-out clip (the class the clips were trained with; "
    "the model has no text input, captions are not used)"
)


def frame_colour_accuracy(videos: Tensor, labels: Tensor) -> float:
    """`palette_color_accuracy` of every frame of `videos (b, 3, t, h, w)` as a 1-frame clip."""
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


class _ReportTo:
    """What `report_against_real` needs of a trainer, with the sheets written to `out_dir`
    instead of the trainer's folder (stage 1 trains in `OUT/base-run/`)."""

    def __init__(self, trainer: Any, out_dir: Path) -> None:
        self.out_dir, self.log, self.log_videos = out_dir, trainer.log, trainer.log_videos


def evaluate_real(
    trainer: Any,
    wrapper: nn.Module | None,
    base: nn.Module,
    scheduler: Any,
    held_out: dict[str, Any],
    out: Path,
    *,
    steps: int,
    seed: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Samples against held-out real clips (`held_out`: `mp_layers.training.held_out_clips`,
    `video (n, 3, t, h, w)` in [0, 1]): `n` clips from the base model frame by frame
    (`base_samples.gif`) and, when `wrapper` is given, from the inflated model
    (`samples.gif`), from the same noise, each conditioned on its held-out clip's dominant
    colour (`REAL_CONDITIONING`). Each is compared with the real clips by
    `mp_layers.training.report_against_real` (printed, logged to `trainer`'s tracker, sheets
    `OUT/base_samples_vs_real.gif|.mp4` and `OUT/samples_vs_real.gif|.mp4`). Returns the
    figures: `num_samples`, `frames`, `conditioning`, `base_samples_vs_real`,
    `samples_vs_real` (as `report_against_real` names them) and `sample_seconds`."""
    from lumiere.demo.training import colour_labels
    from mp_layers.training import report_against_real, write_sample_sheet

    start = time.perf_counter()
    real = held_out["video"].float().cpu()
    count, _, frames, height, width = real.shape
    device = next(base.parameters()).device
    if height != width:
        raise ValueError(f"held-out clips: expected square frames, got {height}x{width}")
    labels = colour_labels({**held_out, "video": real}).to(device)
    noise = video_noise(count, frames, height, seed=seed, device=device)
    figures: dict[str, Any] = {
        "num_samples": count,
        "frames": frames,
        "conditioning": REAL_CONDITIONING,
    }
    print(f"samples conditioned on {REAL_CONDITIONING}")
    target = _ReportTo(trainer, out)
    with _bar(steps, "sampling (base, frame by frame)", not progress) as bar:
        base_videos = sample_frames_independently(
            base.eval(), noise, labels, scheduler, steps=steps, progress=lambda _: bar.update(1)
        ).cpu()
    write_sample_sheet(base_videos, out / "base_samples.gif")
    report_against_real(
        target, figures, base_videos, real, name="base_samples", what="base model, frame by frame"
    )
    if wrapper is not None:
        with _bar(steps, "sampling (inflated)", not progress) as bar:
            videos = ddim_sample(
                wrapper.eval(),
                noise,
                labels,
                scheduler,
                steps=steps,
                progress=lambda _: bar.update(1),
            ).cpu()
        write_sample_sheet(videos, out / "samples.gif")
        report_against_real(target, figures, videos, real, name="samples", what="inflated model")
    figures["sample_seconds"] = round(time.perf_counter() - start, 1)
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
