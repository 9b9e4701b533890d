"""The benchmark harness of the workspace: ours against a reference implementation, side by side.

Each package keeps a short spec, `packages/*/benchmarks/*_vs_reference.py`: WHAT is compared
(its sides, how each side builds its model and inputs in `build(side, params)`, which steps are
timed and measured, the columns of its table, the reference's distribution and version). This
package decides HOW, the same for every spec:

- one long-lived worker process per side (`worker.py`): ours under the driver's interpreter (the
  nox session's env), the reference under `--ref-python` (its own venv, which needs nothing of
  the workspace but torch and the reference); the spec file is imported there and builds its side;
- after `warmup` (2) runs per step and side, `--steps` timed runs per step and side, interleaved:
  one run at a time, in turn, the order reversed every time, so that a slow spell of a shared
  machine slows every side alike; on a CUDA device each run is synchronised;
- medians, and the speed-up as the median of the per-step ratios reference / ours; the spread
  (min-max) of every figure in a line after the table;
- peak memory in `--rounds` fresh processes per side and kind, alternating the order: VmHWM (the
  kernel's high-water mark of the RSS) minus the RSS before two runs of the step, and on a CUDA
  device `torch.cuda.max_memory_allocated` over the same two runs;
- a header (machine, torch per side, threads, device, the spec's setting), the markdown table the
  READMEs quote, the spec's notes, and with `--json PATH` every raw figure.

Common flags: `--ref-python`, `--steps` (or the spec's name for it), `--rounds`, `--threads`,
`--device`, `--skip-reference`, `--json`; a spec may add its own.
"""

from benchharness.process import Server, call, call_function
from benchharness.run import Run, main
from benchharness.spec import Bench, Column, Side, Workload, no_higher, train_step

__all__ = [
    "Bench",
    "Column",
    "Run",
    "Server",
    "Side",
    "Workload",
    "call",
    "call_function",
    "main",
    "no_higher",
    "train_step",
]
