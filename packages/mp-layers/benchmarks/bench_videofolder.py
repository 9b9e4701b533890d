"""VideoFolder decode throughput (clips/s) on 16-frame 64x64 mp4 clips it writes itself.

Run: python packages/mp-layers/benchmarks/bench_videofolder.py [--clips 64] [--repeats 3]
Prints the machine, library versions, the configuration and one line per setting. Never part of
the test run.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import av
import torch
from torch.utils.data import DataLoader

from mp_layers.video import MovingShapes, VideoFolder, collate_videos, write_video


def make_clips(folder: Path, count: int, size: int, frames: int) -> None:
    shapes = MovingShapes(count, image_size=size, num_frames=frames, seed=0)
    for index in range(count):
        write_video(shapes[index]["video"], folder / f"clip{index:04d}.mp4", fps=8)
        (folder / f"clip{index:04d}.txt").write_text(shapes[index]["text"])


def clips_per_second(dataset: VideoFolder, repeats: int, workers: int) -> float:
    loader = DataLoader(
        dataset,
        batch_size=8,
        num_workers=workers,
        collate_fn=collate_videos,
        persistent_workers=workers > 0,
    )
    best = 0.0
    for _ in range(repeats + (workers > 0)):  # with workers, a first pass starts them
        start = time.perf_counter()
        count = sum(len(batch["text"]) for batch in loader)
        best = max(best, count / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.platform()}, {platform.machine()}, cpu_count={os.cpu_count()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, PyAV {av.__version__}")
    print(
        f"config: {args.clips} mp4 clips (H.264 yuv420p, CRF 15) of {args.frames} frames "
        f"{args.size}x{args.size}, batch 8, best of {args.repeats}, torch threads 1"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_clips(folder, args.clips, args.size, args.frames)
        settings = [
            ("decode, no resize", args.size, False, 0),
            ("decode + flip", args.size, True, 0),
            (f"decode + resize to {args.size // 2}", args.size // 2, False, 0),
            ("decode, 2 DataLoader workers", args.size, False, 2),
        ]
        for name, size, flip, workers in settings:
            dataset = VideoFolder(folder, image_size=size, num_frames=args.frames, random_flip=flip)
            rate = clips_per_second(dataset, args.repeats, workers)
            print(f"{name:32s} {rate:8.1f} clips/s  ({rate * args.frames:8.0f} frames/s)")


if __name__ == "__main__":
    main()
