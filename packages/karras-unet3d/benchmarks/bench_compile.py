"""Compile time and steady-state step time of `torch.compile` against eager, on the CPU.

    .venv/bin/python packages/karras-unet3d/benchmarks/bench_compile.py --steps 20

Two configurations: the default `karras-unet3d train` run (the EDM2 loss of `EDM2Diffusion` on
the CLI's default U-Net, batch 8, 16x16, 8 frames, 4 classes) and `bench_vs_reference.py`'s
configuration (the bare U-Net, batch 2, 32x32, 8 frames, MSE loss). A step is forward + loss +
backward + Adam, as the Trainer runs it with `--compile` (the loss module compiled, the optimizer
eager). Each mode runs in a fresh process (inductor caches are per process; the on-disk cache is
pointed at a fresh folder so the first compile is a cold one): `first step` is the wall time of
step 1 (compilation included), `steady` the median of the next `--steps` steps. Printed as a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile

WORKER = r"""
import json, os, statistics, sys, time
import torch
from karras_unet3d import EDM2Diffusion, KarrasUnet3D

which, mode, backend, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
torch.manual_seed(0)
if which == "default-run":
    net = KarrasUnet3D(image_size=16, frames=8, dim=16, dim_max=32, num_classes=4, channels=3,
                       num_downsamples=2, num_blocks_per_stage=1, downsample_types=("all", "all"),
                       attn_res=(4,), attn_dim_head=16)
    model = EDM2Diffusion(net, label_dropout=0.1)
    video = torch.rand(8, 3, 8, 16, 16)
    labels = torch.randint(0, 4, (8,))
    loss_of = lambda m: m(video, class_labels=labels)
else:
    model = KarrasUnet3D(frames=8, image_size=32, dim=32, dim_max=128, num_downsamples=3,
                         num_blocks_per_stage=1, downsample_types=("image", "frame", "image"),
                         attn_res=(8,), attn_dim_head=32, num_classes=10, channels=4)
    x = torch.randn(2, 4, 8, 32, 32)
    t = torch.rand(2)
    labels = torch.randint(0, 10, (2,))
    target = torch.randn_like(x)
    loss_of = lambda m: (m(x, t, class_labels=labels) - target).pow(2).mean()
opt = torch.optim.Adam(model.parameters(), lr=1e-4)
run = torch.compile(model, backend=backend) if mode == "compiled" else model

def step():
    start = time.perf_counter()
    loss = loss_of(run)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start

first = step()
times = [step() for _ in range(steps)]
print(json.dumps({"first": first, "steady": statistics.median(times)}))
"""


def measure(which: str, mode: str, backend: str, steps: int, threads: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as cache:
        env = {
            "OMP_NUM_THREADS": str(threads),
            "TORCHINDUCTOR_CACHE_DIR": cache,
            "PATH": "/usr/bin:/bin",
        }
        done = subprocess.run(
            [sys.executable, "-c", WORKER, which, mode, backend, str(steps)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="inductor")
    args = parser.parse_args()
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, ")
    print(
        f"{args.threads} threads, backend {args.backend}, steady = median of {args.steps} steps\n"
    )
    print("| configuration | mode | first step (s) | steady step (s) | speed-up |")
    print("|---|---|---:|---:|---:|")
    for which in ("default-run", "benchmark"):
        eager = measure(which, "eager", args.backend, args.steps, args.threads)
        compiled = measure(which, "compiled", args.backend, args.steps, args.threads)
        for mode, figures in (("eager", eager), ("compiled", compiled)):
            speed = eager["steady"] / figures["steady"]
            print(
                f"| {which} | {mode} | {figures['first']:.2f} | {figures['steady']:.3f} "
                f"| {speed:.2f}x |"
            )


if __name__ == "__main__":
    main()
