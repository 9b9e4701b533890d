"""`karras-unet3d train --distributed fsdp` on two CPU processes (torchrun, gloo): the flag reaches
the shared Trainer, the run writes sharded checkpoints and resumes from them, and the main
process samples from the gathered weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mp_layers.training")
pytest.importorskip("mp_layers.video")

from mp_layers.training import latest_checkpoint, read_metrics

from .test_cli import TINY_RUN


def _torchrun_train(*args: str) -> subprocess.CompletedProcess[str]:
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"),
        *("-m", "karras_unet3d.cli", "train", *TINY_RUN, *args),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_train_under_fsdp_on_two_processes_then_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = _torchrun_train("--out", str(run), "--distributed", "fsdp", "--save-every", "1")
    assert done.stdout.count("class-colour accuracy of 4 samples") == 1  # the main process samples
    assert (run / "samples.gif").is_file()
    checkpoint = latest_checkpoint(run / "checkpoints")
    assert checkpoint is not None
    assert checkpoint.name == "step-000000002"
    assert json.loads((checkpoint / "state.json").read_text())["distributed"] == "fsdp"
    assert len(list((checkpoint / "sharded").glob("*.distcp"))) == 2

    _torchrun_train(
        *("--out", str(run), "--distributed", "fsdp", "--steps", "4", "--resume", "latest")
    )
    assert [int(row["step"]) for row in read_metrics(run / "metrics.csv")] == [1, 2, 3, 4]
