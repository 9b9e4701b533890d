"""The shipped `configs/*.toml` parse with `phenaki train-tokenizer`'s flags and build their
tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mp_layers.training import parse_train_args
from phenaki.cli_tokenizer import _train_parser, build_tokenizer

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.toml"))


def test_configs_are_shipped() -> None:
    assert [path.name for path in CONFIGS] == ["tokenizer-128px.toml", "tokenizer-64px.toml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_config_builds_its_tokenizer(path: Path, tmp_path: Path) -> None:
    args = parse_train_args(
        ["--config", str(path), "--data", str(tmp_path), "--out", str(tmp_path / "run")],
        parser=_train_parser(),
    )
    size = int(path.stem.removeprefix("tokenizer-").removesuffix("px"))
    assert (args.image_size, args.frames, args.mixed_precision) == (size, 17, "bf16")
    tokenizer = build_tokenizer(args)
    # 17 frames: the first frame is its own tubelet, then 8 tubelets of 2 frames
    assert tokenizer.num_tokens_per_frames(17) == 9 * (size // args.patch_size) ** 2
    with torch.no_grad():  # one frame through encoder and decoder at the config's size
        video = torch.rand(1, 3, 1, size, size)
        assert tokenizer(video, return_recons_only=True).shape == video.shape
