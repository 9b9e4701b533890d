"""Per-step metrics: buffered rows appended to a CSV, and the loss curves drawn as a PNG."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

from mp_layers.typecheck import typechecked

FIELDS = ("step", "loss", "lr", "grad_norm", "skipped", "time_s")


class MetricsLog:
    """Appends rows of `FIELDS` (then `extra_fields`, e.g. a `TrainingPhase`'s `loss_{name}`) to
    `path`; rows are buffered and written on `flush()`. Without `extra_fields` the file has
    exactly the columns `FIELDS`.

    `truncate(step)` drops rows after `step` (a resumed run rewrites what a crashed run logged past
    its last checkpoint), atomically via a temporary file.
    """

    @typechecked
    def __init__(self, path: str | os.PathLike[str], extra_fields: Sequence[str] = ()) -> None:
        if isinstance(extra_fields, str):  # a str is a sequence of str: the hint lets it pass
            raise TypeError("extra_fields: expected a sequence of column names, got a str")
        extra = tuple(extra_fields)
        taken = set(FIELDS)
        for name in extra:
            if not isinstance(name, str) or not name or name in taken:
                raise ValueError(
                    f"extra_fields: expected distinct non-empty names other than {FIELDS}, "
                    f"got {extra}"
                )
            taken.add(name)
        self.path = Path(path)
        self.fields: tuple[str, ...] = FIELDS + extra
        self._rows: list[dict[str, object]] = []

    def append(self, row: dict[str, object]) -> None:
        self._rows.append(row)

    def flush(self) -> None:
        if not self._rows:
            return
        new_file = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fields)
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
            writer = csv.DictWriter(handle, fieldnames=self.fields)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, self.path)


@typechecked
def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a metrics CSV as dicts of strings."""
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


@typechecked
def plot_loss(csv_path: str | os.PathLike[str], png_path: str | os.PathLike[str]) -> None:
    """Draw loss against step from a metrics CSV into a PNG (skipped steps are left out), with
    one more line per `loss_{name}` column (a `TrainingPhase`; its empty cells are left out).

    Uses matplotlib's object API with the Agg canvas, so no global backend is switched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = read_metrics(csv_path)
    columns = ["loss"] + [name for name in (rows[0] if rows else {}) if name.startswith("loss_")]
    series: dict[str, tuple[list[int], list[float]]] = {name: ([], []) for name in columns}
    for row in rows:
        for name, (steps, losses) in series.items():
            loss = float(row[name]) if row.get(name) else math.nan
            if math.isfinite(loss):
                steps.append(int(float(row["step"])))
                losses.append(loss)
    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, (steps, losses) in series.items():
        axes.plot(steps, losses, linewidth=1, label=name)
    values = [value for _, losses in series.values() for value in losses]
    if values and min(values) > 0:
        axes.set_yscale("log")
    if len(series) > 1:
        axes.legend()
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    tmp = Path(png_path).with_suffix(".tmp.png")
    figure.savefig(tmp)
    os.replace(tmp, png_path)
