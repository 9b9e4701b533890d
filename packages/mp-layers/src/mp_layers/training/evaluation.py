"""Held-out data and the run report every `train` command writes.

`held_out_split(dataset)` splits any training data into a training part and a held-out part that
works for every data size: whole videos when a folder (or shard set) has enough of them, else
the end of every video in time (`mp_layers.video.clips.split_timeline`). `held_out_clips` reads
a fixed batch of held-out clips, `write_report` writes `report.json`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mp_layers.training.data import EpochSubset
from mp_layers.typecheck import typechecked

__all__ = [
    "HeldOutSplit",
    "data_conditioning",
    "fixed_noise_losses",
    "held_out_clips",
    "held_out_split",
    "report_against_real",
    "write_report",
]


@typechecked
@dataclass
class HeldOutSplit:
    """`train` and `held_out` datasets and how they were split (`by`: "videos", "shards",
    "time" or "items"; `description`: a line for reports)."""

    train: Any
    held_out: Any
    by: str
    description: str


@typechecked
def held_out_split(
    dataset: Any, *, fraction: float = 0.1, min_videos: int = 8, max_held_out: int = 64
) -> HeldOutSplit:
    """Split `dataset` for evaluation; both parts are never empty.

    - `VideoFolder` with at least `min_videos` videos: `ceil(fraction * n)` whole videos (evenly
      spread over the sorted files, at most `max_held_out`) are held out.
    - `VideoShards` over at least 2 shards: the last `ceil(fraction * n)` shards (at least one
      shard stays for training); one shard: split in time like a small folder.
    - `VideoFolder` with fewer videos: split in time, the end of every video held out
      (`split="train"` / `"held_out"`, `held_out_fraction=fraction`), so a folder of one video
      still trains and evaluates on different frames.
    - Any other map-style dataset (e.g. `MovingShapes`): the last `ceil(fraction * len)` items
      (at most `max_held_out`, at least 1, and at least 1 left for training).
    """
    from mp_layers.video import VideoFolder, VideoShards

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction: expected a float in (0, 1), got {fraction}")
    if isinstance(dataset, VideoFolder):
        files = len(dataset.files)
        if files >= min_videos:
            count = min(max(1, math.ceil(fraction * files)), max_held_out, files - 1)
            held_videos = set(np.linspace(0, files - 1, count).round().astype(int).tolist())
            offsets = dataset._clip_offsets
            train_ids = [
                i for v in range(files) if v not in held_videos for i in _clips(offsets, v)
            ]
            held_ids = [int(offsets[v]) for v in sorted(held_videos)]  # their first clips
            return HeldOutSplit(
                EpochSubset(dataset, train_ids),
                EpochSubset(dataset, held_ids),
                "videos",
                f"{count} of {files} videos held out",
            )
        train_part, held_part = (
            VideoFolder(
                dataset.root,
                **{**dataset.options, "split": part, "held_out_fraction": fraction},
            )
            for part in ("train", "held_out")
        )
        return HeldOutSplit(
            train_part,
            held_part,
            "time",
            f"the last {fraction:.0%} of each of {files} videos held out",
        )
    if isinstance(dataset, VideoShards):
        shards = dataset.shards
        options = dict(dataset.options)
        if len(shards) >= 2:
            count = min(max(1, math.ceil(fraction * len(shards))), len(shards) - 1)
            held = VideoShards(shards[-count:], **{**options, "resampled": False})
            return HeldOutSplit(
                VideoShards(shards[:-count], **options),
                held,
                "shards",
                f"{count} of {len(shards)} shards held out",
            )
        train, held = (
            VideoShards(shards, **{**options, "split": part, "held_out_fraction": fraction})
            for part in ("train", "held_out")
        )
        held.resampled = False
        return HeldOutSplit(train, held, "time", f"the last {fraction:.0%} of each video held out")
    length = len(dataset)
    if length < 2:
        raise ValueError(f"dataset: expected at least 2 items to hold some out, got {length}")
    count = min(max(1, math.ceil(fraction * length)), max_held_out, length - 1)
    return HeldOutSplit(
        EpochSubset(dataset, range(length - count)),
        EpochSubset(dataset, range(length - count, length)),
        "items",
        f"the last {count} of {length} items held out",
    )


def _clips(offsets: np.ndarray, video: int) -> range:
    return range(int(offsets[video]), int(offsets[video + 1]))


@typechecked
def held_out_clips(dataset: Any, count: int) -> dict[str, Any]:
    """The first `count` items of `dataset` (a map-style dataset at its epoch 0, or the first
    items of a stream), collated: `video` `(n, c, f, h, w)` and every other key as a list.
    Fewer when the dataset is smaller; an empty dataset raises `ValueError`."""
    from torch.utils.data import IterableDataset

    if isinstance(dataset, IterableDataset):
        items = list(itertools.islice(iter(dataset), count))
    else:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(0)
        items = [dataset[index] for index in range(min(count, len(dataset)))]
    if not items:
        raise ValueError("held-out data: expected at least one clip, got none")
    batch: dict[str, Any] = {"video": torch.stack([item["video"] for item in items])}
    for key in items[0]:
        if key != "video":
            batch[key] = [item[key] for item in items]
    return batch


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


@typechecked
def write_report(out_dir: str | Path, report: dict[str, Any]) -> Path:
    """Write `report` (every figure of a run) to `out_dir/report.json`, atomically; paths become
    strings and non-finite floats `null`. Returns the path."""
    from mp_layers.pretrained import write_config

    path = Path(out_dir) / "report.json"
    write_config(path, _jsonable(report))
    return path


@typechecked
def fixed_noise_losses(
    loss_at: Any, clips: torch.Tensor, levels: Any, *, seed: int = 0
) -> dict[str, float]:
    """Held-out loss at fixed noise levels, comparable between runs and checkpoints: for each
    level, `loss_at(clips, level, generator) -> scalar tensor` with a generator seeded by
    `(seed, level's position)`, under `torch.no_grad()`. `loss_at` draws all its noise from the
    generator (on the clips' device). Returns `{str(level): loss}`."""
    figures: dict[str, float] = {}
    with torch.no_grad():
        for position, level in enumerate(levels):
            generator = torch.Generator(device=clips.device).manual_seed(seed * 1000 + position)
            figures[str(level)] = float(loss_at(clips, level, generator))
    return figures


@typechecked
def report_against_real(
    trainer: Any,
    summary: dict[str, Any],
    samples: torch.Tensor,
    real: torch.Tensor,
    *,
    name: str = "samples",
    what: str = "samples",
    fps: int = 8,
) -> dict[str, float]:
    """The real-data part of a run's report: `real_data_report(samples, real)` printed and added
    to `summary` as `summary[f"{name}_vs_real"] = {"motion", "real_motion",
    "colour_histogram_distance", "sheet_gif", "sheet_mp4"}`, the sheet of real clips above the samples written to
    `out_dir/{name}_vs_real.gif` and `.mp4`, and both logged to the run's tracker (`held_out/`
    scalars, the samples as a video). Returns the figures."""
    from mp_layers.video import real_data_report, write_comparison_sheet

    figures, line = real_data_report(samples, real, what=what)
    gif, mp4 = write_comparison_sheet(
        samples, real, Path(trainer.out_dir) / f"{name}_vs_real.gif", fps=fps
    )
    print(line)
    print(f"{what} beside held-out real clips (top rows): {gif} and {mp4}")
    summary[f"{name}_vs_real"] = {**figures, "sheet_gif": str(gif), "sheet_mp4": str(mp4)}
    trainer.log({f"held_out/{name}_{key}": value for key, value in figures.items()})
    trainer.log_videos(name, samples)
    return figures


@typechecked
def data_conditioning(dataset: Any, *, peek: int = 8) -> str:
    """What conditioning `--cond auto` finds in `dataset`: "labels" for `MovingShapes` (class
    labels, and captions too), "text" for videos with captions (`VideoFolder.has_captions`, or
    a caption among the first `peek` clips of a stream), else "none"."""
    from torch.utils.data import IterableDataset

    from mp_layers.video import MovingShapes, VideoFolder

    if isinstance(dataset, EpochSubset):
        dataset = dataset.data
    if isinstance(dataset, MovingShapes):
        return "labels"
    if isinstance(dataset, VideoFolder):
        return "text" if dataset.has_captions else "none"
    if isinstance(dataset, IterableDataset):
        items = itertools.islice(iter(dataset), peek)
        return "text" if any(str(item.get("text", "")) for item in items) else "none"
    return "none"
