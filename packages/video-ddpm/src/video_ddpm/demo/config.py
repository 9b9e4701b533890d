"""The settings of a `video-ddpm` demo run: what the CLI's flags say, as plain dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CONDITIONS", "CONFIG_FILE", "DEFAULT_PROMPTS", "SampleSettings", "TrainSettings"]

CONFIG_FILE = "config.json"
"""The run config in a run folder: network, diffusion, conditioning (`make_run_config`)."""
CONDITIONS = ("auto", "none", "class", "text")
# One prompt per colour for the final samples of a MovingShapes run (rows of samples.gif).
DEFAULT_PROMPTS = (
    "a red circle moving right",
    "a green square moving left",
    "a blue triangle moving down",
    "a yellow circle moving up",
)


@dataclass(frozen=True)
class TrainSettings:
    """A training run: conditioning, data, network, diffusion and optimisation.

    `cond` is one of `CONDITIONS` ("auto": text for MovingShapes and captioned videos, none
    for videos without captions; resolved by `train_job`); `num_classes` is the class count of `cond="class"` (None
    otherwise); `text_encoder` a transformers name or folder (None: all-MiniLM-L6-v2), pooled
    with [CLS] when `text_use_cls`. `data` is "synthetic" (MovingShapes, `num_videos` clips) or a
    folder of videos.
    """

    out: str
    data: str
    seed: int
    cond: str
    num_classes: int | None
    text_encoder: str | None
    text_use_cls: bool
    image_size: int
    frames: int
    num_videos: int
    dim: int
    dim_mults: tuple[int, ...]
    attn_heads: int
    attn_dim_head: int
    norm: str
    linear_attn: bool
    timesteps: int
    beta_schedule: str
    objective: str
    loss_type: str
    cond_drop_prob: float
    lr: float
    warmup_steps: int
    data_options: dict[str, Any] = field(default_factory=dict)  # VideoFolder/VideoShards kwargs


@dataclass(frozen=True)
class SampleSettings:
    """A sample sheet: `per_row` samples per prompt (`prompts`: '|'-separated, None: the
    defaults) or class, by `sampler` in `steps` steps with guidance weight `guidance` (None: 3.0
    for a conditional model, 1.0 without a condition); `frames`
    per clip (None: the training frames), seeded by `seed`, written at `fps`."""

    prompts: str | None = None
    per_row: int = 4
    sampler: str = "ddim"
    steps: int | None = 50
    guidance: float | None = None
    frames: int | None = None
    seed: int = 0
    fps: int = 8
