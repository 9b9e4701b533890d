"""Benchmark `phenaki.CViViT` against the reference phenaki-pytorch 0.5.0, side by side.

The reference lives in its own environment (it pulls in other versions of shared helpers):

    uv venv --python 3.11 /tmp/refenv_phenaki
    uv pip install --python /tmp/refenv_phenaki phenaki-pytorch==0.5.0 torch==<ours>
    .venv/bin/python packages/phenaki/benchmarks/bench_vs_reference.py \
        --ref-python /tmp/refenv_phenaki/bin/python --steps 10

(`<ours>`: `.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])'`; no other
pin was needed: it resolved vector-quantize-pytorch 1.32.0, the version ours runs, and a
torchvision matching torch. With `use_vgg_and_gan=False` the reference builds no VGG and downloads
nothing. `uvx nox -s bench_reference_phenaki` does all of this.)

Same arguments on both sides: `CViViT(dim=128, codebook_size=4096, image_size=64, patch_size=8,
temporal_patch_size=2, spatial_depth=2, temporal_depth=2, dim_head=32, heads=4,
use_vgg_and_gan=False)` (lookup-free quantisation, the default), built after
`torch.manual_seed(0)`; a batch of 2 videos of 9 frames of 64x64, `torch.rand` after
`torch.manual_seed(0)` (identical on both sides: checked), fp32, `torch.set_num_threads(--threads)`
(2). Timing: one long-lived worker process per side builds its model; after two warm-up steps the
driver asks them for one step at a time, in turn (ours, reference, then the reverse order),
`--steps` times per mode, so that a slow spell of a shared machine slows both alike. The table
shows medians; a speed-up is the median of the per-step ratios reference / ours.

- train step: `loss = model(videos)` (train mode) + backward + Adam step. The reference returns
  the reconstruction MSE alone when `use_vgg_and_gan=False` (it drops the quantiser's auxiliary
  loss); ours returns MSE + the LFQ auxiliary (entropy) loss, so ours does slightly more work.
- encode+decode: `model(videos, return_recons_only=True)` in eval mode under
  `torch.inference_mode()`: encode, quantise, decode.
- peak memory (`--rounds` fresh processes per side and kind, alternating): a fresh process
  builds the model, the optimizer and the batch, records its resident set size (RSS,
  /proc/self/statm), runs two train steps (or two encode+decode passes) and reports `ru_maxrss`
  (the kernel's high-water mark of its RSS) minus that baseline: the extra memory the step needs
  (activations, gradients, Adam state). tracemalloc cannot see torch's allocations, hence RSS.

Targets (the issue): train >= 1.3x faster, encode+decode >= 1.3x faster, peak memory no higher.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

CVIVIT = {
    "dim": 128,
    "codebook_size": 4096,
    "image_size": 64,
    "patch_size": 8,
    "temporal_patch_size": 2,
    "spatial_depth": 2,
    "temporal_depth": 2,
    "dim_head": 32,
    "heads": 4,
    "use_vgg_and_gan": False,
}
BATCH, FRAMES, CHANNELS = 2, 9, 3
MODES = ("train", "encode_decode")
TARGETS = {"train": 1.3, "encode_decode": 1.3}  # reference / ours, time
MEMORY_TARGET = 1.0  # reference / ours: ours no higher

WORKER = r"""
import json, resource, sys, time
import torch

impl, mode, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
config, batch, frames, channels = json.loads(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
torch.set_num_threads(threads)
if impl == "ours":
    from phenaki import CViViT
else:
    from phenaki_pytorch import CViViT
torch.manual_seed(0)
model = CViViT(**config)
torch.manual_seed(0)
size = config["image_size"]
videos = torch.rand(batch, channels, frames, size, size)
opt = torch.optim.Adam(model.parameters(), lr=1e-4)

def train_step():
    model.train()
    loss = model(videos)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

def encode_decode():
    model.eval()
    with torch.inference_mode():
        recon = model(videos, return_recons_only=True)
    assert recon.shape == videos.shape, recon.shape

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

steps = {"train": train_step, "encode_decode": encode_decode}
result = {
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "params": sum(p.numel() for p in model.parameters()),
    "input_sum": float(videos.double().sum()),
}
if mode.startswith("memory:"):
    step = steps[mode.split(":")[1]]
    base = rss_mib()
    step(); step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    result["peak_mib"] = peak - base
    print("RESULT " + json.dumps(result), flush=True)
else:  # timing server: one command per line from the driver, one time per line back
    print("READY " + json.dumps(result), flush=True)
    for line in sys.stdin:
        step = steps[line.strip()]
        start = time.perf_counter()
        step()
        print(f"TIME {time.perf_counter() - start}", flush=True)
"""


def _command(python: str, impl: str, mode: str, threads: int) -> list[str]:
    return [
        python,
        "-c",
        WORKER,
        impl,
        mode,
        str(threads),
        json.dumps(CVIVIT),
        str(BATCH),
        str(FRAMES),
        str(CHANNELS),
    ]


_ENV = {**os.environ, "TQDM_DISABLE": "1"}


def memory(python: str, impl: str, kind: str, threads: int) -> float:
    """Extra peak RSS (MiB) of two `kind` steps, measured in a fresh process."""
    proc = subprocess.run(
        _command(python, impl, f"memory:{kind}", threads),
        capture_output=True,
        text=True,
        check=False,
        env=_ENV,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{impl} memory ({kind}) failed:\n{proc.stderr[-3000:]}")
    return float(json.loads(lines[-1][len("RESULT ") :])["peak_mib"])


class Server:
    """A worker process that builds one model, then times one step per command it is sent."""

    def __init__(self, python: str, impl: str, threads: int) -> None:
        self.proc = subprocess.Popen(
            _command(python, impl, "time", threads),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_ENV,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-python", default="/tmp/refenv_phenaki/bin/python")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side and mode")
    parser.add_argument("--rounds", type=int, default=3, help="memory measurements per side")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not Path(args.ref_python).exists():
        raise SystemExit(f"--ref-python {args.ref_python} not found (see the docstring)")
    sides = {"ours": sys.executable, "reference": args.ref_python}
    impls = {"ours": "ours", "reference": "ref"}

    servers = {name: Server(python, impls[name], args.threads) for name, python in sides.items()}
    infos = {name: server.info for name, server in servers.items()}
    if infos["ours"]["input_sum"] != infos["reference"]["input_sum"]:
        raise SystemExit(f"the two sides got different inputs: {infos}")
    times: dict[tuple[str, str], list[float]] = {}
    for mode in MODES:
        for server in servers.values():  # warm-up: allocator, oneDNN primitive caches
            server.time(mode)
            server.time(mode)
        for step in range(args.steps):
            names = list(servers) if step % 2 == 0 else list(servers)[::-1]
            for name in names:  # interleaved: a slow spell of the machine hits both sides
                times.setdefault((name, mode), []).append(servers[name].time(mode))
        print(f"{mode}: {args.steps} interleaved steps per side done", file=sys.stderr)
    for server in servers.values():
        server.close()

    peaks: dict[tuple[str, str], list[float]] = {}
    order = list(sides.items())
    for round_index in range(args.rounds):
        for kind in MODES:
            for name, python in order if round_index % 2 == 0 else order[::-1]:
                value = memory(python, impls[name], kind, args.threads)
                peaks.setdefault((name, kind), []).append(value)
    print("memory done", file=sys.stderr)

    med = {key: statistics.median(values) for key, values in times.items()}
    mem = {key: statistics.median(values) for key, values in peaks.items()}
    ratio = {
        mode: statistics.median(
            r / o for r, o in zip(times[("reference", mode)], times[("ours", mode)], strict=True)
        )
        for mode in MODES
    }
    mem_ratio = {kind: mem[("reference", kind)] / mem[("ours", kind)] for kind in MODES}
    print(
        f"machine: {cpu_name()}, {platform.system()}; torch {infos['ours']['torch']} (ours), "
        f"{infos['reference']['torch']} (reference); {infos['ours']['threads']} threads; "
        f"batch {BATCH} x {FRAMES} frames, fp32; medians of {args.steps} interleaved steps "
        f"(time), {args.rounds} fresh processes (memory)"
    )
    print(
        f"config: CViViT{CVIVIT}; parameters: {infos['ours']['params']:,} (ours), "
        f"{infos['reference']['params']:,} (reference)"
    )
    print(
        "| | train step (s) | encode+decode (s) | peak train memory (MiB) "
        "| peak encode+decode memory (MiB) |"
    )
    print("|---|---:|---:|---:|---:|")
    for name in sides:
        print(
            f"| {name} | {med[(name, 'train')]:.3f} | {med[(name, 'encode_decode')]:.3f} | "
            f"{mem[(name, 'train')]:.0f} | {mem[(name, 'encode_decode')]:.0f} |"
        )
    print(
        f"| reference / ours | {ratio['train']:.2f}x | {ratio['encode_decode']:.2f}x | "
        f"{mem_ratio['train']:.2f}x | {mem_ratio['encode_decode']:.2f}x |"
    )
    met = [ratio[mode] >= TARGETS[mode] for mode in MODES]
    met += [mem_ratio[kind] >= MEMORY_TARGET for kind in MODES]
    targets = [f">= {TARGETS[mode]:.2f}x" for mode in MODES]
    targets += [f">= {MEMORY_TARGET:.2f}x (no higher)" for _ in MODES]
    print(f"| target | {' | '.join(targets)} |")
    print(f"| met | {' | '.join('yes' if ok else 'NO' for ok in met)} |")


if __name__ == "__main__":
    main()
