"""The shipped `configs/*.toml` parse with `karras-unet3d train`'s flags and build their model."""

from __future__ import annotations

from pathlib import Path

import pytest

from karras_unet3d import KarrasUnet3D
from karras_unet3d.cli import _train_parser, _train_settings
from mp_layers.training import parse_train_args

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.toml"))


def test_configs_are_shipped() -> None:
    assert [path.name for path in CONFIGS] == ["128px.toml", "64px.toml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_config_builds_its_model(path: Path, tmp_path: Path) -> None:
    args = parse_train_args(
        ["--config", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "run")],
        parser=_train_parser(),
    )
    size = int(path.stem.removesuffix("px"))
    assert (args.image_size, args.frames, args.mixed_precision) == (size, 16, "bf16")
    assert args.gradient_checkpointing
    settings = _train_settings(args)
    net = KarrasUnet3D.from_config(settings["net"])  # sigma_data is measured on the data later
    assert settings["net"]["num_classes"] is None  # a folder of videos: unconditional
    assert (net.image_size, net.frames) == (size, 16)
