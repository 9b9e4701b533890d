"""LFQ's entropy loss: vector-quantize-pytorch's formula against `phenaki.quantize.FactorizedLFQ`.

Forward + backward of the quantiser alone in training mode (entropy and codebook terms included),
`LFQ(dim=128, codebook_size=4096)` on 2 x 320 tokens (the benchmark configuration's token count),
fp32, `--threads` threads; the two run alternately `--repeats` times and the medians are printed.

    .venv/bin/python packages/phenaki/benchmarks/bench_lfq.py --repeats 25
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from vector_quantize_pytorch import LFQ

from phenaki.quantize import FactorizedLFQ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--codebook-size", type=int, default=4096)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    library = LFQ(dim=128, codebook_size=args.codebook_size, channel_first=False)
    ours = FactorizedLFQ(dim=128, codebook_size=args.codebook_size, channel_first=False)
    ours.load_state_dict(library.state_dict())
    x = torch.randn(2, 320, 128, requires_grad=True)
    times: dict[str, list[float]] = {"vector-quantize-pytorch LFQ": [], "FactorizedLFQ": []}
    for _ in range(args.repeats + 2):  # the first two rounds warm up
        for name, module in zip(times, (library, ours), strict=True):
            start = time.perf_counter()
            quantized, _, aux = module(x)
            (quantized.sum() + aux).backward()
            times[name].append(time.perf_counter() - start)
    print(f"torch {torch.__version__}, {args.threads} threads, codebook {args.codebook_size}")
    print("| LFQ forward + backward, 640 tokens | median ms |\n|---|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values[2:]) * 1000:.1f} |")


if __name__ == "__main__":
    main()
