"""`MaskGit`, `TokenCritic`, `CViViT` and `Phenaki` (its parts in subfolders) on `mp_layers.hub`:
save_pretrained -> from_pretrained is bit-identical, from a folder and from a Hub id in a local
cache (offline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypeVar

import pytest
import torch

from mp_layers.testing import populate_hub_cache
from phenaki import CViViT, MaskGit, Phenaki, TokenCritic

M = TypeVar("M", bound=torch.nn.Module)
COMMON = {"num_tokens": 32, "max_seq_len": 64, "depth": 1, "heads": 2, "dim_head": 8}


def randomised(model: M) -> M:
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


TOKENIZER = {
    "dim": 16,
    "codebook_size": 32,
    "image_size": (16, 8),
    "patch_size": 4,
    "temporal_patch_size": 2,
    "spatial_depth": 1,
    "temporal_depth": 1,
    "dim_head": 8,
    "heads": 2,
    "use_vgg_and_gan": False,
}


def test_cvivit_round_trip_is_bit_identical_from_a_folder_and_a_hub_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = randomised(CViViT(**TOKENIZER))
    folder = model.save_pretrained(tmp_path / "tok")
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "CViViT"
    assert config["image_size"] == [16, 8]
    video = torch.rand(2, 3, 5, 16, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        codes = model(video, return_only_codebook_ids=True)
        recon = model.decode_from_codebook_indices(codes)
    populate_hub_cache(tmp_path / "hub", "someone/tiny-cvivit", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for source, kwargs in ((folder, {}), ("someone/tiny-cvivit", {"cache_dir": tmp_path / "hub"})):
        loaded = CViViT.from_pretrained(source, **kwargs).eval()
        assert loaded.image_size == (16, 8)
        with torch.no_grad():
            assert torch.equal(loaded(video, return_only_codebook_ids=True), codes)
            assert torch.equal(loaded.decode_from_codebook_indices(codes), recon)


def test_phenaki_saves_its_parts_in_subfolders_and_round_trips_bit_for_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cvivit = randomised(CViViT(**TOKENIZER))
    model = Phenaki(
        maskgit=MaskGit(dim=16, unconditional=True, **{**COMMON, "max_seq_len": 256}),
        cvivit=cvivit,
        critic=TokenCritic(dim=16, has_cross_attn=False, **{**COMMON, "max_seq_len": 256}),
        steps=3,
    )
    randomised(model)
    folder = model.save_pretrained(tmp_path / "run")
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "Phenaki"
    assert config["_parts"] == {
        "maskgit": "phenaki.MaskGit",
        "cvivit": "phenaki.CViViT",
        "critic": "phenaki.TokenCritic",
    }
    assert config["steps"] == 3
    for part in ("maskgit", "cvivit", "critic"):
        assert (folder / part / "model.safetensors").is_file(), part
    ids = torch.randint(0, 32, (2, 3, 4, 2), generator=torch.Generator().manual_seed(1))

    def outputs(m: Phenaki) -> list[torch.Tensor]:
        with torch.no_grad():
            return [
                m.maskgit(ids.flatten(1), video_patch_shape=(3, 4, 2)),
                m.critic(ids.flatten(1), video_patch_shape=(3, 4, 2)),  # type: ignore[misc]
                m.sample(num_frames=5, batch_size=2, generator=torch.Generator().manual_seed(2)),
            ]

    expected = outputs(model)
    populate_hub_cache(tmp_path / "hub", "someone/tiny-phenaki", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for source, kwargs in ((folder, {}), ("someone/tiny-phenaki", {"cache_dir": tmp_path / "hub"})):
        loaded = Phenaki.from_pretrained(source, **kwargs).eval()
        assert isinstance(loaded.critic, TokenCritic)
        for a, b in zip(outputs(loaded), expected, strict=True):
            assert torch.equal(a, b)
