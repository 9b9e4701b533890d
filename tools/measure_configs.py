"""Measure the `configs/*.toml` of every model package on this machine's CPU: seconds per
training step (median over steps 2..N, fp32, 1 DataLoader worker) and the peak resident memory
of the training process (VmHWM when the last step is logged; the run is stopped there, before
its held-out report), on a folder of real h264 videos (4 files, 160x120 and 176x144, 25 and
29.97 fps).

    uv run python tools/measure_configs.py [--steps 3] [--only karras-unet3d] [--batch-size 1]
        [--configs 64px.toml]

Prints one Markdown row per configuration; parameters are counted from the checkpoint written.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {  # package folder: (command, per-config overrides that keep the final report short)
    "karras-unet3d": (["karras-unet3d", "train"], ["--sample-steps", "1", "--num-per-class", "1"]),
    "video-ddpm": (["video-ddpm", "train"], ["--sample-steps", "1", "--num-per-row", "1"]),
    "lumiere": (["lumiere-video", "train"], ["--sample-steps", "1", "--base-steps", "3"]),
    # every step on clips: no single-frame pre-training steps, no single-frame batches
    "phenaki": (
        ["phenaki", "train-tokenizer"],
        ["--num-held-out", "2", "--image-pretrain-steps", "0", "--image-fraction", "0"],
    ),
}


def _videos(folder: Path) -> Path:
    from fractions import Fraction

    from mp_layers.video.testing import write_indexed_video

    folder.mkdir(parents=True, exist_ok=True)
    for index, (size, fps) in enumerate(
        [((160, 120), 25), ((176, 144), Fraction(30000, 1001))] * 2
    ):
        write_indexed_video(folder / f"v{index}.mp4", 75, width=size[0], height=size[1], fps=fps)
    return folder


def _parameters(run: Path) -> int | None:
    from safetensors import safe_open

    files = sorted(run.glob("**/checkpoints/step-*/model.safetensors"))
    if not files:
        return None
    total = 0
    with safe_open(str(files[-1]), "pt") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
            size = 1
            for dim in handle.get_slice(key).get_shape():
                size *= dim
            total += size
    return total


def _step_seconds(run: Path) -> float:
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    times = [float(r["time_s"]) for r in rows]
    if len(times) < 2:
        raise ValueError(f"{run}: expected 2 or more steps in metrics.csv, got {len(times)}")
    return statistics.median(b - a for a, b in itertools.pairwise(times))


def _peak_gib(pid: int) -> float:
    """The peak resident memory (VmHWM) of process `pid` so far, in GiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError(f"no VmHWM for process {pid}")


def _rows(run: Path) -> int:
    metrics = run / "metrics.csv"
    return len(metrics.read_text().splitlines()) - 1 if metrics.is_file() else 0


def measure(
    package: str, config: Path, videos: Path, steps: int, work: Path, batch: int | None
) -> dict[str, object]:
    """Train `steps` steps of `config` (logging every step), read the peak memory of the
    training process once all steps are in metrics.csv, and stop it there: the held-out
    report after training is not part of a step (at 128 px it costs more than the steps)."""
    command, extra = RUNS[package]
    run = work / f"{package}-{config.stem}"
    script = Path(sys.executable).parent / command[0]  # the console script: its pid is the run
    args = [
        str(script), *command[1:], "--config", str(config), "--data", str(videos),
        "--out", str(run), "--steps", str(steps), "--mixed-precision", "no", "--num-workers",
        "1", "--save-every", "0", "--no-progress", *extra,
        *([] if batch is None else ["--batch-size", str(batch)]),
    ]  # fmt: skip
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    peak, done = 0.0, float("inf")
    while process.poll() is None:
        with contextlib.suppress(FileNotFoundError, RuntimeError):
            peak = max(peak, _peak_gib(process.pid))
        if _rows(run) >= steps and (_parameters(run) is not None or time.perf_counter() > done):
            process.kill()  # the last step and the final checkpoint are in: stop the report
            break
        if _rows(run) < steps:
            done = time.perf_counter() + 120  # then wait at most this long for the checkpoint
        time.sleep(1.0)
    process.wait()
    wall = time.perf_counter() - start
    params = _parameters(run)
    if _rows(run) < steps:
        error = process.stderr.read() if process.stderr else ""
        return {"package": package, "config": config.name, "error": error.strip()[-400:]}
    return {
        "package": package,
        "config": config.name,
        "batch_size": batch,
        "seconds_per_step": round(_step_seconds(run), 2),
        "peak_rss_gib": round(peak, 2),
        "parameters_m": None if params is None else round(params / 1e6, 2),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--only", default=None, help="one package folder name")
    parser.add_argument("--batch-size", type=int, default=None, help="override the configs'")
    parser.add_argument("--configs", default=None, help="comma list of config file names")
    args = parser.parse_args()
    import torch

    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        videos = _videos(work / "videos")
        for package in RUNS:
            if args.only and package != args.only:
                continue
            for config in sorted((ROOT / "packages" / package / "configs").glob("*.toml")):
                if args.configs and config.name not in args.configs.split(","):
                    continue
                row = measure(package, config, videos, args.steps, work, args.batch_size)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
