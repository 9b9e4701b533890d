"""Per-step metrics: buffered rows appended to a CSV, and the loss curve drawn as a PNG."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

FIELDS = ("step", "loss", "lr", "grad_norm", "skipped", "time_s")


class MetricsLog:
    """Appends rows `FIELDS` to `path`; rows are buffered and written on `flush()`.

    `truncate(step)` drops rows after `step` (a resumed run rewrites what a crashed run logged past
    its last checkpoint), atomically via a temporary file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._rows: list[dict[str, object]] = []

    def append(self, row: dict[str, object]) -> None:
        self._rows.append(row)

    def flush(self) -> None:
        if not self._rows:
            return
        new_file = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            if new_file:
                writer.writeheader()
            writer.writerows(self._rows)
        self._rows.clear()

    def truncate(self, step: int) -> None:
        self._rows.clear()
        if not self.path.exists():
            return
        kept = [row for row in read_metrics(self.path) if int(float(row["step"])) <= step]
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, self.path)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a metrics CSV as dicts of strings."""
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def plot_loss(csv_path: str | os.PathLike[str], png_path: str | os.PathLike[str]) -> None:
    """Draw loss against step from a metrics CSV into a PNG (skipped steps are left out).

    Uses matplotlib's object API with the Agg canvas, so no global backend is switched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps, losses = [], []
    for row in read_metrics(csv_path):
        loss = float(row["loss"])
        if math.isfinite(loss):
            steps.append(int(float(row["step"])))
            losses.append(loss)
    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(steps, losses, linewidth=1)
    if losses and min(losses) > 0:
        axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    tmp = Path(png_path).with_suffix(".tmp.png")
    figure.savefig(tmp)
    os.replace(tmp, png_path)
