"""What a demo command prints, and the summary dict it returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from video_ddpm.demo.evaluation import Report

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
    summary: dict[str, Any], out: Path, *, report: Report, sample_seconds: float
) -> dict[str, Any]:
    """Complete `summary` (of `run_train_job`, printed by it) with the sample sheet of the run
    and its figures, print them, and return it."""
    summary.update(samples=str(out / "samples.gif"), sample_seconds=sample_seconds)
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
