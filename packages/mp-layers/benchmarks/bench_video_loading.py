"""Clip loading from long real videos (clips/s), and a training step on them vs MovingShapes.

Run: python packages/mp-layers/benchmarks/bench_video_loading.py [--seconds 30] [--workers 2]

Writes its own 1280x720 h264 files (moving textured content, 25 fps) and measures, with a
DataLoader of `--workers` workers, 16-frame 64x64 clips from random places:
  1. `VideoFolder` on the file with a keyframe every second,
  2. the same content with x264's default keyframe interval (250),
  3. the file of 2. after `prepare_videos` (128 px short side, a keyframe a second),
  4. `VideoShards` over shards of 3.,
  5. decoding the whole file per clip, then resizing in torch (`read_video` + slicing: what
     most training scripts do), on the file of 1.
Then one optimizer step of video-ddpm's Unet3D + GaussianDiffusion (32 px, 8 frames, batch 4,
the Trainer's own batch stream `endless_batches`) on the prepared folder and on MovingShapes.
Prints the machine, versions, configuration and one line per setting (medians of `--rounds`).
Never part of the test run.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mp_layers.video import VideoFolder, VideoShards, collate_videos, resize_center_crop
from mp_layers.video.prepare import prepare_videos


def write_long_video(path: Path, seconds: float, keyframe_interval: int | None) -> None:
    """1280x720 at 25 fps: a drifting texture with moving blocks, encoded by x264 (veryfast);
    `keyframe_interval` None keeps x264's default (250 frames)."""
    height, width, frames = 720, 1280, int(seconds * 25)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    options = {"crf": "23", "preset": "veryfast"}
    if keyframe_interval is not None:
        options.update(g=str(keyframe_interval), keyint_min=str(keyframe_interval))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(25), options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(frames):
            base = 127 + 60 * np.sin((xx + 3 * k) / 37.0) * np.cos((yy - 2 * k) / 23.0)
            image = np.repeat(base[..., None], 3, axis=2)
            image[..., 1] = 127 + 60 * np.sin((xx - yy + 5 * k) / 51.0)
            top, left = (40 + 5 * k) % (height - 120), (80 + 9 * k) % (width - 160)
            image[top : top + 120, left : left + 160] = (230, 40, 40)
            frame = av.VideoFrame.from_ndarray(image.clip(0, 255).astype(np.uint8), "rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


class WholeFileClips(Dataset[dict[str, torch.Tensor]]):
    """The usual training-script loader (`torchvision.io.read_video` style): decode the whole
    file to uint8 RGB frames at full size, take 16 frames from a random start, resize and crop
    in torch."""

    def __init__(self, file: Path, clips: int, frames: int, size: int) -> None:
        self.file, self.clips, self.frames, self.size = file, clips, frames, size

    def __len__(self) -> int:
        return self.clips

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        with av.open(str(self.file)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        start = int(np.random.default_rng(index).integers(0, len(frames) - self.frames + 1))
        kept = torch.from_numpy(np.stack(frames[start : start + self.frames]))
        video = kept.permute(3, 0, 1, 2).float().div_(255.0)
        return {"video": resize_center_crop(video, self.size).contiguous()}


def clips_per_second(dataset: object, clips: int, workers: int, batch: int = 4) -> float:
    loader = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch,
        num_workers=workers,
        collate_fn=collate_videos,
        persistent_workers=False,
    )
    start = time.perf_counter()  # worker start-up included: it is small next to `clips`
    count = sum(len(b["video"]) for b in itertools.islice(loader, max(1, clips // batch)))
    return count / (time.perf_counter() - start)


def training_step_seconds(data: object, steps: int, workers: int) -> float:
    """Median seconds of one step (data wait included) of video-ddpm at 32 px, 8 frames."""
    from accelerate import Accelerator

    from mp_layers.training import TrainerConfig
    from mp_layers.training.data import endless_batches
    from video_ddpm import GaussianDiffusion, Unet3D

    torch.manual_seed(0)
    net = Unet3D(dim=32, dim_mults=(1, 2))
    model = GaussianDiffusion(net, image_size=32, num_frames=8, timesteps=100)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    config = TrainerConfig(out_dir="unused", batch_size=4, num_workers=workers, cpu=True)
    stream = endless_batches(
        data, Accelerator(cpu=True), config, start=0, collate_fn=collate_videos
    )
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        batch = next(stream)
        loss = model(batch["video"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 2:  # the first steps start the workers
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the test videos")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clips", type=int, default=48, help="clips timed per setting")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="training steps timed")
    args = parser.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - args.workers) if args.workers else 1)
    print(f"machine: {platform.platform()}, {platform.machine()}, cpu_count={os.cpu_count()}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, PyAV {av.__version__}")
    print(
        f"config: 1280x720 h264 25 fps, {args.seconds:.0f} s; clips of 16 frames at 64x64 from "
        f"random places; DataLoader batch 4, {args.workers} workers; median of {args.rounds}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, interval in (("key1s", 25), ("key250", None)):
            (root / name).mkdir()
            start = time.perf_counter()
            write_long_video(root / name / "video.mp4", args.seconds, interval)
            print(f"wrote {name}/video.mp4 in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        prepare_videos(root / "key250", root / "small", short_side=128, progress=False)
        prepare_videos(
            root / "key250", root / "shards", short_side=128, shard_size=1, progress=False
        )
        print(f"prepare-videos (128 px, folder and shards) in {time.perf_counter() - start:.1f} s")
        clip = {"image_size": 64, "num_frames": 16, "clips_per_video": 4096}
        settings = {
            "720p, keyframe every second": (VideoFolder(root / "key1s", **clip), args.clips),
            "720p, keyframe interval 250": (VideoFolder(root / "key250", **clip), args.clips),
            "prepared 128 px": (VideoFolder(root / "small", **clip), 4 * args.clips),
            "prepared 128 px, shards": (
                VideoShards(
                    str(root / "shards" / "00000.tar"),
                    image_size=64,
                    num_frames=16,
                    clips_per_video=64,
                    shuffle=0,
                ),
                4 * args.clips,
            ),
            "whole-file decode per clip": (
                WholeFileClips(root / "key1s" / "video.mp4", 64, 16, 64),
                max(8, args.workers * 4),
            ),
        }
        rates: dict[str, list[float]] = {name: [] for name in settings}
        for _ in range(args.rounds):  # interleaved rounds
            for name, (dataset, clips) in settings.items():
                rates[name].append(clips_per_second(dataset, clips, args.workers))
        whole = statistics.median(rates["whole-file decode per clip"])
        for name, values in rates.items():
            median = statistics.median(values)
            print(f"{name:32s} {median:8.2f} clips/s  ({median / whole:6.1f}x whole-file decode)")
        small = VideoFolder(root / "small", image_size=32, num_frames=8, clips_per_video=256)
        from mp_layers.video import MovingShapes

        shapes = MovingShapes(1024, image_size=32, num_frames=8, seed=0)
        real = [training_step_seconds(small, args.steps, args.workers) for _ in range(args.rounds)]
        synthetic = [training_step_seconds(shapes, args.steps, 0) for _ in range(args.rounds)]
        real_s, synthetic_s = statistics.median(real), statistics.median(synthetic)
        print(
            f"video-ddpm step (32 px, 8 frames, batch 4): prepared folder {real_s:.3f} s "
            f"({args.workers} workers), MovingShapes {synthetic_s:.3f} s: {real_s / synthetic_s:.2f}x"
        )


if __name__ == "__main__":
    main()
