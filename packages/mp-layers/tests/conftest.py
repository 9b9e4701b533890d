from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def rms(x: torch.Tensor) -> float:
    return x.detach().float().pow(2).mean().sqrt().item()
