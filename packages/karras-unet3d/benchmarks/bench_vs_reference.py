"""Benchmark `karras_unet3d.KarrasUnet3D` against the reference `denoising-diffusion-pytorch==2.3.4`.

The reference must live in its own environment (it pins other versions of shared helpers):

    uv venv /tmp/ddp-ref --python 3.11
    VIRTUAL_ENV=/tmp/ddp-ref uv pip install denoising-diffusion-pytorch==2.3.4
    /work/main/.venv/bin/python packages/karras-unet3d/benchmarks/bench_vs_reference.py \
        --ref-python /tmp/ddp-ref/bin/python --iters 15

Same constructor arguments (the issue's configuration), batch 2, fp32. Timing: one long-lived
worker process per side (ours, reference, ours with gradient checkpointing) builds its model; after
two warm-up steps the driver asks them for one step at a time, in turn (ours, reference, ckpt,
then the reverse order), `--iters` times per mode, so that a slow spell of a shared machine slows
every side alike. The table shows medians, and the speed-up is the median of the per-step ratios.

- train step: forward + MSE loss + backward + Adam step.
- eval forward: `model.eval()` under `torch.inference_mode()`.
- peak memory (`--rounds` fresh processes per side, alternating): a fresh process builds the model and the batch, records its resident set size
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

impl, mode, extra = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
config = json.loads(sys.argv[4])
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
    print("RESULT " + json.dumps(result), flush=True)
else:  # timing server: one command per line from the driver, one time per line back
    def eval_step():
        with torch.inference_mode():
            model(x, t, class_labels=labels)

    steps = {"train": train_step, "eval": eval_step}
    print("READY " + json.dumps(result), flush=True)
    for line in sys.stdin:
        command = line.strip()
        model.train(command == "train")
        start = time.perf_counter()
        steps[command]()
        print(f"TIME {time.perf_counter() - start}", flush=True)
""".replace("__BATCH__", str(BATCH))


def run(python: str, impl: str, extra: dict[str, object]) -> dict[str, float]:
    """Peak memory, measured in a fresh process."""
    proc = subprocess.run(
        [python, "-c", WORKER, impl, "memory", json.dumps(extra), json.dumps(CONFIG)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{impl} memory failed:\n{proc.stderr[-3000:]}")
    data: dict[str, float] = json.loads(lines[-1][len("RESULT ") :])
    return data


class Server:
    """A worker process that builds one model, then times one step per command it is sent."""

    def __init__(self, python: str, impl: str, extra: dict[str, object]) -> None:
        self.proc = subprocess.Popen(
            [python, "-c", WORKER, impl, "time", json.dumps(extra), json.dumps(CONFIG)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info: dict[str, object] = json.loads(self._expect("READY "))

    def _expect(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix) :]
        raise RuntimeError(f"worker exited with {self.proc.wait()}")

    def time(self, mode: str) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(mode + "\n")
        self.proc.stdin.flush()
        return float(self._expect("TIME "))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-python", default="/tmp/ddp-ref/bin/python")
    parser.add_argument("--rounds", type=int, default=3, help="memory measurements per side")
    parser.add_argument("--iters", type=int, default=15, help="timed steps per side and mode")
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

    servers = {name: Server(python, "ref" if name == "reference" else "ours", extra)
               for name, python, extra in sides}  # fmt: skip
    times: dict[tuple[str, str], list[float]] = {}
    for mode in ("train", "eval"):
        for server in servers.values():  # warm-up: allocator, oneDNN primitive caches
            server.time(mode)
            server.time(mode)
        for step in range(args.iters):
            names = list(servers) if step % 2 == 0 else list(servers)[::-1]
            for name in names:  # interleaved: a slow spell of the machine hits every side
                times.setdefault((name, mode), []).append(servers[name].time(mode))
        print(f"{mode}: {args.iters} interleaved steps per side done", file=sys.stderr)
    torch_version = str(servers["ours"].info["torch"])
    threads = servers["ours"].info["threads"]
    for server in servers.values():
        server.close()

    memory: dict[str, list[float]] = {}
    for round_index in range(args.rounds):
        order = sides if round_index % 2 == 0 else sides[::-1]
        for name, python, extra in order:
            impl = "ref" if name == "reference" else "ours"
            memory.setdefault(name, []).append(float(run(python, impl, extra)["peak_mib"]))

    med = {key: statistics.median(values) for key, values in times.items()}
    mem = {name: statistics.median(values) for name, values in memory.items()}
    print(
        f"machine: {platform.processor() or platform.machine()}, {platform.system()}, "
        f"torch {torch_version}, {threads} threads, batch {BATCH}, fp32; medians of "
        f"{args.iters} interleaved steps (time) and {args.rounds} fresh processes (memory)"
    )
    print(f"config: {CONFIG}")
    print("| | train step (s) | eval forward (s) | peak train memory (MiB) |")
    print("|---|---:|---:|---:|")
    for name, _, _ in sides:
        print(
            f"| {name} | {med[(name, 'train')]:.3f} | {med[(name, 'eval')]:.3f} | {mem[name]:.0f} |"
        )
    if not args.skip_reference:
        pairs = {
            mode: statistics.median(
                r / o
                for r, o in zip(times[("reference", mode)], times[("ours", mode)], strict=True)
            )
            for mode in ("train", "eval")
        }
        print(
            f"| reference / ours (median of per-step ratios) | {pairs['train']:.2f}x | "
            f"{pairs['eval']:.2f}x | {mem['reference'] / mem['ours']:.2f}x |"
        )
    saving = 1 - mem["ours+ckpt"] / mem["ours"]
    print(
        f"gradient checkpointing: {saving:.0%} less peak training memory, train step "
        f"{med[('ours+ckpt', 'train')] / med[('ours', 'train')]:.2f}x the time"
    )


if __name__ == "__main__":
    main()
