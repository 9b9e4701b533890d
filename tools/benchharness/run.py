"""The command line and the measurement loop: interleaved timings, then fresh-process memory."""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from benchharness import report
from benchharness.process import Server, call
from benchharness.spec import Bench, Column, Side


def parse(bench: Bench, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=bench.description.splitlines()[0])
    parser.add_argument("--ref-python", default=bench.ref_python)
    parser.add_argument(
        bench.steps_flag,
        dest="steps",
        type=int,
        default=bench.steps,
        help="timed steps per side and mode",
    )
    parser.add_argument(
        "--rounds", type=int, default=bench.rounds, help="memory measurements per side"
    )
    parser.add_argument(
        "--threads", type=int, default=bench.threads, help="torch threads (none: torch's default)"
    )
    parser.add_argument("--device", default="cpu", help="torch device of both sides (cpu, cuda)")
    parser.add_argument("--skip-reference", action="store_true", help="time our sides only")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    if bench.arguments is not None:
        bench.arguments(parser)
    args = parser.parse_args(argv)
    if not args.skip_reference and not Path(args.ref_python).exists():
        raise SystemExit(f"--ref-python {args.ref_python} not found (see the docstring)")
    return args


class Run:
    """One benchmark run: the workers, the raw figures and their medians, for the spec's hooks."""

    def __init__(self, bench: Bench, args: argparse.Namespace) -> None:
        self.bench, self.args = bench, args
        self.sides = [s for s in bench.sides if not (s.reference and args.skip_reference)]
        self.has_reference = any(side.reference for side in self.sides)
        self.params = {**bench.params(args), "threads": args.threads, "device": args.device}
        self.columns: list[Column] = (
            bench.columns(args) if callable(bench.columns) else list(bench.columns)
        )
        self.modes = list(dict.fromkeys(c.key for c in self.columns if not c.memory and c.per_step))
        self.memory_kinds = list(dict.fromkeys(c.key for c in self.columns if c.memory))
        self.servers: dict[str, Server] = {}
        self.infos: dict[str, dict[str, Any]] = {}
        self.times: dict[tuple[str, str], list[float]] = {}
        self.peaks: dict[tuple[str, str], list[float]] = {}
        self.cuda_peaks: dict[tuple[str, str], list[float]] = {}

    def python(self, side: Side) -> str:
        return str(self.args.ref_python) if side.reference else sys.executable

    def request(self, side: Side, **more: Any) -> dict[str, Any]:
        return {"spec": self.bench.file, "side": side.name, "params": self.params, **more}

    def time(self, side: str, step: str) -> float:
        """One more timed run of `step` by a side's running worker (for `after_timing`)."""
        return self.servers[side].time(step)

    def median(self, side: str, key: str) -> float:
        return statistics.median(self.times[(side, key)])

    def memory(self, side: str, kind: str) -> float:
        return statistics.median(self.peaks[(side, kind)])

    def start(self) -> None:
        for side in self.sides:
            server = Server(self.python(side), self.request(side), self.bench.env)
            self.servers[side.name] = server
            self.infos[side.name] = server.info
        checks = {name: info["same"] for name, info in self.infos.items()}
        if len({repr(value) for value in checks.values()}) > 1:
            raise SystemExit(f"the sides got different inputs or weights: {checks}")

    def time_modes(self) -> None:
        for mode in self.modes:
            for server in self.servers.values():  # warm-up: allocator, oneDNN primitive caches
                for _ in range(self.bench.warmup):
                    server.time(mode)
            for step in range(self.args.steps):
                names = list(self.servers) if step % 2 == 0 else list(self.servers)[::-1]
                for name in names:  # interleaved: a slow spell of the machine hits every side
                    self.times.setdefault((name, mode), []).append(self.servers[name].time(mode))
            print(f"{mode}: {self.args.steps} interleaved steps per side done", file=sys.stderr)

    def close(self) -> None:
        for server in self.servers.values():
            server.close()

    def measure_memory(self) -> None:
        for round_index in range(self.args.rounds):
            for kind in self.memory_kinds:
                for side in self.sides if round_index % 2 == 0 else self.sides[::-1]:
                    request = self.request(side, mode="memory", kind=kind)
                    result = call(self.python(side), request, self.bench.env)
                    self.peaks.setdefault((side.name, kind), []).append(result["peak_mib"])
                    if result["cuda_peak_mib"] is not None:
                        cuda = self.cuda_peaks.setdefault((side.name, kind), [])
                        cuda.append(result["cuda_peak_mib"])
        if self.memory_kinds:
            print("memory done", file=sys.stderr)


def main(bench: Bench, argv: list[str] | None = None) -> Run:
    """Parse the command line, run the benchmark, print its header, table and notes."""
    run = Run(bench, parse(bench, argv))
    try:
        run.start()
        run.time_modes()
        if bench.after_timing is not None:
            bench.after_timing(run)
    finally:
        run.close()
    run.measure_memory()
    print("\n".join(report.lines(run)))
    if run.args.json:
        report.write_json(run, run.args.json)
    return run
