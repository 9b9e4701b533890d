"""The shipped `configs/*.toml` parse with `lumiere-video train`'s flags and build their base."""

from __future__ import annotations

from pathlib import Path

import pytest

from lumiere.demo.commands import _check_args, _train_parser
from lumiere.demo.models import base_unet_config
from lumiere.demo.training import _ints
from mp_layers.training import parse_train_args

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.toml"))


def test_configs_are_shipped() -> None:
    assert [path.name for path in CONFIGS] == ["128px.toml", "64px.toml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_config_builds_its_base(path: Path, tmp_path: Path) -> None:
    from diffusers import UNet2DModel

    args = parse_train_args(
        ["--config", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "run")],
        parser=_train_parser(),
    )
    _check_args(args)
    size = int(path.stem.removesuffix("px"))
    assert (args.image_size, args.frames, args.mixed_precision) == (size, 16, "bf16")
    channels = _ints("--base-channels", args.base_channels)
    config = base_unet_config(
        image_size=size, block_out_channels=channels, layers_per_block=args.layers_per_block
    )
    unet = UNet2DModel(**config)
    # attention only at the coarsest level, 8x8: affordable at 64 and 128 px
    assert size // 2 ** (len(channels) - 1) == 8
    assert config["down_block_types"][-1] == "AttnDownBlock2D"
    assert sum(p.numel() for p in unet.parameters()) > 10_000_000
