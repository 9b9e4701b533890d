"""Sharded (FSDP2) training and `accelerate launch` runs of mp_layers.training, as real CPU
subprocesses (gloo), against one process on the doubled batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("accelerate")

import contextlib

from safetensors.torch import load_file

from mp_layers.training import TrainerConfig, latest_checkpoint, list_checkpoints, read_metrics

from .conftest import TRAINING_WORKER as WORKER
from .conftest import load_training_worker as _worker

# Adam, gradient clipping and an EMA: every part of a step that FSDP changes (sharded optimizer
# state, the gradient norm over shards, the EMA following gathered weights).
SETTINGS = ("--optimizer", "adam", "--ema-beta", "0.9", "--max-grad-norm", "1.0")
ACCELERATE_CONFIGS = {
    "fsdp": """
distributed_type: FSDP
fsdp_config:
  fsdp_version: 2
  fsdp_state_dict_type: SHARDED_STATE_DICT
  fsdp_reshard_after_forward: true
""",
    "ddp": "distributed_type: MULTI_GPU\n",
}
# The files a GPU user writes; without a GPU, `accelerate launch` starts the processes through
# torchrun all the same and they train on the CPU with gloo. (Accelerate's own CPU configuration,
# MULTI_CPU, starts several processes only through mpirun, which this machine does not have.)
ACCELERATE_COMMON = """compute_environment: LOCAL_MACHINE
num_machines: 1
num_processes: 2
machine_rank: 0
use_cpu: false
mixed_precision: 'no'
"""


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for name in ("CUDA_VISIBLE_DEVICES", "ACCELERATE_USE_FSDP", "WORLD_SIZE"):
        env.pop(name, None)
    return env


def _torchrun(*worker_args: str) -> list[str]:
    return [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"),
        *(str(WORKER), *worker_args),
    ]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every process below it (torchrun starts its workers in their own
    sessions, so a process-group kill would leave them running)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo.extend(children.get(tree[-1], []))
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def _losses(out: Path) -> list[float]:
    return [float(row["loss"]) for row in read_metrics(out / "metrics.csv")]


def _single_process_reference(out: Path, steps: int) -> dict[str, torch.Tensor]:
    """One process on the doubled batch with the same settings; its final weights."""
    trainer, _ = _worker().run(
        out=out, steps=steps, batch_size=8, optimizer="adam", ema_beta=0.9, max_grad_norm=1.0
    )
    return {k: v.detach().clone() for k, v in trainer.unwrapped_model.state_dict().items()}


def _assert_same_run(two: Path, one: Path, one_weights: dict[str, torch.Tensor]) -> None:
    assert _losses(two) == pytest.approx(_losses(one), abs=1e-5)
    weights = torch.load(two / "params-rank0.pt", weights_only=True)
    assert weights.keys() == one_weights.keys()
    for name, value in one_weights.items():
        assert torch.allclose(weights[name], value, atol=1e-5, rtol=0), name
    last_two, last_one = (
        latest_checkpoint(two / "checkpoints"),
        latest_checkpoint(one / "checkpoints"),
    )
    assert last_two is not None
    assert last_one is not None
    ema_two = load_file(last_two / "ema.safetensors")
    ema_one = load_file(last_one / "ema.safetensors")
    for name, value in ema_one.items():
        assert torch.allclose(ema_two[name], value, atol=1e-5, rtol=0), name


def test_fsdp_two_processes_match_one_process_with_doubled_batch(tmp_path: Path) -> None:
    two = tmp_path / "two"
    done = _run(
        _torchrun(
            *("--out", str(two), "--steps", "8", "--batch-size", "4", "--distributed", "fsdp"),
            *SETTINGS,
        )
    )
    assert "rank 1 of 2: done at step 8" in done.stdout
    # Under FSDP only the main process holds whole weights.
    assert not (two / "params-rank1.pt").exists()
    one_weights = _single_process_reference(tmp_path / "one", steps=8)
    _assert_same_run(two, tmp_path / "one", one_weights)

    checkpoint = latest_checkpoint(two / "checkpoints")
    assert checkpoint is not None
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["distributed"] == "fsdp"
    assert state["world_size"] == 2
    shards = sorted(p.name for p in (checkpoint / "sharded").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert not (checkpoint / "optimizer.pt").exists()  # the optimizer state is in the shards
    # model.safetensors holds the gathered whole weights, loadable into a bare model.
    whole = load_file(checkpoint / "model.safetensors")
    for name, value in one_weights.items():
        assert torch.allclose(whole[name], value, atol=1e-5, rtol=0), name


@pytest.mark.parametrize("kind", sorted(ACCELERATE_CONFIGS))
def test_accelerate_launch_with_a_config_file(tmp_path: Path, kind: str) -> None:
    """`accelerate launch --config_file ... --num_processes 2`: the config file alone selects FSDP
    (the worker is left at its default `--distributed ddp`) or DDP."""
    config = tmp_path / "accelerate.yaml"
    config.write_text(ACCELERATE_COMMON + ACCELERATE_CONFIGS[kind].lstrip("\n"))
    two = tmp_path / "two"
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    done = _run(
        [
            *launch,
            *("--config_file", str(config), "--num_processes", "2"),
            *(str(WORKER), "--out", str(two), "--steps", "6", "--batch-size", "4", *SETTINGS),
        ]
    )
    assert "rank 1 of 2: done at step 6" in done.stdout
    checkpoint = latest_checkpoint(two / "checkpoints")
    assert checkpoint is not None
    assert json.loads((checkpoint / "state.json").read_text())["distributed"] == kind
    assert (checkpoint / "sharded").is_dir() == (kind == "fsdp")
    one_weights = _single_process_reference(tmp_path / "one", steps=6)
    _assert_same_run(two, tmp_path / "one", one_weights)


def test_fsdp_sigkill_mid_training_resumes_exactly(tmp_path: Path) -> None:
    """Kill both FSDP processes mid-run, resume from the newest sharded checkpoint on two
    processes: the same losses and weights as an uninterrupted two-process FSDP run."""
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    args = ("--steps", "24", "--batch-size", "4", "--distributed", "fsdp", "--noise", "0.1")
    args += ("--save-every", "3", *SETTINGS)
    proc = subprocess.Popen(
        _torchrun("--out", str(killed), *args, "--sleep", "0.1"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while latest_checkpoint(killed / "checkpoints") is None:
            assert proc.poll() is None, f"run exited early: {proc.stdout.read()}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        time.sleep(0.3)
        assert proc.poll() is None, "the run finished before it could be killed"
        _kill_tree(proc.pid)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            _kill_tree(proc.pid)
    survivors = list_checkpoints(killed / "checkpoints")
    assert survivors, "no complete checkpoint survived"
    resumed_from = int(survivors[-1].name.split("-")[1])
    assert resumed_from < 24

    done = _run(_torchrun("--out", str(killed), *args, "--resume", "latest"))
    assert "rank 1 of 2: done at step 24" in done.stdout
    _run(_torchrun("--out", str(reference), *args))
    assert _losses(killed) == pytest.approx(_losses(reference), abs=1e-6, rel=0)
    resumed = torch.load(killed / "params-rank0.pt", weights_only=True)
    uninterrupted = torch.load(reference / "params-rank0.pt", weights_only=True)
    for name, value in uninterrupted.items():
        assert torch.allclose(resumed[name], value, atol=1e-6, rtol=0), name
    leftovers = [p.name for p in (killed / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_fsdp_checkpoint_is_refused_by_a_plain_run(tmp_path: Path) -> None:
    """A checkpoint written under FSDP holds its optimizer state in shards: resuming it without
    FSDP is a ValueError saying how to resume it."""
    worker = _worker()
    worker.run(out=tmp_path, steps=2)
    checkpoint = latest_checkpoint(tmp_path / "checkpoints")
    assert checkpoint is not None
    state_file = checkpoint / "state.json"
    state = json.loads(state_file.read_text())
    state.update(distributed="fsdp", world_size=2)
    state_file.write_text(json.dumps(state))
    with pytest.raises(ValueError, match=r"written under distributed='fsdp'.*--distributed fsdp"):
        worker.run(out=tmp_path, steps=4, resume=str(checkpoint))


def test_fsdp_refuses_training_phases(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under a launcher; refused before any process group
    with pytest.raises(ValueError, match="no TrainingPhase under distributed='fsdp'"):
        _worker().run(out=tmp_path, steps=1, phase=True, distributed="fsdp")


def test_distributed_must_be_ddp_or_fsdp() -> None:
    with pytest.raises(ValueError, match=r"TrainerConfig.distributed: expected one of"):
        TrainerConfig(distributed="zero3")
