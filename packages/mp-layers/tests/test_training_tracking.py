"""Experiment trackers (`report_to`), the honest progress bar and the run report."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

pytest.importorskip("accelerate")

from mp_layers.training import TrainerConfig, TrainJob, run_train_job
from mp_layers.training.step import StepOutcome, batch_size
from mp_layers.training.trackers import check_tracker, tracker_hparams
from mp_layers.training.trainer import Trainer, _Progress

from .conftest import load_training_worker


@pytest.fixture(scope="module")
def worker() -> ModuleType:
    return load_training_worker()


def _job(worker: ModuleType, out: Path, **config: Any) -> TrainJob:
    settings: dict[str, Any] = {
        "out_dir": str(out),
        "steps": 4,
        "batch_size": 4,
        "ema_beta": None,
        "progress_bar": False,
        "cpu": True,
        "log_every": 1,
    }
    settings.update(config)
    return TrainJob(
        model=worker.make_model(),
        data=worker.PairDataset(),
        loss_fn=functools.partial(worker.loss_fn, noise=0.0, sleep=0.0),
        optimizer_factory=functools.partial(torch.optim.SGD, lr=0.1),
        config=TrainerConfig(**settings),
        run_config={"model": "tiny"},
        run_config_file="run.json",
    )


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert list(folder.glob("events.out.tfevents.*"))  # (hparams go to a sub-folder)
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    scalars = {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in tags["scalars"]
    }
    scalars["_images"] = [(0, float(len(accumulator.Images(tag)))) for tag in tags["images"]]
    return scalars


def test_tensorboard_event_files_hold_the_training_and_report_figures(
    worker: ModuleType, tmp_path: Path
) -> None:
    pytest.importorskip("tensorboard")

    def report(trainer: Trainer, result: Any, summary: dict[str, Any]) -> None:
        trainer.log({"held_out/loss": 0.25, "held_out/psnr": math.inf})
        trainer.log_videos("samples", torch.rand(2, 3, 3, 8, 8))
        summary["held_out_loss"] = 0.25

    run_train_job(
        _job(worker, tmp_path, report_to="tensorboard", max_grad_norm=10.0), report=report
    )
    scalars = _scalars(tmp_path / "tracking" / tmp_path.name)  # the project: the run's name
    losses = scalars["train/loss"]
    assert [step for step, _ in losses] == [1, 2, 3, 4]
    assert all(math.isfinite(value) for _, value in losses)
    from mp_layers.training import read_metrics

    rows = read_metrics(tmp_path / "metrics.csv")  # the same figures as metrics.csv
    assert [v for _, v in losses] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-6)
    for tag in ("train/lr", "train/grad_norm", "train/data_wait", "train/clips_per_second"):
        assert len(scalars[tag]) == 4, tag
    assert all(0.0 <= value <= 1.0 for _, value in scalars["train/data_wait"])
    assert scalars["held_out/loss"] == [(4, 0.25)]
    assert "held_out/psnr" not in scalars  # non-finite values are left out
    assert scalars["_images"] == [(0, 1.0)]
    report_json = json.loads((tmp_path / "report.json").read_text())
    assert report_json["held_out_loss"] == 0.25
    assert report_json["step"] == 4


def test_no_tracker_by_default_writes_no_event_files(worker: ModuleType, tmp_path: Path) -> None:
    run_train_job(_job(worker, tmp_path))
    assert not (tmp_path / "tracking").exists()
    assert (tmp_path / "metrics.csv").exists()
    assert json.loads((tmp_path / "report.json").read_text())["step"] == 4


def test_missing_tracker_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    with pytest.raises(
        ValueError, match=r"wandb package is not installed; pip install 'mp-layers\[wandb\]'"
    ):
        check_tracker("wandb")
    with pytest.raises(ValueError, match="expected one of"):
        check_tracker("mlflow")
    with pytest.raises(ValueError, match="report_to: expected one of"):
        TrainerConfig(report_to="mlflow")


def test_tracker_hparams_are_plain_values() -> None:
    hparams = tracker_hparams(TrainerConfig(post_hoc_ema_sigma_rels=(0.05, 0.1), max_time_s=None))
    assert hparams["post_hoc_ema_sigma_rels"] == "0.05,0.1"
    assert "max_time_s" not in hparams  # None
    assert all(isinstance(v, (bool, int, float, str)) for v in hparams.values())


def test_progress_total_follows_whichever_limit_ends_the_run() -> None:
    progress = _Progress(start_step=0)
    by_steps = TrainerConfig(steps=100)
    assert progress.expected_total(10, 5.0, by_steps) == 100
    by_time = TrainerConfig(steps=3000, max_time_s=60.0)
    # 10 steps in 5 s: 0.5 s a step, 55 s left -> 110 more steps.
    assert progress.expected_total(10, 5.0, by_time) == 120
    assert progress.expected_total(10, 60.5, by_time) == 10  # past the limit: this step ends it
    assert progress.expected_total(2990, 30.0, by_time) == 3000  # --steps ends it first
    resumed = _Progress(start_step=500)  # a resumed call's pace counts only its own steps
    assert resumed.expected_total(510, 5.0, by_time) == 620


def test_progress_shares_and_batch_sizes() -> None:
    progress = _Progress(start_step=0)
    progress.add(StepOutcome(1.0, None, True, {}, data_seconds=0.0, samples=8))
    assert progress.data_share == 0.0
    assert progress.samples_per_second > 0
    assert batch_size({"video": torch.zeros(5, 3), "text": ["a"] * 5}) == 5
    assert batch_size((torch.zeros(3, 2), torch.zeros(3))) == 3
    assert batch_size(torch.zeros(7, 2)) == 7
    assert batch_size({"text": ["a"]}) == 0


def test_max_time_bar_total_shrinks_to_the_budget(
    worker: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    totals: list[int] = []
    from mp_layers.training import trainer as trainer_module

    real = trainer_module._Progress.expected_total

    def spy(self: Any, step: int, elapsed: float, config: TrainerConfig) -> int:
        totals.append(real(self, step, elapsed, config))
        return totals[-1]

    monkeypatch.setattr(trainer_module._Progress, "expected_total", spy)
    job = _job(worker, tmp_path, steps=100_000, max_time_s=0.5, save_every=0)
    job.loss_fn = functools.partial(worker.loss_fn, noise=0.0, sleep=0.05)
    summary = run_train_job(job)
    assert summary["time_limit_reached"]
    assert totals[-1] < 100  # the bar counts to the step the budget ends at, not to --steps
    assert abs(totals[-1] - summary["step"]) <= 2
