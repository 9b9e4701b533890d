"""Adapter folders on `mp_layers.hub`: `TemporalBlocks` save_pretrained -> from_pretrained is bit
identical, a Hub id loads offline from the cache, and a folder written by 0.1.0
(`tests/fixtures/v0_1_0/temporal_adapter`) loads and gives 0.1.0's outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from lumiere import ConvolutionInflationBlock, Lumiere, MPLumiere, TemporalBlocks
from lumiere.adapter import is_adapter_folder
from mp_layers.testing import populate_hub_cache

from .conftest import SIZE, unet2d

FIXTURE = Path(__file__).parent / "fixtures" / "v0_1_0" / "temporal_adapter"
LABEL = {"class_labels": torch.zeros(1, dtype=torch.long)}
PLACEMENT: dict[str, Any] = {
    "image_size": SIZE,
    "unet_time_kwarg": "timestep",
    "conv_module_names": ["down_blocks.0.resnets.0", "up_blocks.0.resnets.1"],
    "attn_module_names": ["mid_block"],
    "downsample_module_names": ["down_blocks.0.downsamplers.0"],
    "upsample_module_names": ["up_blocks.0.upsamplers.0"],
    "attn_inflation_kwargs": {"dim_head": 4, "heads": 2},
    "example_kwargs": LABEL,
}


def trained(klass: type[Lumiere] = Lumiere, **kwargs: Any) -> Lumiere:
    """A wrapper whose temporal blocks are no longer the identity (a bad load would show)."""
    wrapper = klass(unet2d(), **{**PLACEMENT, **kwargs})
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in wrapper.temporal_parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return wrapper


def run(wrapper: nn.Module) -> Tensor:
    """The wrapper's output in eval mode (MP convolutions renormalise their weights in training)."""
    wrapper.eval()
    video = torch.randn(2, 3, 4, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out: Tensor = wrapper(
            video, timestep=torch.tensor([5, 60]), class_labels=torch.tensor([0, 1])
        ).sample
    return out


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("klass", [Lumiere, MPLumiere])
def test_save_pretrained_then_from_pretrained_is_bit_identical(
    klass: type[Lumiere], tmp_path: Path
) -> None:
    wrapper = trained(klass)
    adapter = wrapper.temporal_adapter()
    assert adapter.convs is wrapper.convs  # shared, not copied
    folder = adapter.save_pretrained(tmp_path / "adapter")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "TemporalBlocks"
    assert config["wrapper"] == klass.__name__
    assert config["groups"]["attn"]["kwargs"] == {"dim_head": 4, "heads": 2}
    assert is_adapter_folder(folder)
    loaded = TemporalBlocks.from_pretrained(folder)
    assert loaded.config == adapter.config
    assert same_state(loaded, adapter)
    assert set(loaded.state_dict()) == set(wrapper.temporal_state_dict())
    again = klass.from_temporal(unet2d(), folder, example_kwargs=LABEL)
    assert type(again) is klass
    assert torch.equal(run(again), run(wrapper))
    fresh = klass(unet2d(), **PLACEMENT)  # a loaded TemporalBlocks applies as it is
    fresh.load_temporal(loaded)
    assert torch.equal(run(fresh), run(wrapper))


def test_a_hub_repo_id_loads_from_the_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapper = trained()
    folder = wrapper.save_temporal(tmp_path / "adapter")
    cache = tmp_path / "hub"
    populate_hub_cache(cache, "someone/tiny-motion-adapter", folder)
    populate_hub_cache(cache, "someone/old-motion-adapter", FIXTURE)  # a 0.1.0 folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = TemporalBlocks.from_pretrained("someone/tiny-motion-adapter", cache_dir=cache)
    assert same_state(loaded, wrapper.temporal_adapter())
    again = Lumiere.from_temporal(
        unet2d(), "someone/tiny-motion-adapter", cache_dir=cache, example_kwargs=LABEL
    )
    assert torch.equal(run(again), run(wrapper))
    old = TemporalBlocks.from_pretrained("someone/old-motion-adapter", cache_dir=cache)
    assert same_state(old, TemporalBlocks.from_pretrained(FIXTURE))


def test_a_0_1_0_folder_loads_and_gives_its_outputs(tmp_path: Path) -> None:
    """The weights load bit for bit; the output is 0.1.0's up to float rounding (the fixture was
    written on another machine: the 0.1.0 code itself reproduces it here to 7e-7, not exactly)."""
    expected = load_file(FIXTURE / "expected.safetensors")
    assert is_adapter_folder(FIXTURE)
    adapter = TemporalBlocks.from_pretrained(FIXTURE)
    stored = load_file(FIXTURE / "temporal.safetensors")
    state = adapter.state_dict()
    assert state.keys() == stored.keys()
    assert all(torch.equal(state[key], stored[key]) for key in stored)
    wrapper = Lumiere.from_temporal(unet2d(), FIXTURE, example_kwargs=LABEL)
    with torch.no_grad():
        output = wrapper(
            expected["video"], timestep=expected["time"], class_labels=expected["label"]
        ).sample
    torch.testing.assert_close(output, expected["output"], atol=1e-5, rtol=1e-5)
    # re-saved in the new layout, it gives the same outputs bit for bit
    wrapper.save_temporal(tmp_path / "resaved")
    assert not (tmp_path / "resaved" / "temporal_config.json").exists()
    resaved = Lumiere.from_temporal(unet2d(), tmp_path / "resaved", example_kwargs=LABEL)
    assert torch.equal(run(resaved), run(wrapper))
    assert TemporalBlocks.from_pretrained(tmp_path / "resaved").config == adapter.config


class OutsideBlock(ConvolutionInflationBlock):
    """A block class outside lumiere: never imported from a configuration file."""


def test_block_classes_outside_lumiere_are_passed_again(tmp_path: Path) -> None:
    wrapper = trained(conv_klass=OutsideBlock)
    wrapper.save_temporal(tmp_path / "adapter")
    with pytest.raises(ValueError, match="pass it as conv_klass="):
        TemporalBlocks.from_pretrained(tmp_path / "adapter")
    with pytest.raises(ValueError, match="pass it as conv_klass="):
        Lumiere.from_temporal(unet2d(), tmp_path / "adapter", example_kwargs=LABEL)
    loaded = TemporalBlocks.from_pretrained(tmp_path / "adapter", conv_klass=OutsideBlock)
    assert isinstance(loaded.convs[0], OutsideBlock)
    again = Lumiere.from_temporal(
        unet2d(), tmp_path / "adapter", example_kwargs=LABEL, conv_klass=OutsideBlock
    )
    assert torch.equal(run(again), run(wrapper))


def test_other_folders_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="temporal adapter folder"):
        TemporalBlocks.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="temporal adapter folder"):
        TemporalBlocks.from_pretrained(tmp_path / "empty")
    unet2d().save_pretrained(tmp_path / "unet")  # a diffusers folder: config.json of a UNet
    assert not is_adapter_folder(tmp_path / "unet")
    with pytest.raises(ValueError, match="not a lumiere-video temporal adapter"):
        trained().load_temporal(tmp_path / "unet")
    with pytest.raises(ValueError, match="UNet2DModel"):
        TemporalBlocks.from_pretrained(tmp_path / "unet")
    shutil.copytree(FIXTURE, tmp_path / "old")
    config = json.loads((tmp_path / "old" / "temporal_config.json").read_text())
    (tmp_path / "old" / "temporal_config.json").write_text(json.dumps({**config, "format": "x"}))
    with pytest.raises(ValueError, match="not a lumiere-video temporal adapter"):
        TemporalBlocks.from_pretrained(tmp_path / "old")
