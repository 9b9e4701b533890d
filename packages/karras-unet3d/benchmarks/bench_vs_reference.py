"""Benchmark `karras_unet3d.KarrasUnet3D` against the reference `denoising-diffusion-pytorch==2.3.4`.

The reference must live in its own environment (it pins other versions of shared helpers):

    uv venv /tmp/ddp-ref --python 3.11
    VIRTUAL_ENV=/tmp/ddp-ref uv pip install denoising-diffusion-pytorch==2.3.4
    /work/main/.venv/bin/python packages/karras-unet3d/benchmarks/bench_vs_reference.py \
        --ref-python /tmp/ddp-ref/bin/python --rounds 5

Every measurement runs in a fresh subprocess, alternating ours / reference for `--rounds` rounds;
the table shows medians. Same constructor arguments (the issue's configuration), batch 2, fp32.

- train step: forward + MSE loss + backward + Adam step, median of `--iters` steps after a warm-up.
- eval forward: `model.eval()` under `torch.inference_mode()`, median of `--iters` calls.
- peak memory: a fresh process builds the model and the batch, records its resident set size
  (RSS, /proc/self/statm), runs two training steps and reports `VmHWM` (the kernel's
  high-water mark of RSS) minus that baseline: the extra memory a training step needs
  (activations, gradients, Adam state). tracemalloc cannot see torch's allocations, hence RSS.
- gradient checkpointing: ours with `gradient_checkpointing=True` vs False, same measurements.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

CONFIG = {
    "frames": 8,
    "image_size": 32,
    "dim": 32,
    "dim_max": 128,
    "num_downsamples": 3,
    "num_blocks_per_stage": 1,
    "downsample_types": ("image", "frame", "image"),
    "attn_res": (8,),
    "attn_dim_head": 32,
    "num_classes": 10,
    "channels": 4,
}
BATCH = 2

WORKER = r"""
import json, resource, statistics, sys, time
import torch

impl, mode, iters, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
config = json.loads(sys.argv[5])
config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
if impl == "ours":
    from karras_unet3d import KarrasUnet3D
else:
    from denoising_diffusion_pytorch.karras_unet_3d import KarrasUnet3D
torch.manual_seed(0)
model = KarrasUnet3D(**config, **extra)
b = __BATCH__
x = torch.randn(b, config["channels"], config["frames"], config["image_size"], config["image_size"])
t = torch.rand(b)
labels = torch.randint(0, config["num_classes"], (b,))
target = torch.randn_like(x)
opt = torch.optim.Adam(model.parameters(), lr=1e-4)

def train_step():
    out = model(x, t, class_labels=labels)
    loss = (out - target).pow(2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

result = {"torch": torch.__version__, "threads": torch.get_num_threads()}
if mode == "memory":
    model.train()
    base = rss_mib()
    train_step(); train_step()
    with open("/proc/self/status") as f:  # VmHWM: peak RSS of this program (not inherited)
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    result["peak_mib"] = hwm / 1024 - base
else:
    times = []
    if mode == "train":
        model.train()
        fn = train_step
    else:
        model.eval()
        def fn():
            with torch.inference_mode():
                model(x, t, class_labels=labels)
    fn()  # warm-up
    for _ in range(iters):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    result["seconds"] = statistics.median(times)
print("RESULT " + json.dumps(result))
""".replace("__BATCH__", str(BATCH))


def run(
    python: str, impl: str, mode: str, iters: int, extra: dict[str, object]
) -> dict[str, float]:
    proc = subprocess.run(
        [python, "-c", WORKER, impl, mode, str(iters), json.dumps(extra), json.dumps(CONFIG)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{impl} {mode} failed:\n{proc.stderr[-3000:]}")
    data: dict[str, float] = json.loads(lines[-1][len("RESULT ") :])
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-python", default="/tmp/ddp-ref/bin/python")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    ours_python = sys.executable
    sides = [
        ("ours", ours_python, {}),
        ("ours+ckpt", ours_python, {"gradient_checkpointing": True}),
    ]
    if not args.skip_reference:
        if not Path(args.ref_python).exists():
            raise SystemExit(f"--ref-python {args.ref_python} not found (see the docstring)")
        sides.insert(1, ("reference", args.ref_python, dict[str, object]()))
    results: dict[tuple[str, str], list[float]] = {}
    torch_version = ""
    for round_index in range(args.rounds):
        order = sides if round_index % 2 == 0 else sides[::-1]  # alternate who goes first
        for mode in ("train", "eval", "memory"):
            for name, python, extra in order:
                impl = "ref" if name == "reference" else "ours"
                data = run(python, impl, mode, args.iters, extra)
                torch_version = str(data["torch"])
                key = "peak_mib" if mode == "memory" else "seconds"
                results.setdefault((name, mode), []).append(float(data[key]))
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)

    med = {key: statistics.median(values) for key, values in results.items()}
    print(
        f"machine: {platform.processor() or platform.machine()}, {platform.system()}, "
        f"torch {torch_version}, batch {BATCH}, fp32, {args.rounds} alternating rounds "
        f"x {args.iters} iterations (medians)"
    )
    print(f"config: {CONFIG}")
    header = "| | train step (s) | eval forward (s) | peak train memory (MiB) |"
    print(header)
    print("|---|---:|---:|---:|")
    for name, _, _ in sides:
        print(
            f"| {name} | {med[(name, 'train')]:.3f} | {med[(name, 'eval')]:.3f} | "
            f"{med[(name, 'memory')]:.0f} |"
        )
    if not args.skip_reference:
        print(
            f"| speed-up / memory ratio (reference / ours) | "
            f"{med[('reference', 'train')] / med[('ours', 'train')]:.2f}x | "
            f"{med[('reference', 'eval')] / med[('ours', 'eval')]:.2f}x | "
            f"{med[('reference', 'memory')] / med[('ours', 'memory')]:.2f}x |"
        )
    saving = 1 - med[("ours+ckpt", "memory")] / med[("ours", "memory")]
    print(
        f"gradient checkpointing: {saving:.0%} less peak training memory, train step "
        f"{med[('ours+ckpt', 'train')] / med[('ours', 'train')]:.2f}x the time"
    )


if __name__ == "__main__":
    main()
