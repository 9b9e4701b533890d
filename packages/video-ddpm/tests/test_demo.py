"""The steps of the `video-ddpm` demo (`video_ddpm.demo`), importable without the CLI."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from video_ddpm.demo import (
    TrainSettings,
    build_model,
    make_loss_fn,
    make_run_config,
    write_run_config,
)
from video_ddpm.pretrained import model_from_config

SETTINGS = TrainSettings(
    out="unused",
    data="synthetic",
    seed=3,
    cond="class",
    num_classes=4,
    text_encoder=None,
    text_use_cls=False,
    image_size=8,
    frames=2,
    num_videos=8,
    dim=8,
    dim_mults=(1, 2),
    attn_heads=2,
    attn_dim_head=8,
    norm="rms",
    linear_attn=False,
    timesteps=10,
    beta_schedule="cosine",
    objective="pred_v",
    loss_type="l2",
    cond_drop_prob=0.1,
    lr=1e-3,
    warmup_steps=5,
)


def test_build_model_is_seeded_and_its_run_config_rebuilds_it(tmp_path: Path) -> None:
    model = build_model(SETTINGS)
    again = build_model(SETTINGS)
    for name, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name
    assert model.denoise_fn.cond_dim == 4
    config = make_run_config(model, SETTINGS)
    assert (config["format"], config["cond"], config["text_encoder"]) == (
        "video-ddpm",
        "class",
        None,
    )
    write_run_config(tmp_path / "run", config)
    rebuilt = model_from_config(config)
    assert rebuilt.config == model.config
    assert rebuilt.denoise_fn.config == model.denoise_fn.config
    assert build_model(replace(SETTINGS, cond="none", num_classes=None)).denoise_fn.cond_dim is None


def test_loss_fn_conditions_as_the_run_says() -> None:
    model = build_model(SETTINGS)
    videos = torch.rand(2, 3, 2, 8, 8)
    batch = {"video": videos, "label": torch.tensor([0, 3]), "text": ["a", "b"]}
    loss = make_loss_fn("class", 4)(model, batch)
    assert loss.shape == ()
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="expected labelled data"):
        make_loss_fn("class", 4)(model, {**batch, "label": torch.tensor([0, -1])})
    unconditional = build_model(replace(SETTINGS, cond="none", num_classes=None))
    assert torch.isfinite(make_loss_fn("none", None)(unconditional, batch))
