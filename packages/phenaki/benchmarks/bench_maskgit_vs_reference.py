"""Benchmark `phenaki.MaskGit` and `phenaki.Phenaki.sample` against phenaki-pytorch 0.5.0.

The reference lives in its own environment (it pulls in other versions of shared helpers):

    uv venv --python 3.11 /tmp/refenv_phenaki
    uv pip install --python /tmp/refenv_phenaki phenaki-pytorch==0.5.0 torch==<ours>
    .venv/bin/python packages/phenaki/benchmarks/bench_maskgit_vs_reference.py \
        --ref-python /tmp/refenv_phenaki/bin/python --steps 10

(`<ours>`: `.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])'`.
`uvx nox -s bench_reference_maskgit` does all of this.)

Same arguments on both sides: `MaskGit(num_tokens=4096, max_seq_len=1024, dim=256, dim_context=64,
depth=4, heads=4, dim_head=64)` and, for sampling, the tokenizer `CViViT(dim=64,
codebook_size=4096, image_size=64, patch_size=8, temporal_patch_size=2, spatial_depth=1,
temporal_depth=1, dim_head=32, heads=2, use_vgg_and_gan=False)` (9 frames -> a `(5, 8, 8)` token
grid, n = 320), each built after `torch.manual_seed(0)`. Inputs, drawn after `torch.manual_seed(0)`
with the same calls on both sides (identical: checked): token ids `(2, 320)` uniform in
`[0, 4096)`, a random ~50 % of them replaced by the mask id, and a 16-token text context
`(2, 16, 64)` from `torch.randn` with an all-True text mask. fp32,
`torch.set_num_threads(--threads)` (2). Timing: one long-lived worker process per side builds its
models; after two warm-up steps the driver asks them for one step at a time, in turn (ours,
reference, then the reverse order), `--steps` times per mode, so that a slow spell of a shared
machine slows both alike. The table shows medians; a speed-up is the median of the per-step ratios
reference / ours.

- train step: `logits = maskgit(ids, video_patch_shape=(5, 8, 8), context=context,
  text_mask=mask, cond_drop_prob=0.)` (train mode), cross-entropy on the masked positions,
  backward, Adam step. The reference has 5,120 more parameters, which hardly change the work:
  a bias on its output layer (4,096; ours has none) and an unused context norm in each
  self-attention layer (256 each; 64 each in its CViViT's four).
- sample: `Phenaki(maskgit=..., cvivit=..., steps=18).sample(num_frames=9, ..., cond_scale=3.)`,
  no critic: 18 guided MaskGit passes over the 320 tokens, then the CViViT decode of the token grid
  to a `(2, 3, 9, 64, 64)` video (the decode is included on both sides, with the same tokenizer
  size). Ours takes the embeddings as `text_embeds=context, text_mask=mask` (its `text_encoder`
  is a callable that is never called). The reference's `sample` only takes texts: the worker
  replaces the instance's `encode_texts` (T5) by a function returning the same fixed embeddings
  and passes two empty texts; the reference then derives its text mask as "embedding != 0"
  (all True here). Guidance: ours runs one forward of a doubled batch per step, the reference two
  forwards (conditional, then text dropped). The reference's `Phenaki.__init__` also asks
  Hugging Face for the T5 config (`get_encoded_dim`) even when given `text_embed_dim`; the worker
  replaces that function by one returning 64, so nothing is downloaded.
- peak memory (`--rounds` fresh processes per side and kind, alternating): a fresh process
  builds the models, the optimizer and the inputs, records its resident set size (RSS,
  /proc/self/statm), runs two train steps (or two samples) and reports `ru_maxrss` (the kernel's
  high-water mark of its RSS) minus that baseline: the extra memory the step needs (activations,
  gradients, Adam state). tracemalloc cannot see torch's allocations, hence RSS.

Targets (the issue): train >= 1.3x faster, sample >= 1.3x faster, peak memory no higher.
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

MASKGIT = {
    "num_tokens": 4096,
    "max_seq_len": 1024,
    "dim": 256,
    "dim_context": 64,
    "depth": 4,
    "heads": 4,
    "dim_head": 64,
}
CVIVIT = {
    "dim": 64,
    "codebook_size": 4096,
    "image_size": 64,
    "patch_size": 8,
    "temporal_patch_size": 2,
    "spatial_depth": 1,
    "temporal_depth": 1,
    "dim_head": 32,
    "heads": 2,
    "use_vgg_and_gan": False,
}
BATCH, FRAMES, GRID, TEXT_LEN, SAMPLE_STEPS, COND_SCALE = 2, 9, (5, 8, 8), 16, 18, 3.0
MODES = ("train", "sample")
TARGETS = {"train": 1.3, "sample": 1.3}  # reference / ours, time
MEMORY_TARGET = 1.0  # reference / ours: ours no higher

WORKER = r"""
import json, resource, sys, time
import torch
import torch.nn.functional as F

impl, mode, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
maskgit_config, cvivit_config = json.loads(sys.argv[4]), json.loads(sys.argv[5])
batch, frames, grid, text_len = int(sys.argv[6]), int(sys.argv[7]), tuple(json.loads(sys.argv[8])), int(sys.argv[9])
sample_steps, cond_scale = int(sys.argv[10]), float(sys.argv[11])
torch.set_num_threads(threads)
if impl == "ours":
    from phenaki import CViViT, MaskGit, Phenaki
else:
    import phenaki_pytorch.phenaki_pytorch as ref
    from phenaki_pytorch import CViViT, MaskGit, Phenaki
    # Phenaki.__init__ asks Hugging Face for the T5 config even when given text_embed_dim
    ref.get_encoded_dim = lambda name: maskgit_config["dim_context"]
torch.manual_seed(0)
maskgit = MaskGit(**maskgit_config)
torch.manual_seed(0)
cvivit = CViViT(**cvivit_config)
torch.manual_seed(0)
n = grid[0] * grid[1] * grid[2]
num_tokens = maskgit_config["num_tokens"]
ids = torch.randint(0, num_tokens, (batch, n))
masked = torch.rand(batch, n) < 0.5
context = torch.randn(batch, text_len, maskgit_config["dim_context"])
text_mask = torch.ones(batch, text_len, dtype=torch.bool)
inputs = ids.masked_fill(masked, num_tokens)  # num_tokens is the mask id on both sides

def unused_text_encoder(texts, device):
    raise AssertionError("the benchmark passes text embeddings")

if impl == "ours":
    phenaki = Phenaki(maskgit=maskgit, cvivit=cvivit, steps=sample_steps, text_encoder=unused_text_encoder)

    def sample():
        return phenaki.sample(num_frames=frames, text_embeds=context, text_mask=text_mask, cond_scale=cond_scale)
else:
    phenaki = Phenaki(maskgit=maskgit, cvivit=cvivit, steps=sample_steps, text_embed_dim=maskgit_config["dim_context"])
    # the reference's sample takes texts only: its T5 encoder returns the fixed embeddings here
    phenaki.encode_texts = lambda texts, output_device=None: context.to(output_device)

    def sample():
        return phenaki.sample(num_frames=frames, texts=[""] * batch, cond_scale=cond_scale)
cvivit_params = sum(p.numel() for p in cvivit.parameters())
del cvivit  # Phenaki keeps its own evaluation copy
opt = torch.optim.Adam(maskgit.parameters(), lr=1e-4)

def train_step():
    maskgit.train()
    logits = maskgit(inputs, video_patch_shape=grid, context=context, text_mask=text_mask, cond_drop_prob=0.0)
    loss = F.cross_entropy(logits[masked], ids[masked])
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

def sample_step():
    video = sample()
    size = cvivit_config["image_size"]
    assert video.shape == (batch, 3, frames, size, size), video.shape

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

steps = {"train": train_step, "sample": sample_step}
result = {
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "maskgit_params": sum(p.numel() for p in maskgit.parameters()),
    "cvivit_params": cvivit_params,
    "input_sum": [int(ids.sum()), int(masked.sum()), float(context.double().sum())],
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
        json.dumps(MASKGIT),
        json.dumps(CVIVIT),
        str(BATCH),
        str(FRAMES),
        json.dumps(GRID),
        str(TEXT_LEN),
        str(SAMPLE_STEPS),
        str(COND_SCALE),
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
    """A worker process that builds the models, then times one step per command it is sent."""

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
    n = GRID[0] * GRID[1] * GRID[2]
    print(
        f"machine: {cpu_name()}, {platform.system()}; torch {infos['ours']['torch']} (ours), "
        f"{infos['reference']['torch']} (reference); {infos['ours']['threads']} threads; "
        f"batch {BATCH} x {n} tokens {GRID} + {TEXT_LEN} text tokens, fp32; sample: "
        f"{SAMPLE_STEPS} steps, cond_scale {COND_SCALE}, {FRAMES} frames decoded; medians of "
        f"{args.steps} interleaved steps (time), {args.rounds} fresh processes (memory)"
    )
    print(
        f"config: MaskGit{MASKGIT}; CViViT{CVIVIT}; MaskGit parameters: "
        f"{infos['ours']['maskgit_params']:,} (ours), {infos['reference']['maskgit_params']:,} "
        f"(reference); CViViT parameters: {infos['ours']['cvivit_params']:,} (ours), "
        f"{infos['reference']['cvivit_params']:,} (reference)"
    )
    print("| | train step (s) | sample (s) | peak train memory (MiB) | peak sample memory (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for name in sides:
        print(
            f"| {name} | {med[(name, 'train')]:.3f} | {med[(name, 'sample')]:.3f} | "
            f"{mem[(name, 'train')]:.0f} | {mem[(name, 'sample')]:.0f} |"
        )
    print(
        f"| reference / ours | {ratio['train']:.2f}x | {ratio['sample']:.2f}x | "
        f"{mem_ratio['train']:.2f}x | {mem_ratio['sample']:.2f}x |"
    )
    met = [ratio[mode] >= TARGETS[mode] for mode in MODES]
    met += [mem_ratio[kind] >= MEMORY_TARGET for kind in MODES]
    targets = [f">= {TARGETS[mode]:.2f}x" for mode in MODES]
    targets += [f">= {MEMORY_TARGET:.2f}x (no higher)" for _ in MODES]
    print(f"| target | {' | '.join(targets)} |")
    print(f"| met | {' | '.join('yes' if ok else 'NO' for ok in met)} |")


if __name__ == "__main__":
    main()
