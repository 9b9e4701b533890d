"""The shipped `configs/*.toml` parse with `video-ddpm train`'s flags and build their model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mp_layers.training import parse_train_args
from video_ddpm.cli import _train_parser, _train_settings
from video_ddpm.demo.models import build_model

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
    assert args.cond == "auto"  # text when the folder has captions, else none
    settings = dataclasses.replace(_train_settings(args), cond="none")
    model = build_model(settings)
    assert (model.image_size, model.num_frames) == (size, 16)
