"""Trainer overhead per step versus a bare PyTorch training loop on a tiny model.

Both loops train the same MLP with Adam on the same in-memory data and batch size. The bare loop is
`zero_grad / forward / backward / step` over a shuffled DataLoader. The Trainer adds what it does
every step: sharded sampler, `send_to_device`, the cross-process loss reduction with its host sync
and non-finite check, a CSV row and a tqdm update (bar disabled here); EMA is measured separately.
Per-step time is the median over `--repeats` interleaved runs of (time of the last `--steps -
--warmup` steps) / their count; checkpoints, plots and start-up are outside the timed window.

    python packages/mp-layers/benchmarks/bench_trainer_overhead.py [--steps 300] [--device cpu]
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import tempfile
import time
from typing import Any

import torch
from torch import nn

from mp_layers.training import Trainer, TrainerConfig, read_metrics


class Pairs(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int, dim: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, dim, generator=generator)
        self.y = torch.randn(n, dim, generator=generator)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index], "y": self.y[index]}


def make_model(dim: int, hidden: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))


def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return nn.functional.mse_loss(model(batch["x"]), batch["y"])


def bare_loop(args: argparse.Namespace) -> float:
    device = torch.device(args.device)
    model = make_model(args.dim, args.hidden).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader: torch.utils.data.DataLoader[dict[str, torch.Tensor]] = torch.utils.data.DataLoader(
        Pairs(args.samples, args.dim), batch_size=args.batch_size, shuffle=True, drop_last=True
    )
    step, start = 0, 0.0
    while step < args.steps:
        for batch in loader:
            if step == args.warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model, batch).backward()
            optimizer.step()
            step += 1
            if step == args.steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / (args.steps - args.warmup)


def trainer_loop(args: argparse.Namespace, *, ema: bool) -> float:
    with tempfile.TemporaryDirectory() as out:
        config = TrainerConfig(
            out_dir=out,
            steps=args.steps,
            batch_size=args.batch_size,
            save_every=0,
            log_every=50,
            ema_beta=0.999 if ema else None,
            ema_update_after_step=0,
            progress_bar=False,
            cpu=args.device == "cpu",
        )
        trainer = Trainer(
            model=make_model(args.dim, args.hidden),
            data=Pairs(args.samples, args.dim),
            optimizer_factory=functools.partial(torch.optim.Adam, lr=1e-3),
            config=config,
            loss_fn=loss_fn,
        )
        trainer.fit()
        times = {int(r["step"]): float(r["time_s"]) for r in read_metrics(f"{out}/metrics.csv")}
    return (times[args.steps] - times[args.warmup]) / (args.steps - args.warmup)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if "model name" in line]
        return f"{names[0]} x {len(names)}" if names else platform.processor()
    except OSError:
        return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else _cpu_name()
    print(f"machine: {platform.machine()} {device_name or 'cpu'}, {platform.system()}")
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    params = sum(p.numel() for p in make_model(args.dim, args.hidden).parameters())
    print(
        f"config: MLP {args.dim}-{args.hidden}-{args.dim} ({params / 1e6:.2f} M params), Adam, "
        f"batch {args.batch_size}, {args.steps} steps ({args.warmup} warm-up), device "
        f"{args.device}, median of {args.repeats} interleaved repeats"
    )
    results: dict[str, list[float]] = {"bare loop": [], "Trainer": [], "Trainer + EMA": []}
    runs: dict[str, Any] = {
        "bare loop": lambda: bare_loop(args),
        "Trainer": lambda: trainer_loop(args, ema=False),
        "Trainer + EMA": lambda: trainer_loop(args, ema=True),
    }
    for _ in range(args.repeats):
        for name, run in runs.items():
            results[name].append(run())
    bare = statistics.median(results["bare loop"])
    print(f"{'loop':<16}{'ms/step':>10}{'overhead':>10}")
    for name, values in results.items():
        per_step = statistics.median(values)
        print(f"{name:<16}{per_step * 1e3:>10.3f}{(per_step / bare - 1) * 100:>9.1f}%")


if __name__ == "__main__":
    main()
