"""In-process behaviour of `mp_layers.training.Trainer` on a tiny CPU model."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("accelerate")

from mp_layers.training import (
    NonFiniteLossError,
    Trainer,
    TrainerConfig,
    latest_checkpoint,
    list_checkpoints,
    load_model_weights,
    read_metrics,
)

from .conftest import load_training_worker


@pytest.fixture(scope="module")
def worker() -> ModuleType:
    return load_training_worker()


def _trainer(worker: ModuleType, out: Path, **kwargs: Any) -> Trainer:
    """A Trainer on the worker's model and data; `kwargs` split into Trainer and config args."""
    trainer_keys = {"loss_fn", "lr_lambda", "scheduler_factory", "sample_fn", "data"}
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k in trainer_keys}
    settings: dict[str, Any] = {"ema_beta": None, "progress_bar": False, "cpu": True}
    settings.update(kwargs)
    extra.setdefault("data", worker.PairDataset())
    extra.setdefault("loss_fn", functools.partial(worker.loss_fn, noise=0.0, sleep=0.0))
    return Trainer(
        model=worker.make_model(),
        optimizer_factory=functools.partial(torch.optim.SGD, lr=0.1),
        config=TrainerConfig(out_dir=str(out), **settings),
        **extra,
    )


def test_resume_continues_exactly(worker: ModuleType, tmp_path: Path) -> None:
    settings = {"steps": 12, "optimizer": "adam", "noise": 0.1, "save_every": 4}
    _, full = worker.run(out=tmp_path / "full", **settings)

    class Crash(Exception):
        pass

    calls = {"n": 0}

    def crashing_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 7:
            raise Crash
        loss: torch.Tensor = worker.loss_fn(model, batch, noise=0.1, sleep=0.0)
        return loss

    crashed = tmp_path / "crashed"
    trainer = Trainer(
        model=worker.make_model(),
        data=worker.PairDataset(),
        optimizer_factory=functools.partial(torch.optim.Adam, lr=1e-2),
        config=TrainerConfig(
            out_dir=str(crashed), steps=12, save_every=4, batch_size=4, ema_beta=None, cpu=True
        ),
        loss_fn=crashing_loss,
    )
    with pytest.raises(Crash):
        trainer.fit()
    assert [p.name for p in list_checkpoints(crashed / "checkpoints")] == ["step-000000004"]
    assert len(read_metrics(crashed / "metrics.csv")) == 6  # logged past the checkpoint

    _, resumed = worker.run(out=crashed, resume="latest", **settings)
    assert resumed.resumed_from == crashed / "checkpoints" / "step-000000004"
    assert resumed.losses == pytest.approx(full.losses[4:], abs=1e-6, rel=0)
    logged = [float(row["loss"]) for row in read_metrics(crashed / "metrics.csv")]
    assert logged == pytest.approx(full.losses, abs=1e-6, rel=0)

    # An explicit checkpoint folder works too, and a finished run resumes to a no-op.
    _, again = worker.run(
        out=crashed, resume=str(latest_checkpoint(crashed / "checkpoints")), **settings
    )
    assert again.step == 12
    assert again.losses == []


def test_time_budget_stops_with_a_checkpoint_and_resumes(
    worker: ModuleType, tmp_path: Path
) -> None:
    settings = {"optimizer": "adam", "noise": 0.1, "save_every": 0}
    _, full = worker.run(out=tmp_path / "full", steps=40, **settings)
    assert not full.time_limit_reached
    _, stopped = worker.run(out=tmp_path / "cut", steps=40, sleep=0.02, max_time_s=0.15, **settings)
    assert stopped.time_limit_reached
    assert 1 <= stopped.step < 40
    assert stopped.checkpoint == tmp_path / "cut" / "checkpoints" / f"step-{stopped.step:09d}"
    assert stopped.checkpoint.is_dir()
    _, rest = worker.run(out=tmp_path / "cut", steps=40, resume="latest", **settings)
    assert rest.step == 40
    assert not rest.time_limit_reached
    assert stopped.losses + rest.losses == pytest.approx(full.losses, abs=1e-6, rel=0)


def test_fresh_run_refuses_existing_checkpoints(worker: ModuleType, tmp_path: Path) -> None:
    worker.run(out=tmp_path, steps=2)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        worker.run(out=tmp_path, steps=4)
    with pytest.raises(ValueError, match="expected 'latest' or a checkpoint folder"):
        worker.run(out=tmp_path, steps=4, resume=str(tmp_path / "nope"))


def test_keep_last_k_and_stale_temporaries(worker: ModuleType, tmp_path: Path) -> None:
    stale = tmp_path / "checkpoints" / ".tmp-step-000000002-cafebabe"
    stale.mkdir(parents=True)
    worker.run(out=tmp_path, steps=10, save_every=2, keep_last=2, resume="latest")
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000000008", "step-000000010"]
    files = sorted(p.name for p in (tmp_path / "checkpoints" / "step-000000010").iterdir())
    assert files == ["model.safetensors", "optimizer.pt", "rng.pt", "state.json"]


def test_nonfinite_steps_are_skipped_then_stop(worker: ModuleType, tmp_path: Path) -> None:
    bad_steps: set[int] = {3, 4}
    calls = {"n": 0}

    def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        calls["n"] += 1
        loss: torch.Tensor = worker.loss_fn(model, batch, noise=0.0, sleep=0.0)
        return loss * math.nan if calls["n"] in bad_steps else loss

    trainer = _trainer(worker, tmp_path / "skip", steps=6, loss_fn=loss_fn, max_nonfinite_steps=3)
    result = trainer.fit()
    assert result.skipped_steps == 2
    assert [math.isnan(x) for x in result.losses] == [False, False, True, True, False, False]
    assert [row["skipped"] for row in read_metrics(tmp_path / "skip" / "metrics.csv")] == list(
        "001100"
    )

    # From step 6 on every loss is NaN: the run stops after 3 and the step-5 checkpoint is intact.
    calls["n"] = 0
    bad_steps.clear()
    bad_steps.update(range(6, 100))
    trainer = _trainer(
        worker, tmp_path / "stop", steps=20, loss_fn=loss_fn, save_every=5, max_nonfinite_steps=3
    )
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps"):
        trainer.fit()
    assert trainer.step == 8
    assert [p.name for p in list_checkpoints(tmp_path / "stop" / "checkpoints")] == [
        "step-000000005"
    ]
    before = {k: v.clone() for k, v in trainer.unwrapped_model.state_dict().items()}
    restored = load_model_weights(worker.make_model(), tmp_path / "stop/checkpoints/step-000000005")
    for name, value in restored.state_dict().items():
        assert torch.isfinite(value).all()
        assert torch.equal(value, before[name]), "skipped steps must not change the weights"


def test_gradient_accumulation_matches_large_batch(worker: ModuleType, tmp_path: Path) -> None:
    big = _trainer(worker, tmp_path / "big", steps=5, batch_size=8)
    big.fit()
    small = _trainer(worker, tmp_path / "small", steps=5, batch_size=4, grad_accum_steps=2)
    small.fit()
    for (name, a), b in zip(
        big.unwrapped_model.state_dict().items(),
        small.unwrapped_model.state_dict().values(),
        strict=False,
    ):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name


def test_lr_lambda_clipping_and_metrics(worker: ModuleType, tmp_path: Path) -> None:
    trainer = _trainer(
        worker, tmp_path, steps=4, lr_lambda=lambda step: 1.0 / (step + 1), max_grad_norm=1e-3
    )
    trainer.fit()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.1, 0.05, 0.1 / 3, 0.025])
    assert all(float(r["grad_norm"]) > 1e-3 for r in rows)  # the pre-clip norm is logged
    png = (tmp_path / "loss.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_ema_updated_and_saved(worker: ModuleType, tmp_path: Path) -> None:
    trainer = _trainer(
        worker, tmp_path, steps=6, ema_beta=0.5, ema_update_after_step=0, ema_update_every=1
    )
    initial = {k: v.clone() for k, v in trainer.unwrapped_model.state_dict().items()}
    result = trainer.fit()
    assert trainer.ema is not None
    ema_weights = trainer.ema.ema_model.state_dict()
    online = trainer.unwrapped_model.state_dict()
    for name, value in ema_weights.items():
        assert not torch.equal(value, initial[name]), f"EMA of {name} never moved"
        assert not torch.equal(value, online[name]), f"EMA of {name} equals the online weights"
    assert result.checkpoint is not None
    loaded = load_model_weights(worker.make_model(), result.checkpoint, ema=True)
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, ema_weights[name])
    raw = load_model_weights(worker.make_model(), result.checkpoint, ema=False)
    for name, value in raw.state_dict().items():
        assert torch.equal(value, online[name])


def test_post_hoc_ema_snapshots_and_resume(worker: ModuleType, tmp_path: Path) -> None:
    kwargs = {"ema_beta": None, "post_hoc_ema_sigma_rels": (0.05, 0.28), "post_hoc_ema_every": 2}
    trainer = _trainer(worker, tmp_path, steps=4, save_every=2, **kwargs)
    trainer.fit()
    assert len(list((tmp_path / "post_hoc_ema").glob("*.pt"))) == 4  # 2 profiles x steps 2, 4
    assert (tmp_path / "checkpoints/step-000000004/post_hoc_ema.safetensors").is_file()
    assert trainer.post_hoc_ema is not None
    synthesized = trainer.post_hoc_ema.synthesize_ema_model(sigma_rel=0.15)
    assert all(torch.isfinite(p).all() for p in synthesized.ema_model.parameters())
    again = _trainer(worker, tmp_path, steps=6, save_every=2, **kwargs)
    again.fit(resume="latest")
    assert again.post_hoc_ema is not None
    assert int(again.post_hoc_ema.step) == 6


def test_post_hoc_ema_follows_every_step(worker: ModuleType, tmp_path: Path) -> None:
    """EDM2's power-function EMA averages every step: after 30 steps the profile of sigma_rel 0.05
    sits near the trained weights, and a synthesized EMA of that width too. (With ema-pytorch's
    default `update_every=100` the average stayed at the initial weights.)"""
    initial = worker.make_model().state_dict()
    kwargs = {"ema_beta": None, "post_hoc_ema_sigma_rels": (0.05, 0.1), "post_hoc_ema_every": 10}
    trainer = _trainer(worker, tmp_path, steps=30, **kwargs)
    trainer.fit()
    assert trainer.post_hoc_ema is not None
    final = trainer.unwrapped_model.state_dict()
    profile = trainer.post_hoc_ema.ema_models[0].ema_model.state_dict()
    synthesized = trainer.post_hoc_ema.synthesize_ema_model(sigma_rel=0.05).ema_model.state_dict()
    for name, value in final.items():
        start = (initial[name] - value).norm()
        assert (profile[name] - value).norm() < 0.5 * start, name
        assert (synthesized[name] - value).norm() < 0.6 * start, name


def test_sample_sheet_written(worker: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("mp_layers.video")
    seen: list[bool] = []

    def sample_fn(model: nn.Module) -> torch.Tensor:
        seen.append(model.training or torch.is_grad_enabled())
        return torch.rand(4, 3, 5, 8, 8)

    trainer = _trainer(worker, tmp_path, steps=4, sample_every=2, sample_fn=sample_fn)
    trainer.fit()
    assert seen == [False, False]  # eval mode, no grad
    assert trainer.unwrapped_model.training
    gifs = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert gifs == ["step-000000002.gif", "step-000000004.gif"]
    from mp_layers.video import read_video

    sheet = read_video(tmp_path / "samples" / "step-000000004.gif")
    assert sheet.shape[0] == 3
    assert sheet.shape[1] == 5
    assert sheet.shape[2] >= 16
    assert sheet.shape[3] >= 16


def test_bad_sample_output_is_rejected(worker: ModuleType, tmp_path: Path) -> None:
    trainer = _trainer(
        worker, tmp_path, steps=1, sample_every=1, sample_fn=lambda m: torch.rand(3, 5, 8, 8)
    )
    with pytest.raises(ValueError, match=r"expected a float tensor \(b, c, f, h, w\)"):
        trainer.fit()


def test_model_returning_loss_and_dataloader(worker: ModuleType, tmp_path: Path) -> None:
    class WithLoss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = worker.make_model()

        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return ((self.net(batch["x"]) - batch["y"]) ** 2).mean()

    loader = torch.utils.data.DataLoader(worker.PairDataset(), batch_size=8)
    trainer = Trainer(
        model=WithLoss(),
        data=loader,
        optimizer_factory=functools.partial(torch.optim.SGD, lr=0.1),
        config=TrainerConfig(out_dir=str(tmp_path), steps=10, ema_beta=None, cpu=True),
    )
    result = trainer.fit()  # 8 batches per epoch: wraps into a second epoch
    assert result.step == 10
    assert result.losses[-1] < result.losses[0]


def test_bf16_autocast_on_cpu(worker: ModuleType, tmp_path: Path) -> None:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # Accelerate's state is per process
    try:
        result = _trainer(worker, tmp_path, steps=3, mixed_precision="bf16").fit()
        assert all(math.isfinite(x) for x in result.losses)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_trainer_argument_errors(worker: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sample_every=2 needs a sample_fn"):
        _trainer(worker, tmp_path, sample_every=2)
    with pytest.raises(ValueError, match="expected at most one"):
        _trainer(worker, tmp_path, lr_lambda=lambda s: 1.0, scheduler_factory=lambda o: None)
    with pytest.raises(TypeError, match=r"Trainer.__init__\(\) parameter model='net' violates"):
        Trainer(model="net", data=worker.PairDataset(), optimizer_factory=torch.optim.SGD)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"parameter data=3 violates"):
        Trainer(model=worker.make_model(), data=3, optimizer_factory=torch.optim.SGD)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"parameter loss_fn='mse' violates"):
        Trainer(
            model=worker.make_model(),
            data=worker.PairDataset(),
            optimizer_factory=torch.optim.SGD,
            loss_fn="mse",
        )  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="optimizer_factory: expected it to return"):
        Trainer(model=worker.make_model(), data=worker.PairDataset(), optimizer_factory=list)  # type: ignore[arg-type]
    bad_loss = _trainer(worker, tmp_path, steps=1, loss_fn=lambda m, b: m(b["x"]))
    with pytest.raises(ValueError, match=r"loss: expected a scalar tensor, got \(8, 1\)"):
        bad_loss.fit()


@pytest.mark.parametrize("report_first", [False, True])
def test_run_train_job_writes_config_fits_and_reports_in_order(
    worker: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str], report_first: bool
) -> None:
    import json

    from mp_layers.training import TrainJob, run_train_job

    job = TrainJob(
        model=worker.make_model(),
        data=worker.PairDataset(),
        loss_fn=functools.partial(worker.loss_fn, noise=0.0, sleep=0.0),
        optimizer_factory=functools.partial(torch.optim.SGD, lr=0.1),
        config=TrainerConfig(
            out_dir=str(tmp_path),
            steps=3,
            batch_size=4,
            ema_beta=None,
            progress_bar=False,
            cpu=True,
        ),
        run_config={"model": "tiny", "steps": 3},
        run_config_file="run.json",
    )

    def report(trainer: Trainer, result: Any, summary: dict[str, Any]) -> None:
        print("REPORT LINE")
        summary["reported"] = trainer.step

    summary = run_train_job(job, report=report, report_first=report_first)
    assert json.loads((tmp_path / "run.json").read_text()) == {"model": "tiny", "steps": 3}
    assert summary["reported"] == 3
    assert summary["final_loss"] is not None
    assert math.isfinite(summary["final_loss"])
    assert summary["checkpoint"] is not None
    assert Path(summary["checkpoint"]).exists()
    out = capsys.readouterr().out
    report_at, fit_at = out.index("REPORT LINE"), out.index(str(tmp_path))
    assert (report_at < fit_at) == report_first
