"""`Unet3D` on `mp_layers.hub`: save_pretrained -> from_pretrained is bit-identical, from a folder
and from a Hub id in a local cache (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mp_layers.testing import populate_hub_cache
from video_ddpm import Unet3D


def test_unet3d_round_trip_is_bit_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = Unet3D(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    folder = net.save_pretrained(tmp_path / "unet")
    assert json.loads((folder / "config.json").read_text())["dim_mults"] == [1, 2]
    x = torch.randn(1, 3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([3])
    with torch.no_grad():
        expected = net(x, t)
    populate_hub_cache(tmp_path / "hub", "someone/tiny-unet3d", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for source, kwargs in ((folder, {}), ("someone/tiny-unet3d", {"cache_dir": tmp_path / "hub"})):
        loaded = Unet3D.from_pretrained(source, **kwargs).eval()
        assert loaded.config == net.config
        with torch.no_grad():
            assert torch.equal(loaded(x, t), expected)
