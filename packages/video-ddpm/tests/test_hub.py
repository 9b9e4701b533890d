"""`Unet3D` and `GaussianDiffusion` on `mp_layers.hub`: save_pretrained -> from_pretrained is
bit-identical, from a folder and from a Hub id in a local cache (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mp_layers.testing import populate_hub_cache
from video_ddpm import GaussianDiffusion, Unet3D


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


def _diffusion() -> GaussianDiffusion:
    net = Unet3D(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, cond_dim=4)
    model = GaussianDiffusion(
        net, image_size=8, num_frames=2, timesteps=10, objective="pred_v", cond_drop_prob=0.2
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def _outputs(model: GaussianDiffusion) -> list[torch.Tensor]:
    """The network's output, a training loss and a DDIM sample, for fixed inputs and noise."""
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 2, 8, 8, generator=generator)
    cond = torch.randn(2, 4, generator=generator)
    noise = torch.randn(x.shape, generator=generator)
    t = torch.tensor([3, 7])
    with torch.no_grad():
        out = model.denoise_fn(x, t, cond=cond)
        loss = model(x, cond, noise=noise, t=t, null_cond_prob=0.0)
    sample = model.sample(
        cond, cond_scale=2.0, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(2)
    )
    return [out, loss, sample]


def test_gaussian_diffusion_round_trip_is_bit_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """save_pretrained writes the HubModel layout (the network in denoise_fn/); from_pretrained
    of the folder, and of a Hub id in a local cache offline, gives the same outputs bit for bit."""
    model = _diffusion()
    expected = _outputs(model)
    folder = model.save_pretrained(tmp_path / "diffusion")
    assert isinstance(folder, Path)
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "GaussianDiffusion"
    assert config["_parts"] == {"denoise_fn": "video_ddpm.Unet3D"}
    assert config["objective"] == "pred_v"
    net_config = json.loads((folder / "denoise_fn" / "config.json").read_text())
    assert (net_config["_class_name"], net_config["cond_dim"]) == ("Unet3D", 4)
    populate_hub_cache(tmp_path / "hub", "someone/tiny-video-ddpm", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sources = ((folder, {}), ("someone/tiny-video-ddpm", {"cache_dir": tmp_path / "hub"}))
    for source, kwargs in sources:
        loaded = GaussianDiffusion.from_pretrained(source, **kwargs)
        assert not loaded.training
        assert loaded.config == model.config
        assert loaded.denoise_fn.config == model.denoise_fn.config
        for ours, theirs in zip(_outputs(loaded), expected, strict=True):
            assert torch.equal(ours, theirs)


def test_gaussian_diffusion_from_pretrained_takes_overrides_and_objects(tmp_path: Path) -> None:
    model = _diffusion()
    folder = model.save_pretrained(tmp_path / "diffusion")

    def encoder(texts: list[str], device: torch.device | None = None) -> torch.Tensor:
        return torch.zeros(len(texts), 4)

    loaded = GaussianDiffusion.from_pretrained(
        folder, text_encoder=encoder, cond_drop_prob=0.5, map_location="cpu"
    )
    assert loaded.text_encoder is encoder
    assert loaded.cond_drop_prob == 0.5
    net = Unet3D(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8, cond_dim=4)
    weight = net.init_conv.weight.detach().clone()
    given = GaussianDiffusion.from_pretrained(folder, denoise_fn=net)
    assert given.denoise_fn is net  # a part passed by keyword is used as given, not loaded
    assert torch.equal(net.init_conv.weight, weight)
    assert torch.equal(given.betas, model.betas)
    named = GaussianDiffusion(Unet3D(dim=8, dim_mults=(1, 2)), image_size=8, num_frames=2,
                              timesteps=10, text_encoder="some/encoder")  # fmt: skip
    assert (
        json.loads((named.save_pretrained(tmp_path / "named") / "config.json").read_text())[
            "text_encoder"
        ]
        == "some/encoder"
    )
    assert GaussianDiffusion.from_pretrained(tmp_path / "named").text_encoder_name == "some/encoder"


def test_a_0_1_0_folder_loads_from_a_hub_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committed 0.1.0 folder, published as it is, loads by Hub id (offline) as from disk."""
    folder = Path(__file__).parent / "fixtures" / "v0_1_0" / "gaussian_diffusion"
    populate_hub_cache(tmp_path / "hub", "someone/old-video-ddpm", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = GaussianDiffusion.from_pretrained("someone/old-video-ddpm", cache_dir=tmp_path / "hub")
    local = GaussianDiffusion.from_pretrained(folder)
    assert not loaded.training
    assert loaded.config == local.config
    for name, tensor in local.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
