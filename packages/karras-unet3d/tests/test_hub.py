"""`KarrasUnet3D` and `EDM2Diffusion` on `mp_layers.hub`: save_pretrained -> from_pretrained is
bit-identical, the network is a part of the diffusion in `net/`, and a Hub id loads offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from karras_unet3d import EDM2Diffusion, KarrasUnet3D
from mp_layers.testing import populate_hub_cache

NET = {
    "image_size": 8,
    "frames": 2,
    "dim": 8,
    "dim_max": 16,
    "num_classes": 3,
    "channels": 3,
    "num_downsamples": 1,
    "num_blocks_per_stage": (1,),
    "attn_res": (4,),
    "attn_dim_head": 8,
}


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights everywhere (a fresh model has zero gains, which would hide a bad load)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return model.eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 2, 8, 8, generator=generator)
    return x, torch.tensor([0.1, -0.3]), torch.tensor([0, 2])


def test_karras_unet3d_round_trip_is_bit_identical(tmp_path: Path) -> None:
    net = trained_like(KarrasUnet3D(**NET))
    folder = net.save_pretrained(tmp_path / "net")
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors"}
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "KarrasUnet3D"
    assert config["attn_res"] == [4]
    loaded = KarrasUnet3D.from_pretrained(folder).eval()
    assert loaded.config == net.config
    x, time, labels = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(x, time, class_labels=labels), net(x, time, class_labels=labels))


def test_edm2_diffusion_saves_its_network_in_a_subfolder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = trained_like(EDM2Diffusion(KarrasUnet3D(**NET), sigma_data=0.7, label_dropout=0.0))
    folder = model.save_pretrained(tmp_path / "edm2")
    assert (folder / "net" / "config.json").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["sigma_data"] == 0.7
    assert config["_parts"] == {"net": "karras_unet3d.KarrasUnet3D"}
    x, _, labels = inputs()
    sigma = torch.tensor([0.5, 2.0])
    expected = model.denoise(x, sigma, class_labels=labels)
    for source, kwargs in ((folder, {}), ("someone/tiny-edm2", {"cache_dir": tmp_path / "hub"})):
        if kwargs:
            populate_hub_cache(tmp_path / "hub", "someone/tiny-edm2", folder)
            monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        loaded = EDM2Diffusion.from_pretrained(source, **kwargs).eval()
        assert loaded.config == model.config
        assert torch.equal(loaded.denoise(x, sigma, class_labels=labels), expected)
