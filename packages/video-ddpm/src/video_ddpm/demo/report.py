"""What a demo command prints, and the summary dict it returns."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from video_ddpm.demo.evaluation import Report

if TYPE_CHECKING:
    from mp_layers.training import FitResult

__all__ = ["print_quality", "report_sampling", "report_training"]


def print_quality(report: Report, summary: dict[str, Any]) -> None:
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


def report_training(
    result: FitResult,
    summary: dict[str, Any],
    out: Path,
    *,
    report: Report,
    sample_seconds: float,
) -> dict[str, Any]:
    """Complete `summary` (of `fit`) with the run's files and figures, print it, and return it."""
    from mp_layers.training import print_fit

    summary.update(
        checkpoint=str(result.checkpoint),
        samples=str(out / "samples.gif"),
        loss_plot=str(out / "loss.png"),
        sample_seconds=sample_seconds,
        final_loss=result.losses[-1] if result.losses else None,
    )
    print_fit(result, summary, out)
    print(
        f"samples: {out / 'samples.gif'} (one row per prompt/class), loss plot: {out / 'loss.png'}"
    )
    print_quality(report, summary)
    return summary


def report_sampling(out: Path, checkpoint: Path, report: Report) -> dict[str, Any]:
    """Print what `video-ddpm sample` wrote, and return its summary dict."""
    print(f"wrote {out} from {checkpoint}")
    summary: dict[str, Any] = {"out": str(out), "checkpoint": str(checkpoint)}
    print_quality(report, summary)
    return summary
