from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def rms(x: torch.Tensor) -> float:
    return x.detach().float().pow(2).mean().sqrt().item()


TRAINING_WORKER = Path(__file__).with_name("training_worker.py")


def load_training_worker() -> ModuleType:
    """The tiny training script the trainer tests run in-process and as subprocesses."""
    spec = importlib.util.spec_from_file_location("training_worker", TRAINING_WORKER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
