"""What a run prints: the machine/torch/config header, the markdown table, spreads; its JSON."""

from __future__ import annotations

import json
import platform
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchharness.spec import Column

if TYPE_CHECKING:
    from benchharness.run import Run

# a column's figures: median step times, peak RSS, or (on a CUDA device) peak CUDA allocation
TIME, RSS, CUDA = "time", "rss", "cuda"


def cpu_name() -> str:
    """The CPU's model name (lscpu's "Model name"), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ours(run: Run) -> str:
    return next(side.name for side in run.sides if not side.reference)


def _reference(run: Run) -> str | None:
    return next((side.name for side in run.sides if side.reference), None)


def _columns(run: Run) -> list[tuple[Column, str]]:
    """The spec's columns, each peak-memory column followed by its CUDA one where measured."""
    out = []
    for column in run.columns:
        if column.memory and not run.args.rounds:
            continue  # `--rounds 0`: no memory measured
        out.append((column, RSS if column.memory else TIME))
        if column.memory and any(kind == column.key for _, kind in run.cuda_peaks):
            title = column.title.replace("memory", "CUDA memory", 1)
            out.append((Column(title, column.key, memory=True, fmt=column.fmt), CUDA))
    return out


def _figures(run: Run, source: str) -> dict[tuple[str, str], list[float]]:
    return {TIME: run.times, RSS: run.peaks, CUDA: run.cuda_peaks}[source]


def ratio(run: Run, column: Column, source: str = TIME) -> float:
    """reference / ours: the median of the per-step ratios, or the ratio of the medians."""
    ours, reference = _ours(run), _reference(run)
    assert reference is not None, "no reference side in this run"
    figures = _figures(run, source)
    theirs, mine = figures[(reference, column.key)], figures[(ours, column.key)]
    if source == TIME and column.per_step:
        return statistics.median(r / o for r, o in zip(theirs, mine, strict=True))
    return statistics.median(theirs) / statistics.median(mine)


def header(run: Run) -> str:
    ours, reference = _ours(run), _reference(run)
    info = run.infos[ours]
    versions = f"torch {info['torch']} (ours)"
    if reference is not None:
        versions += f", {run.infos[reference]['torch']} (reference)"
    return (
        f"machine: {cpu_name()}, {platform.system()}; {versions}; {info['threads']} threads; "
        f"device {info['device']}; {run.bench.setting(run.args)}; medians of {run.args.steps} "
        f"interleaved steps (time), {run.args.rounds} fresh processes (memory)"
    )


def table(run: Run) -> list[str]:
    """The markdown table of the READMEs: a row per side, then reference / ours (and targets)."""
    columns = _columns(run)
    out = [
        "| | " + " | ".join(column.title for column, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for side in run.sides:
        cells = []
        for column, source in columns:
            value = statistics.median(_figures(run, source)[(side.name, column.key)])
            cells.append(f"{value:{column.cell_fmt}}{column.suffix.get(side.name, '')}")
        out.append(f"| {side.name} | " + " | ".join(cells) + " |")
    if not run.has_reference:
        return out
    ratios = [ratio(run, column, source) for column, source in columns]
    cells = [f"{r:{column.ratio_fmt}}x" for r, (column, _) in zip(ratios, columns, strict=True)]
    out.append(f"| {run.bench.ratio_label} | " + " | ".join(cells) + " |")
    if any(column.target is not None for column, _ in columns):
        targets, met = [], []
        for r, (column, _) in zip(ratios, columns, strict=True):
            target = column.target
            targets.append("" if target is None else f">= {target:.2f}x{column.target_note}")
            met.append("" if target is None else ("yes" if r >= target else "NO"))
        out.append("| target | " + " | ".join(targets) + " |")
        out.append("| met | " + " | ".join(met) + " |")
    return out


def spread(run: Run) -> list[str]:
    """Each column's range (min-max) per side, where a side has more than one figure."""
    parts = []
    for column, source in _columns(run):
        figures = _figures(run, source)
        ranges = [
            f"{side.name} {min(values):{column.cell_fmt}}-{max(values):{column.cell_fmt}}"
            for side in run.sides
            if len(values := figures.get((side.name, column.key), [])) > 1
        ]
        if ranges:
            parts.append(f"{column.title}: " + ", ".join(ranges))
    return ["spread (min-max): " + "; ".join(parts)] if parts else []


def lines(run: Run) -> list[str]:
    return [
        header(run),
        *run.bench.describe(run),
        *table(run),
        *run.bench.footer(run),
        *spread(run),
    ]


def write_json(run: Run, path: Path) -> None:
    """Every figure of the run (raw, medians, ratios), with the arguments and the workers' info."""

    def keyed(figures: dict[tuple[str, str], list[float]]) -> dict[str, list[float]]:
        return {f"{side}/{key}": values for (side, key), values in figures.items()}

    data: dict[str, Any] = {
        "machine": cpu_name(),
        "system": platform.system(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(run.args).items()},
        "params": run.params,
        "workers": run.infos,
        "times_s": keyed(run.times),
        "median_s": {k: statistics.median(v) for k, v in keyed(run.times).items()},
        "peak_mib": keyed(run.peaks),
        "cuda_peak_mib": keyed(run.cuda_peaks),
    }
    if run.has_reference:
        data["speedup"] = {c.key: ratio(run, c) for c in run.columns if not c.memory}
        memory = [c for c, source in _columns(run) if source == RSS]
        data["memory_ratio"] = {c.key: ratio(run, c, RSS) for c in memory}
    path.write_text(json.dumps(data, indent=2) + "\n")
