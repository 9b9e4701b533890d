"""A worker process of the benchmark harness, run under either interpreter (ours, or the
reference's own venv): it needs only the standard library, torch and what the spec imports.

    python tools/benchharness/worker.py REQUEST

REQUEST is JSON: {"spec": path, "mode": ..., "side": ..., "kind": ..., "func": ..., "params": {}}.

- mode "serve": `spec.build(side, params)`, print `READY <info>`, then for each line read on stdin
  (a step name) run that step once and print `TIME <seconds>` (CUDA synchronised around it).
- mode "memory": build, record the resident set (RSS, /proc/self/statm) and, on a CUDA device,
  the allocated CUDA memory; run the `kind` step twice; print `RESULT {"peak_mib": VmHWM (the
  kernel's high-water mark of this process's RSS) minus that RSS, "cuda_peak_mib":
  torch.cuda.max_memory_allocated minus the allocated memory before}`. tracemalloc cannot see
  torch's allocations, hence RSS.
- mode "call": print `RESULT <json of spec.<func>(params)>` (helpers such as a parity check's
  reference outputs).

Anything else the spec prints to stdout is ignored by the driver (it reads the prefixed lines).
"""

from __future__ import annotations

import importlib.util
import json
import resource
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

# tools/ on the path (not this folder), so that `import benchharness` works in any venv
sys.path[0] = str(Path(__file__).resolve().parent.parent)


def load(path: str) -> ModuleType:
    """The spec file as a module (not `__main__`: its command line does not run)."""
    found = importlib.util.spec_from_file_location("bench_spec", path)
    if found is None or found.loader is None:
        raise ImportError(f"cannot import the spec {path}")
    module = importlib.util.module_from_spec(found)
    sys.modules["bench_spec"] = module
    found.loader.exec_module(module)
    return module


def rss_mib() -> float:
    """The resident set now, MiB."""
    try:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:  # no /proc (macOS): the peak so far stands in for the baseline
        return peak_rss_mib()


def peak_rss_mib() -> float:
    """This process's high-water mark of its resident set, MiB (VmHWM; ru_maxrss without /proc)."""
    try:
        with open("/proc/self/status") as file:
            return next(int(line.split()[1]) for line in file if line.startswith("VmHWM:")) / 1024
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def serve(request: dict[str, Any], module: ModuleType) -> None:
    import torch

    params = request["params"]
    if params.get("threads"):
        torch.set_num_threads(int(params["threads"]))
    cuda = str(params.get("device", "cpu")).startswith("cuda")
    workload = module.build(request["side"], params)
    info = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "same": workload.same,
        **workload.info,
    }

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    if request["mode"] == "memory":
        step = workload.steps[request["kind"]]
        sync()
        base = rss_mib()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            cuda_base = torch.cuda.memory_allocated()
        step()
        step()
        sync()
        result = {"peak_mib": peak_rss_mib() - base, "cuda_peak_mib": None}
        if cuda:
            result["cuda_peak_mib"] = (torch.cuda.max_memory_allocated() - cuda_base) / 2**20
        print("RESULT " + json.dumps(result), flush=True)
        return
    print("READY " + json.dumps(info), flush=True)
    for line in sys.stdin:  # one step name per line from the driver, one time per line back
        step = workload.steps[line.strip()]
        sync()
        start = time.perf_counter()
        step()
        sync()
        print(f"TIME {time.perf_counter() - start}", flush=True)


def main() -> None:
    request = json.loads(sys.argv[1])
    module = load(request["spec"])
    if request["mode"] == "call":
        result = getattr(module, request["func"])(request["params"])
        print("RESULT " + json.dumps(result), flush=True)
    else:
        serve(request, module)


if __name__ == "__main__":
    main()
