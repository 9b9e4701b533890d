"""Multi-process and crash tests of mp_layers.training, run as real subprocesses on the CPU."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")

from mp_layers.training import latest_checkpoint, list_checkpoints, read_metrics

from .conftest import TRAINING_WORKER as WORKER
from .conftest import load_training_worker as _worker


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _torchrun_two_workers(*worker_args: str) -> subprocess.CompletedProcess[str]:
    """The training worker in two CPU processes (gloo) under torchrun; fails on a non-zero exit."""
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"),
        *(str(WORKER), *worker_args),
    ]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _losses(out: Path) -> list[float]:
    return [float(row["loss"]) for row in read_metrics(out / "metrics.csv")]


def test_two_processes_match_one_process_with_doubled_batch(tmp_path: Path) -> None:
    out2 = tmp_path / "two"
    done = _torchrun_two_workers("--out", str(out2), "--steps", "8", "--batch-size", "4")
    assert "rank 1 of 2: done at step 8" in done.stdout
    rank0 = torch.load(out2 / "params-rank0.pt", weights_only=True)
    rank1 = torch.load(out2 / "params-rank1.pt", weights_only=True)

    trainer, _ = _worker().run(out=tmp_path / "one", steps=8, batch_size=8)
    single = trainer.unwrapped_model.state_dict()
    initial = _worker().make_model().state_dict()
    for name, value in single.items():
        assert torch.allclose(rank0[name], rank1[name], atol=1e-5, rtol=0), name
        assert torch.allclose(rank0[name], value, atol=1e-5, rtol=0), name
        assert not torch.allclose(value, initial[name], atol=1e-3), f"{name} did not train"
    # Only rank 0 wrote the run's files; the loss it logged is the mean over both shards.
    assert _losses(out2) == pytest.approx(_losses(tmp_path / "one"), abs=1e-5)


def test_two_processes_with_a_phase_match_one_process_with_doubled_batch(tmp_path: Path) -> None:
    """A `TrainingPhase` under DDP (gloo): the phase's graph leaves the body unused, which needs
    `find_unused_parameters=True`; both ranks end equal to one process on the doubled batch."""
    out2 = tmp_path / "two"
    done = _torchrun_two_workers(
        *("--out", str(out2), "--steps", "6", "--batch-size", "4", "--phase")
    )
    assert "rank 1 of 2: done at step 6" in done.stdout
    rank0 = torch.load(out2 / "params-rank0.pt", weights_only=True)
    rank1 = torch.load(out2 / "params-rank1.pt", weights_only=True)

    trainer, _ = _worker().run(out=tmp_path / "one", steps=6, batch_size=8, phase=True)
    single = trainer.unwrapped_model.state_dict()
    initial = _worker().TwoPart().state_dict()
    for name, value in single.items():
        assert torch.allclose(rank0[name], rank1[name], atol=1e-5, rtol=0), name
        assert torch.allclose(rank0[name], value, atol=1e-5, rtol=0), name
        assert not torch.allclose(value, initial[name], atol=1e-3), f"{name} did not train"
    assert _losses(out2) == pytest.approx(_losses(tmp_path / "one"), abs=1e-5)
    head = [float(row["loss_head"]) for row in read_metrics(out2 / "metrics.csv")]
    head_one = [float(row["loss_head"]) for row in read_metrics(tmp_path / "one" / "metrics.csv")]
    assert head == pytest.approx(head_one, abs=1e-5)
    assert (out2 / "checkpoints" / "step-000000006" / "optimizer-head.pt").is_file()


def test_two_processes_stop_together_at_the_time_budget(tmp_path: Path) -> None:
    """Each rank measures its own clock; they must agree on the stop step, or the one that goes
    on would wait forever in its next gradient all-reduce."""
    done = _torchrun_two_workers(
        *("--out", str(tmp_path), "--steps", "100000", "--sleep", "0.01", "--max-time", "1")
    )
    steps = sorted(re.findall(r"rank \d of 2: done at step (\d+)", done.stdout))
    assert len(steps) == 2
    assert steps[0] == steps[1]
    assert 1 <= int(steps[0]) < 100000
    assert (tmp_path / "checkpoints" / f"step-{int(steps[0]):09d}").is_dir()


@pytest.mark.parametrize("phase", [False, True], ids=["one-optimizer", "with-phase"])
def test_sigkill_mid_training_resumes_exactly(tmp_path: Path, phase: bool) -> None:
    """SIGKILL mid-run, resume from the newest checkpoint: the same losses as an uninterrupted run,
    with one optimizer or with a second one (a `TrainingPhase`, as a GAN's discriminator)."""
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    settings = {"steps": 30, "optimizer": "adam", "noise": 0.1, "save_every": 3, "phase": phase}
    command = [
        sys.executable,
        str(WORKER),
        *("--out", str(killed), "--steps", "30", "--optimizer", "adam", "--noise", "0.1"),
        *("--save-every", "3", "--sleep", "0.05"),
        *(["--phase"] if phase else []),
    ]
    proc = subprocess.Popen(
        command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while latest_checkpoint(killed / "checkpoints") is None:
            assert proc.poll() is None, f"worker exited early: {proc.stdout.read()}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        time.sleep(0.1)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    survivors = list_checkpoints(killed / "checkpoints")
    assert survivors, "no complete checkpoint survived"
    assert all(int(p.name.split("-")[1]) < 30 for p in survivors)
    # What a kill during a write leaves: a half-written temporary folder. It must be ignored.
    partial = killed / "checkpoints" / ".tmp-step-000000999-deadbeef"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00" * 10)
    assert latest_checkpoint(killed / "checkpoints") == survivors[-1]

    worker = _worker()
    _, resumed = worker.run(out=killed, resume="latest", **settings)
    assert resumed.resumed_from == survivors[-1]
    resumed_from = int(survivors[-1].name.split("-")[1])
    _, uninterrupted = worker.run(out=reference, **settings)

    assert resumed.losses == pytest.approx(uninterrupted.losses[resumed_from:], abs=1e-6, rel=0)
    assert _losses(killed) == pytest.approx(_losses(reference), abs=1e-6, rel=0)
    if phase:
        assert resumed.phase_losses["head"] == pytest.approx(
            uninterrupted.phase_losses["head"][resumed_from:], abs=1e-6, rel=0
        )
    leftovers = [p.name for p in (killed / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []
