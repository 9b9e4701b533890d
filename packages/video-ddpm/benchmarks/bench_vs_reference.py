"""Benchmark `video_ddpm` against the reference video-diffusion-pytorch 0.6.1, side by side.

The reference lives in its own environment (it pins other versions of shared helpers):

    uv venv --python 3.11 /tmp/refenv061
    uv pip install --python /tmp/refenv061 video-diffusion-pytorch==0.6.1 torch==<ours>
    .venv/bin/python packages/video-ddpm/benchmarks/bench_vs_reference.py \
        --ref-python /tmp/refenv061/bin/python --steps 10

Same arguments on both sides: `Unet3D(dim=32, dim_mults=(1, 2, 4), channels=3)` in
`GaussianDiffusion(image_size=32, num_frames=8, timesteps=1000, loss_type="l1")`, batch 2 of
8 frames of 32x32, fp32, `torch.set_num_threads(--threads)` (2). Timing: one long-lived worker
process per side builds its model; after two warm-up steps the driver asks them for one step at a
time, in turn (ours, reference, then the reverse order), `--steps` times per mode, so that a slow
spell of a shared machine slows both alike. The table shows medians; a speed-up is the median of
the per-step ratios reference / ours.

- train step: `loss = diffusion(videos)` (l1, ε objective) + backward + Adam step.
- p_sample step: one ancestral step at t = 500 (inference mode, as both run it).
- whole sample: ours, DDIM with 50 steps (`sample(sampler="ddim", steps=50)`, median of
  `--sample-steps` runs); reference, its 1000-step `p_sample_loop`: estimated as 1000 x its
  median p_sample step, or timed once with `--ref-full-loop` (the table says which).
- peak memory (`--rounds` fresh processes per side and kind, alternating): a fresh process
  builds the model and the batch, records its resident set size (RSS, /proc/self/statm), runs two
  training steps (or two p_sample steps) and reports `ru_maxrss` (the kernel's high-water mark of
  its RSS) minus that baseline: the extra memory the step needs (activations, gradients, Adam
  state). tracemalloc cannot see torch's allocations, hence RSS.
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

UNET = {"dim": 32, "dim_mults": (1, 2, 4), "channels": 3}
DIFFUSION = {"image_size": 32, "num_frames": 8, "timesteps": 1000, "loss_type": "l1"}
BATCH, DDIM_STEPS = 2, 50

WORKER = r"""
import json, resource, sys, time
import torch

impl, mode, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
unet, diffusion_args, batch, ddim_steps = json.loads(sys.argv[4]), json.loads(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
unet["dim_mults"] = tuple(unet["dim_mults"])
torch.set_num_threads(threads)
if impl == "ours":
    from video_ddpm.diffusion import GaussianDiffusion
    from video_ddpm.unet import Unet3D
else:
    from video_diffusion_pytorch import GaussianDiffusion, Unet3D
torch.manual_seed(0)
diffusion = GaussianDiffusion(Unet3D(**unet), **diffusion_args)
size, frames = diffusion_args["image_size"], diffusion_args["num_frames"]
shape = (batch, unet["channels"], frames, size, size)
videos = torch.rand(shape)
x = torch.randn(shape)
t = torch.full((batch,), diffusion_args["timesteps"] // 2, dtype=torch.long)
opt = torch.optim.Adam(diffusion.parameters(), lr=1e-4)

def train_step():
    diffusion.train()
    loss = diffusion(videos)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

def p_sample_step():
    diffusion.eval()
    diffusion.p_sample(x, t)

def sample():
    diffusion.eval()
    if impl == "ours":
        diffusion.sample(batch_size=batch, sampler="ddim", steps=ddim_steps)
    else:
        diffusion.p_sample_loop(shape)

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

steps = {"train": train_step, "p_sample": p_sample_step, "sample": sample}
result = {"torch": torch.__version__, "threads": torch.get_num_threads()}
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
        json.dumps(UNET),
        json.dumps(DIFFUSION),
        str(BATCH),
        str(DDIM_STEPS),
    ]


_ENV = {**os.environ, "TQDM_DISABLE": "1"}  # the reference's sampling loop has a progress bar


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
    parser.add_argument("--ref-python", default="/tmp/refenv061/bin/python")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side and mode")
    parser.add_argument("--sample-steps", type=int, default=3, help="timed DDIM samples (ours)")
    parser.add_argument("--rounds", type=int, default=3, help="memory measurements per side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--ref-full-loop",
        action="store_true",
        help="time the reference's 1000-step p_sample_loop once instead of estimating it",
    )
    args = parser.parse_args()
    if not Path(args.ref_python).exists():
        raise SystemExit(f"--ref-python {args.ref_python} not found (see the docstring)")
    sides = {"ours": sys.executable, "reference": args.ref_python}
    impls = {"ours": "ours", "reference": "ref"}

    servers = {name: Server(python, impls[name], args.threads) for name, python in sides.items()}
    times: dict[tuple[str, str], list[float]] = {}
    for mode in ("train", "p_sample"):
        for server in servers.values():  # warm-up: allocator, oneDNN primitive caches
            server.time(mode)
            server.time(mode)
        for step in range(args.steps):
            names = list(servers) if step % 2 == 0 else list(servers)[::-1]
            for name in names:  # interleaved: a slow spell of the machine hits both sides
                times.setdefault((name, mode), []).append(servers[name].time(mode))
        print(f"{mode}: {args.steps} interleaved steps per side done", file=sys.stderr)
    samples = [servers["ours"].time("sample") for _ in range(args.sample_steps)]
    timesteps = DIFFUSION["timesteps"]
    if args.ref_full_loop:
        ref_sample = servers["reference"].time("sample")
        ref_sample_note = f"{timesteps}-step p_sample_loop, timed once"
    else:
        ref_sample = timesteps * statistics.median(times[("reference", "p_sample")])
        ref_sample_note = (
            f"{timesteps}-step p_sample_loop, estimated: {timesteps} x median p_sample"
        )
    print("whole samples done", file=sys.stderr)
    torch_versions = {name: str(server.info["torch"]) for name, server in servers.items()}
    threads = servers["ours"].info["threads"]
    for server in servers.values():
        server.close()

    peaks: dict[tuple[str, str], list[float]] = {}
    order = list(sides.items())
    for round_index in range(args.rounds):
        for kind in ("train", "p_sample"):
            for name, python in order if round_index % 2 == 0 else order[::-1]:
                value = memory(python, impls[name], kind, args.threads)
                peaks.setdefault((name, kind), []).append(value)
    print("memory done", file=sys.stderr)

    med = {key: statistics.median(values) for key, values in times.items()}
    mem = {key: statistics.median(values) for key, values in peaks.items()}
    whole = {"ours": statistics.median(samples), "reference": ref_sample}
    ratio = {
        mode: statistics.median(
            r / o for r, o in zip(times[("reference", mode)], times[("ours", mode)], strict=True)
        )
        for mode in ("train", "p_sample")
    }
    print(
        f"machine: {cpu_name()}, {platform.system()}; torch {torch_versions['ours']} (ours), "
        f"{torch_versions['reference']} (reference); {threads} threads; batch {BATCH}, fp32; "
        f"medians of {args.steps} interleaved steps (time), {args.sample_steps} samples (ours), "
        f"{args.rounds} fresh processes (memory)"
    )
    print(f"config: Unet3D{UNET}, GaussianDiffusion{DIFFUSION}")
    print(f"whole sample: ours DDIM {DDIM_STEPS} steps, timed; reference {ref_sample_note}")
    print(
        "| | train step (s) | p_sample step (s) | whole sample (s) "
        "| peak train memory (MiB) | peak p_sample memory (MiB) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name in sides:
        estimated = " (est.)" if name == "reference" and not args.ref_full_loop else ""
        print(
            f"| {name} | {med[(name, 'train')]:.3f} | {med[(name, 'p_sample')]:.3f} | "
            f"{whole[name]:.1f}{estimated} | {mem[(name, 'train')]:.0f} | "
            f"{mem[(name, 'p_sample')]:.0f} |"
        )
    print(
        f"| reference / ours | {ratio['train']:.2f}x | {ratio['p_sample']:.2f}x | "
        f"{whole['reference'] / whole['ours']:.1f}x | "
        f"{mem[('reference', 'train')] / mem[('ours', 'train')]:.2f}x | "
        f"{mem[('reference', 'p_sample')] / mem[('ours', 'p_sample')]:.2f}x |"
    )
    print(
        f"like for like, a {timesteps}-step ancestral sample would take ~"
        f"{timesteps * med[('ours', 'p_sample')]:.0f} s ours vs ~"
        f"{timesteps * med[('reference', 'p_sample')]:.0f} s reference ({timesteps} x median "
        "p_sample step)"
    )


if __name__ == "__main__":
    main()
