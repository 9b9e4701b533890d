"""Benchmark `lumiere.Lumiere` against the reference lumiere-pytorch 0.0.24, side by side.

The reference lives in its own environment (it pulls in other versions of shared helpers):

    uv venv --python 3.11 /tmp/refenv_lumiere
    uv pip install --python /tmp/refenv_lumiere lumiere-pytorch==0.0.24 torch==<ours> \
        diffusers==<ours> x-transformers==<ours>
    .venv/bin/python packages/lumiere/benchmarks/bench_vs_reference.py \
        --ref-python /tmp/refenv_lumiere/bin/python --steps 10

(`<ours>`: the versions in our environment, e.g. `.venv/bin/python -c 'import torch;
print(torch.__version__.split("+")[0])'`; written against torch 2.15.0, diffusers 0.42.1 and
x-transformers 2.31.10. diffusers is not a dependency of the reference: it is the base model of
both sides. `uvx nox -s bench_reference_lumiere` does all of this.)

Same base and arguments on both sides: a diffusers `UNet2DModel(**UNET)` (64x64, 3 channels,
unconditional, block_out_channels (64, 128, 128, 256), one resnet per down block, attention in the
two low-resolution levels and the mid block; 12.8 M parameters), built after `torch.manual_seed(0)`
(identical weights on both sides: checked), subclassed only to return its sample tensor
(`return_dict=False` and `[0]`): the reference's `forward` rearranges what the base returns and so
needs a tensor. Then `Lumiere(unet, image_size=64, unet_time_kwarg="timestep",
conv_module_names=CONV, attn_module_names=ATTN)` with a convolution inflation block after the last
resnet of each down and up block (`down_blocks.i.resnets.0`, `up_blocks.i.resnets.1`: resnets
return the 4-D feature map, the blocks return tuples, which the reference's hooks cannot take) and
an attention inflation block after `mid_block`; no temporal down- or up-sampling; default block
arguments. A batch of `--batch` (1) videos of 8 frames of 64x64, `torch.rand` after
`torch.manual_seed(0)` (identical on both sides: checked), timesteps `randint(0, 1000, (b,))`,
fp32, `torch.set_num_threads(--threads)` (2).

Two workarounds make the reference run this configuration at all; neither changes its work:
- With no temporal down-sampling it crashes while unpacking `zip(*[])` for the empty groups (the
  same happens for an empty `attn_module_names`). The worker gives the reference module a `zip`
  that returns three empty tuples when called without arguments; the (wasted) base forward it runs
  for each empty group still happens.
- Its forward pre-hook on every submodule (which repeats per-video conditioning for the frames)
  unpacks the positional arguments and fails on a module called with keywords only, as diffusers
  calls its down blocks. After construction the worker wraps each of those hooks so that a call
  without positional arguments passes through unchanged (the hook would have found nothing to
  repeat there); every other call still runs the original hook.

Timing: one long-lived worker process per side builds the base and a wrapper; after two warm-up
steps the driver asks them for one step at a time, in turn (ours, reference, then the reverse
order), `--steps` times per mode, so that a slow spell of a shared machine slows both alike. The
table shows medians; a speed-up is the median of the per-step ratios reference / ours.

- construct: `Lumiere(unet, ...)` on the already built base, a fresh wrapper each time (deep copy
  of the base, freezing, shape inference, temporal blocks, hooks; ours also checks that its blocks
  start as identities).
  The reference runs one forward of the base per group of module names (four, empty groups
  included); ours runs one, which infers the shapes and checks the blocks.
- train step: `loss = mse(wrapper(video, timestep=t), target)` (train mode), backward, Adam step
  over the temporal parameters only (reference: `wrapper.parameters()`, which it overrides to
  return them; ours: `wrapper.temporal_parameters()`); the base is frozen on both sides.
- peak memory (`--rounds` fresh processes per side, alternating): a fresh process builds the
  base, the wrapper, the optimizer and the batch, records its resident set size (RSS,
  /proc/self/statm), runs two train steps and reports `ru_maxrss` (the kernel's high-water mark of
  its RSS) minus that baseline: the extra memory the step needs (activations, gradients, Adam
  state). tracemalloc cannot see torch's allocations, hence RSS.

Each worker also checks that its wrapper reproduces the base frame by frame at initialisation (the
temporal blocks start as identities), reported as `init max |wrapper - base|`.
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

UNET = {
    "sample_size": 64,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 1,
    "block_out_channels": [64, 128, 128, 256],
    "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    "norm_num_groups": 32,
    "attention_head_dim": 32,
}
CONV = [f"down_blocks.{i}.resnets.0" for i in range(4)] + [
    f"up_blocks.{i}.resnets.1" for i in range(4)
]
ATTN = ["mid_block"]
FRAMES, CHANNELS, SIZE = 8, 3, 64
MODES = ("construct", "train")
MEMORY_KINDS = ("train",)
# reference / ours (time, memory); none set: the issue asks for the figures, not a threshold
TARGETS: dict[str, float] = {}

WORKER = r"""
import builtins, json, resource, sys, time
import torch

impl, mode, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
setup = json.loads(sys.argv[4])
torch.set_num_threads(threads)
from diffusers import UNet2DModel

class TensorUNet(UNet2DModel):
    # the sample tensor alone: the reference's forward rearranges what the base returns
    def forward(self, sample, timestep):
        return super().forward(sample, timestep, return_dict=False)[0]

if impl == "ours":
    from lumiere import Lumiere

    def trainable(wrapper):
        return list(wrapper.temporal_parameters())

    def patch(wrapper):
        return wrapper
else:
    import lumiere_pytorch.lumiere as reference
    from lumiere_pytorch import Lumiere

    def _zip(*iterables):  # `a, b, c = zip(*[])` fails for an empty group of module names
        return builtins.zip(*iterables) if iterables else iter([(), (), ()])

    reference.zip = _zip

    def trainable(wrapper):
        return list(wrapper.parameters())  # overridden by the reference: temporal ones only

    def _tolerant(hook):
        def inner(module, args, kwargs):  # keyword-only call (diffusers' down blocks)
            return (args, kwargs) if not args else hook(module, args, kwargs)
        return inner

    def patch(wrapper):
        for module in wrapper.modules():
            hooks = module._forward_pre_hooks
            for key, hook in list(hooks.items()):
                if getattr(hook, "__name__", "") == "auto_repeat_tensors_for_time":
                    hooks[key] = _tolerant(hook)
        return wrapper

torch.manual_seed(0)
unet = TensorUNet(**setup["unet"])
kwargs = dict(image_size=setup["size"], unet_time_kwarg="timestep",
              conv_module_names=list(setup["conv"]), attn_module_names=list(setup["attn"]))
torch.manual_seed(0)
wrapper = patch(Lumiere(unet, **kwargs))
params = trainable(wrapper)
torch.manual_seed(0)
b, frames, size = setup["batch"], setup["frames"], setup["size"]
video = torch.rand(b, setup["channels"], frames, size, size)
target = torch.randn_like(video)
t = torch.randint(0, 1000, (b,))
opt = torch.optim.Adam(params, lr=1e-4)

with torch.no_grad():
    out = wrapper(video, timestep=t)
    frames_in = video.permute(0, 2, 1, 3, 4).reshape(b * frames, -1, size, size)
    base = unet(frames_in, timestep=t.repeat_interleave(frames))
    base = base.reshape(b, frames, *base.shape[1:]).permute(0, 2, 1, 3, 4)
assert isinstance(out, torch.Tensor) and out.shape == video.shape, type(out)

def construct():
    Lumiere(unet, **kwargs)

def train_step():
    wrapper.train()
    loss = torch.nn.functional.mse_loss(wrapper(video, timestep=t), target)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

steps = {"construct": construct, "train": train_step}
result = {
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "base_params": sum(p.numel() for p in unet.parameters()),
    "base_sum": float(sum(p.detach().double().sum() for p in unet.parameters())),
    "params": sum(p.numel() for p in params),
    "frozen": sum(p.numel() for p in wrapper.model.parameters() if not p.requires_grad),
    "input_sum": float(video.double().sum()),
    "init_error": float((out - base).abs().max()),
}
if mode.startswith("memory:"):
    step = steps[mode.split(":")[1]]
    start = rss_mib()
    step(); step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    result["peak_mib"] = peak - start
    print("RESULT " + json.dumps(result), flush=True)
else:  # timing server: one command per line from the driver, one time per line back
    print("READY " + json.dumps(result), flush=True)
    for line in sys.stdin:
        step = steps[line.strip()]
        start = time.perf_counter()
        step()
        print(f"TIME {time.perf_counter() - start}", flush=True)
"""


def _command(python: str, impl: str, mode: str, threads: int, batch: int) -> list[str]:
    setup = {
        "unet": UNET,
        "conv": CONV,
        "attn": ATTN,
        "batch": batch,
        "frames": FRAMES,
        "channels": CHANNELS,
        "size": SIZE,
    }
    return [python, "-c", WORKER, impl, mode, str(threads), json.dumps(setup)]


_ENV = {
    **os.environ,
    "TQDM_DISABLE": "1",
    "HF_HUB_OFFLINE": "1",
    "PYTHONWARNINGS": "ignore::FutureWarning",  # torch.jit.script deprecation, on import
}


def memory(python: str, impl: str, kind: str, threads: int, batch: int) -> float:
    """Extra peak RSS (MiB) of two `kind` steps, measured in a fresh process."""
    proc = subprocess.run(
        _command(python, impl, f"memory:{kind}", threads, batch),
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
    """A worker process that builds the base and a wrapper, then times one step per command."""

    def __init__(self, python: str, impl: str, threads: int, batch: int) -> None:
        self.proc = subprocess.Popen(
            _command(python, impl, "time", threads, batch),
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
    parser.add_argument("--ref-python", default="/tmp/refenv_lumiere/bin/python")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side and mode")
    parser.add_argument("--rounds", type=int, default=3, help="memory measurements per side")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1, help="videos per train step")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if not Path(args.ref_python).exists():
        raise SystemExit(f"--ref-python {args.ref_python} not found (see the docstring)")
    sides = {"ours": sys.executable, "reference": args.ref_python}
    impls = {"ours": "ours", "reference": "ref"}

    servers = {
        name: Server(python, impls[name], args.threads, args.batch)
        for name, python in sides.items()
    }
    infos = {name: server.info for name, server in servers.items()}
    for key in ("input_sum", "base_sum"):
        if infos["ours"][key] != infos["reference"][key]:
            raise SystemExit(f"the two sides got different inputs or bases ({key}): {infos}")
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
        for kind in MEMORY_KINDS:
            for name, python in order if round_index % 2 == 0 else order[::-1]:
                value = memory(python, impls[name], kind, args.threads, args.batch)
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
    mem_ratio = {kind: mem[("reference", kind)] / mem[("ours", kind)] for kind in MEMORY_KINDS}
    print(
        f"machine: {cpu_name()}, {platform.system()}; torch {infos['ours']['torch']} (ours), "
        f"{infos['reference']['torch']} (reference); {infos['ours']['threads']} threads; "
        f"batch {args.batch} x {FRAMES} frames of {SIZE}x{SIZE}, fp32; medians of {args.steps} "
        f"interleaved steps (time), {args.rounds} fresh processes (memory)"
    )
    print(
        f"base: UNet2DModel{UNET} ({infos['ours']['base_params']:,} parameters, frozen); conv "
        f"inflation after {CONV}, attention inflation after {ATTN}"
    )
    print(
        f"temporal parameters: {infos['ours']['params']:,} (ours), "
        f"{infos['reference']['params']:,} (reference); init max |wrapper - base|: "
        f"{infos['ours']['init_error']:.2g} (ours), {infos['reference']['init_error']:.2g} "
        "(reference)"
    )
    print("| | construct (s) | train step (s) | peak train memory (MiB) |")
    print("|---|---:|---:|---:|")
    for name in sides:
        print(
            f"| {name} | {med[(name, 'construct')]:.3f} | {med[(name, 'train')]:.3f} | "
            f"{mem[(name, 'train')]:.0f} |"
        )
    print(
        f"| reference / ours | {ratio['construct']:.2f}x | {ratio['train']:.2f}x | "
        f"{mem_ratio['train']:.2f}x |"
    )
    columns = [*MODES, "memory"]
    if TARGETS:
        values = {**ratio, "memory": mem_ratio["train"]}
        print(
            "| target | "
            + " | ".join(f">= {TARGETS[c]:.2f}x" if c in TARGETS else "" for c in columns)
            + " |"
        )
        print(
            "| met | "
            + " | ".join(
                ("yes" if values[c] >= TARGETS[c] else "NO") if c in TARGETS else ""
                for c in columns
            )
            + " |"
        )
    if args.json:
        report = {
            "machine": cpu_name(),
            "threads": args.threads,
            "batch": args.batch,
            "frames": FRAMES,
            "steps": args.steps,
            "rounds": args.rounds,
            "unet": UNET,
            "conv_module_names": CONV,
            "attn_module_names": ATTN,
            "workers": infos,
            "times_s": {f"{n}/{m}": v for (n, m), v in times.items()},
            "median_s": {f"{n}/{m}": v for (n, m), v in med.items()},
            "peak_mib": {f"{n}/{k}": v for (n, k), v in peaks.items()},
            "speedup": ratio,
            "memory_ratio": mem_ratio,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
