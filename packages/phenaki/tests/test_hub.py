"""`MaskGit` and `TokenCritic` on `mp_layers.hub`: save_pretrained -> from_pretrained is
bit-identical, from a folder and from a Hub id in a local cache (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mp_layers.testing import populate_hub_cache
from phenaki import MaskGit, TokenCritic

COMMON = {"num_tokens": 32, "max_seq_len": 64, "depth": 1, "heads": 2, "dim_head": 8}


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize(
    "make",
    [
        lambda: MaskGit(dim=16, unconditional=True, **COMMON),
        lambda: TokenCritic(dim=16, has_cross_attn=False, **COMMON),
    ],
)
def test_round_trip_is_bit_identical(
    make: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = randomised(make())  # type: ignore[operator]
    folder = model.save_pretrained(tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == type(model).__name__
    assert config["depth"] == 1  # a keyword that reaches the transformer through **kwargs
    ids = torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(ids, video_patch_shape=(2, 2, 2))
    populate_hub_cache(tmp_path / "hub", "someone/tiny", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for source, kwargs in ((folder, {}), ("someone/tiny", {"cache_dir": tmp_path / "hub"})):
        loaded = type(model).from_pretrained(source, **kwargs).eval()
        with torch.no_grad():
            assert torch.equal(loaded(ids, video_patch_shape=(2, 2, 2)), expected)
