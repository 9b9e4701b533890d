"""Winograd against oneDNN's direct 3x3x3 convolution, per layer shape (not a test).

For each shape: the eval forward (`winograd_conv3d_transformed` with a pre-transformed kernel,
as `MPConv3d` runs it in eval) and forward + backward (`winograd_conv3d`, kernel transformed
every call, as in training) against `F.conv3d(x, w, padding=1)` on channels-last input. Medians
of alternating repeats, float32, the process's default thread count; `winograd_worthwhile` says
which ones `MPConv3d` sends to Winograd. The default shapes are the 3x3x3 layers of the
karras-unet3d benchmark configuration, plus larger and smaller ones.

Usage: python bench_winograd.py [--repeats N] [--shapes b,cin,cout,t,h,w ...]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mp_layers.winograd import (
    winograd_conv3d,
    winograd_conv3d_transformed,
    winograd_weight,
    winograd_worthwhile,
)

SHAPES = [
    (2, 32, 32, 8, 32, 32),
    (2, 64, 32, 8, 32, 32),
    (2, 64, 64, 8, 32, 32),
    (2, 64, 64, 8, 16, 16),
    (2, 128, 64, 8, 16, 16),
    (2, 128, 128, 4, 16, 16),
    (2, 256, 128, 4, 16, 16),
    (2, 128, 128, 4, 8, 8),
    (2, 256, 128, 4, 8, 8),
    (8, 256, 256, 8, 16, 16),
]


def median_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():  # alternate, so drift hits every variant alike
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(ts) for name, ts in times.items()}


def measure(shape: tuple[int, ...], repeats: int) -> str:
    batch, c_in, c_out, *sizes = shape
    x = torch.randn(batch, c_in, *sizes).contiguous(memory_format=torch.channels_last_3d)
    w = torch.randn(c_out, c_in, 3, 3, 3) / (27 * c_in) ** 0.5
    w_cl = w.contiguous(memory_format=torch.channels_last_3d)
    transformed = winograd_weight(w)
    xg, wg = x.clone().requires_grad_(), w_cl.clone().requires_grad_()
    grad = torch.randn(batch, c_out, *sizes).contiguous(memory_format=torch.channels_last_3d)

    def train(conv: Callable) -> Callable[[], object]:
        return lambda: torch.autograd.grad(conv(xg, wg), (xg, wg), grad)

    with torch.no_grad():
        ev = median_ms(
            {
                "direct": lambda: F.conv3d(x, w_cl, padding=1),
                "winograd": lambda: winograd_conv3d_transformed(x, transformed),
            },
            repeats,
        )
    tr = median_ms(
        {
            "direct": train(lambda a, b: F.conv3d(a, b, padding=1)),
            "winograd": train(winograd_conv3d),
        },
        repeats,
    )
    used = "/".join("yes" if winograd_worthwhile(x, w, backward=b) else "no" for b in (False, True))
    cells = [
        f"{ev['direct']:.1f}",
        f"{ev['winograd']:.1f}",
        f"{ev['direct'] / ev['winograd']:.2f}x",
        f"{tr['direct']:.1f}",
        f"{tr['winograd']:.1f}",
        f"{tr['direct'] / tr['winograd']:.2f}x",
    ]
    dims = "x".join(map(str, sizes))
    return f"| {batch} | {c_in}->{c_out} | {dims} | " + " | ".join(cells) + f" | {used} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--shapes", nargs="*", help="b,cin,cout,t,h,w (default: a fixed list)")
    args = parser.parse_args()
    shapes = [tuple(map(int, s.split(","))) for s in args.shapes] if args.shapes else SHAPES
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, float32, median of {args.repeats}"
    )
    print(
        "| batch | channels | t x h x w | eval direct ms | eval winograd ms | speed-up "
        "| train direct ms | train winograd ms | speed-up | MPConv3d uses it (eval/train) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        print(measure(shape, args.repeats), flush=True)


if __name__ == "__main__":
    main()
