"""Benchmark of the MP core: prints a markdown table (not a test; run it by hand or `nox -s bench`).

1. `MPConv3d` forward + backward (training mode: forced weight normalisation included) against
   `nn.Conv3d` of the same shape: b=2, c=64, t=8, 32x32, k=3. Target: at most 1.15x.
2. `MPAttention` (SDPA) against the reference's MPAttention (forced-weight-normalised projections,
   memory key/values, F.normalize pixel norm, explicit q k^T, softmax, einsum; its behaviour is
   re-created below, since the reference is not a dependency):
   b=8, heads=4, n=512, dim_head=64. Target: at least 1.5x faster forward + backward on CPU,
   lower peak memory.

Timings are medians over alternating repeats. Peak memory is the growth of the process's peak
resident set (VmHWM) during one forward + backward, measured in a fresh subprocess per variant.

Usage: python bench_core.py [--repeats N] [--quick]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from mp_layers import MPAttention, MPConv3d

CONV = dict(batch=2, channels=64, frames=8, size=32, kernel=3)
ATTN = dict(batch=8, heads=4, tokens=512, dim_head=64)


def reference_weight(weight: Tensor, eps: float = 1e-4) -> Tensor:
    """The reference's `normalize_weight`: F.normalize of each flattened row, times sqrt(fan_in)."""
    rows = weight.flatten(1)
    return (F.normalize(rows, dim=-1, eps=eps) * math.sqrt(rows.shape[1])).view_as(weight)


class ReferenceLinear(nn.Module):
    """The reference's forced-weight-normalised Linear (renormalised in place in training)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim_out, dim_in))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            with torch.no_grad():
                self.weight.copy_(reference_weight(self.weight))
        return F.linear(x, reference_weight(self.weight) / math.sqrt(self.weight.shape[1]))


class ReferenceAttention(nn.Module):
    """The reference's MPAttention, behaviour for behaviour: MP projections, memory key/values,
    `F.normalize`-based pixel norm, explicit q k^T similarity, softmax, dropout module, einsum,
    and its residual `MPAdd` (with the reference's balance)."""

    def __init__(self, dim: int, heads: int, dim_head: int, num_mem_kv: int = 4) -> None:
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        self.mem_kv = nn.Parameter(torch.randn(2, heads, num_mem_kv, dim_head))
        self.to_qkv = ReferenceLinear(dim, 3 * heads * dim_head)
        self.to_out = ReferenceLinear(heads * dim_head, dim)
        self.dropout = nn.Dropout(0.0)

    def forward(self, x: Tensor) -> Tensor:
        def pixel_norm(t: Tensor) -> Tensor:
            return F.normalize(t, dim=-1, eps=1e-4) * math.sqrt(t.shape[-1])

        qkv = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in qkv)
        mem_k, mem_v = (repeat(t, "h n d -> b h n d", b=x.shape[0]) for t in self.mem_kv)
        k, v = torch.cat((mem_k, k), dim=-2), torch.cat((mem_v, v), dim=-2)
        q, k, v = (pixel_norm(t) for t in (q, k, v))
        sim = torch.einsum("b h i d, b h j d -> b h i j", q * self.scale, k)
        attn = self.dropout(sim.softmax(dim=-1))
        out = rearrange(
            torch.einsum("b h i j, b h j d -> b h i d", attn, v), "b h n d -> b n (h d)"
        )
        t = 0.3
        return (self.to_out(out) * (1 - t) + x * t) / math.sqrt((1 - t) ** 2 + t**2)


def make_case(name: str) -> tuple[nn.Module, Tensor]:
    torch.manual_seed(0)
    if name in ("MPConv3d", "nn.Conv3d"):
        c, k = CONV["channels"], CONV["kernel"]
        module: nn.Module = (
            MPConv3d(c, c, k) if name == "MPConv3d" else nn.Conv3d(c, c, k, padding=k // 2)
        )
        x = torch.randn(CONV["batch"], c, CONV["frames"], CONV["size"], CONV["size"])
    else:
        dim = ATTN["heads"] * ATTN["dim_head"]
        if name == "MPAttention":
            module = MPAttention(dim, heads=ATTN["heads"], dim_head=ATTN["dim_head"])
        else:
            module = ReferenceAttention(dim, ATTN["heads"], ATTN["dim_head"])
        x = torch.randn(ATTN["batch"], ATTN["tokens"], dim)
    return module.train(), x.requires_grad_()


def step(module: nn.Module, x: Tensor) -> None:
    module.zero_grad(set_to_none=True)
    module(x).square().mean().backward()


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(a: str, b: str, repeats: int) -> tuple[float, float]:
    """Median seconds per forward + backward of a and b, runs alternating a, b, a, b, ..."""
    cases = {name: make_case(name) for name in (a, b)}
    for name in (a, b):
        for _ in range(2):
            step(*cases[name])
    times: dict[str, list[float]] = {a: [], b: []}
    for _ in range(repeats):
        for name in (a, b):
            times[name].append(timed(lambda name=name: step(*cases[name])))
    return statistics.median(times[a]), statistics.median(times[b])


def high_water_mib() -> float:
    """This process's peak resident set (VmHWM). Unlike `ru_maxrss`, which Linux carries over
    from the parent across fork + exec, VmHWM starts afresh in a new program."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def peak_memory_mib(name: str) -> float:
    """Peak-RSS growth of one forward + backward, in a fresh interpreter."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import bench_core as b; "
        "m, x = b.make_case(sys.argv[2]); before = b.high_water_mib(); b.step(m, x); "
        "print(b.high_water_mib() - before)"
    )
    folder = str(Path(__file__).parent)
    out = subprocess.run(
        [sys.executable, "-c", code, folder, name], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="3 repeats, no memory measurement")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats

    print(
        f"machine: {platform.machine()} {platform.processor() or ''} "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}, "
        f"torch {torch.__version__}, fp32, CPU"
    )
    conv = (
        f"b={CONV['batch']}, c={CONV['channels']}, t={CONV['frames']}, "
        f"{CONV['size']}x{CONV['size']}, k={CONV['kernel']}"
    )
    attn = (
        f"b={ATTN['batch']}, heads={ATTN['heads']}, n={ATTN['tokens']}, dim_head={ATTN['dim_head']}"
    )
    print(f"repeats: {repeats} alternating, medians of forward + backward (training mode)\n")
    print("| benchmark | ours (ms) | baseline (ms) | ratio ours/baseline | target |")
    print("|---|---|---|---|---|")
    ours, base = compare("MPConv3d", "nn.Conv3d", repeats)
    print(
        f"| MPConv3d vs nn.Conv3d ({conv}) | {ours * 1e3:.1f} | {base * 1e3:.1f} "
        f"| {ours / base:.2f}x | <= 1.15x |"
    )
    ours, base = compare("MPAttention", "reference", repeats)
    print(
        f"| MPAttention (SDPA) vs reference einsum-softmax ({attn}) | {ours * 1e3:.1f} "
        f"| {base * 1e3:.1f} | {ours / base:.2f}x ({base / ours:.2f}x faster) | >= 1.5x faster |"
    )
    if not args.quick:
        mine, theirs = peak_memory_mib("MPAttention"), peak_memory_mib("reference")
        print(
            f"\npeak memory of one attention forward + backward (peak-RSS growth): "
            f"MPAttention {mine:.0f} MiB, reference {theirs:.0f} MiB "
            f"({theirs / max(mine, 1e-9):.1f}x lower)"
        )


if __name__ == "__main__":
    main()
