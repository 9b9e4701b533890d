"""`TrainerConfig`: every plain (JSON-serialisable) setting of the training loop, validated once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mp_layers.typecheck import typechecked

MIXED_PRECISION = ("no", "bf16", "fp16")
DISTRIBUTED = ("ddp", "fsdp")
REPORT_TO = ("none", "tensorboard", "wandb", "trackio")


def _fail(name: str, expected: str, value: object) -> ValueError:
    return ValueError(f"TrainerConfig.{name}: expected {expected}, got {value!r}")


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(name, f"an int >= {minimum}", value)


def _check_float(name: str, value: object, *, low: float, high: float) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if not ok or not low <= float(value) <= high:  # type: ignore[arg-type]
        raise _fail(name, f"a float in [{low}, {high}]", value)


@typechecked
@dataclass
class TrainerConfig:
    """Settings of `Trainer`; saved verbatim into every checkpoint's `state.json`.

    Batch sizes are per process: with `n` processes and `grad_accum_steps = k` one optimizer step
    sees `batch_size * k * n` samples. A "step" is always one optimizer step.

    Fields:
        out_dir: run folder (checkpoints/, samples/, metrics.csv, loss.png).
        steps: total optimizer steps of the run (a resumed run continues up to this number).
        batch_size: samples per micro-batch and process.
        grad_accum_steps: micro-batches accumulated per optimizer step.
        max_grad_norm: clip the global gradient norm to this value; `None` disables clipping.
        mixed_precision: 'no', 'bf16' or 'fp16' (fp16 needs a GPU; Accelerate scales the loss).
        seed: seeds the model-independent RNGs and the per-epoch data order.
        ema_beta: decay of the ema-pytorch `EMA` copy; `None` disables EMA.
        ema_update_after_step, ema_update_every: passed to `ema_pytorch.EMA`.
        post_hoc_ema_sigma_rels: two or more relative widths for `ema_pytorch.PostHocEMA`
            (EDM2 post-hoc EMA); empty disables it.
        post_hoc_ema_every: steps between post-hoc EMA snapshots (written to out_dir/post_hoc_ema).
        save_every: steps between checkpoints (a final one is always written); 0 disables periodic.
        keep_last: number of checkpoints kept on disk.
        sample_every: steps between sample sheets (needs `sample_fn`); 0 disables.
        sample_fps: frame rate of the sample GIFs.
        log_every: steps between CSV flushes and progress-bar updates.
        max_nonfinite_steps: consecutive skipped non-finite steps after which the run stops.
        num_workers: DataLoader worker processes.
        cpu: force the CPU even when an accelerator is present.
        progress_bar: show a tqdm bar on the main process.
        max_time_s: a time budget in seconds for one `fit` call: once a step ends past it (on
            any process), the run writes a checkpoint and returns early with
            `FitResult.time_limit_reached`; `fit(resume='latest')` continues towards `steps`.
            `None` (default): no limit.
        distributed: how several processes share the work: 'ddp' (default: every process holds
            the whole model; DistributedDataParallel) or 'fsdp' (FSDP2 through Accelerate:
            parameters, gradients and optimizer state sharded across processes; checkpoints
            written as sharded torch.distributed.checkpoint folders). An Accelerate config file
            with `distributed_type: FSDP` selects 'fsdp' too. One process: both are plain training.
        compile: wrap the model with `torch.compile` for the training step and the sampler's
            network calls (the saved weights are the uncompiled module's).
        compile_backend: the `torch.compile` backend (default 'inductor'; 'aot_eager' needs no
            C++ compiler).
        report_to: an experiment tracker through Accelerate: 'none' (default; `metrics.csv` and
            `loss.png` only), 'tensorboard' (event files under `out_dir/tracking/<project>`),
            'wandb' or 'trackio' (see `mp_layers.training.trackers`).
        tracker_project: the tracker's project / run name (default: the name of `out_dir`).
    """

    out_dir: str | Path = "runs/train"
    steps: int = 1000
    batch_size: int = 8
    grad_accum_steps: int = 1
    max_grad_norm: float | None = None
    mixed_precision: str = "no"
    seed: int = 0
    ema_beta: float | None = 0.999
    ema_update_after_step: int = 100
    ema_update_every: int = 10
    post_hoc_ema_sigma_rels: tuple[float, ...] = field(default_factory=tuple)
    post_hoc_ema_every: int = 1000
    save_every: int = 500
    keep_last: int = 3
    sample_every: int = 0
    sample_fps: int = 8
    log_every: int = 10
    max_nonfinite_steps: int = 10
    num_workers: int = 0
    cpu: bool = False
    progress_bar: bool = True
    max_time_s: float | None = None
    distributed: str = "ddp"
    compile: bool = False
    compile_backend: str = "inductor"
    report_to: str = "none"
    tracker_project: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.out_dir, Path):
            self.out_dir = str(self.out_dir)
        if not isinstance(self.out_dir, str) or not self.out_dir:
            raise _fail("out_dir", "a non-empty path", self.out_dir)
        for name, minimum in (
            ("steps", 1),
            ("batch_size", 1),
            ("grad_accum_steps", 1),
            ("seed", 0),
            ("ema_update_after_step", 0),
            ("ema_update_every", 1),
            ("post_hoc_ema_every", 1),
            ("save_every", 0),
            ("keep_last", 1),
            ("sample_every", 0),
            ("sample_fps", 1),
            ("log_every", 1),
            ("max_nonfinite_steps", 1),
            ("num_workers", 0),
        ):
            _check_int(name, getattr(self, name), minimum=minimum)
        if self.max_grad_norm is not None:
            _check_float("max_grad_norm", self.max_grad_norm, low=1e-12, high=float("inf"))
        if self.mixed_precision not in MIXED_PRECISION:
            raise _fail("mixed_precision", f"one of {MIXED_PRECISION}", self.mixed_precision)
        if self.ema_beta is not None:
            _check_float("ema_beta", self.ema_beta, low=0.0, high=1.0)
        sigma_rels = tuple(self.post_hoc_ema_sigma_rels)
        if sigma_rels and (
            len(sigma_rels) < 2
            or len(set(sigma_rels)) != len(sigma_rels)
            or not all(isinstance(s, (int, float)) and 0.0 < s < 1.0 for s in sigma_rels)
        ):
            raise _fail(
                "post_hoc_ema_sigma_rels", "empty or >= 2 distinct floats in (0, 1)", sigma_rels
            )
        self.post_hoc_ema_sigma_rels = tuple(float(s) for s in sigma_rels)
        if self.max_time_s is not None:
            _check_float("max_time_s", self.max_time_s, low=1e-3, high=float("inf"))
            self.max_time_s = float(self.max_time_s)
        if self.distributed not in DISTRIBUTED:
            raise _fail("distributed", f"one of {DISTRIBUTED}", self.distributed)
        if not isinstance(self.compile_backend, str) or not self.compile_backend:
            raise _fail("compile_backend", "a torch.compile backend name", self.compile_backend)
        if self.report_to not in REPORT_TO:
            raise _fail("report_to", f"one of {REPORT_TO}", self.report_to)
        if self.tracker_project is not None and not (
            isinstance(self.tracker_project, str) and self.tracker_project
        ):
            raise _fail("tracker_project", "None or a non-empty name", self.tracker_project)
        for name in ("cpu", "progress_bar", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise _fail(name, "a bool", getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-serialisable dict (tuples become lists)."""
        data = dataclasses.asdict(self)
        data["post_hoc_ema_sigma_rels"] = list(self.post_hoc_ema_sigma_rels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainerConfig:
        """Inverse of `to_dict`; unknown keys raise `ValueError` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"TrainerConfig: unknown keys {unknown}; expected a subset of {sorted(known)}"
            )
        values = dict(data)
        if "post_hoc_ema_sigma_rels" in values:
            values["post_hoc_ema_sigma_rels"] = tuple(values["post_hoc_ema_sigma_rels"])
        return cls(**values)
