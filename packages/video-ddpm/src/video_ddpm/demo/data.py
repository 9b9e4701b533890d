"""The data of a demo run and the loss the `Trainer` computes on its batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from video_ddpm.demo.config import TrainSettings

__all__ = ["build_data", "make_loss_fn"]

LossFn = Callable[[torch.nn.Module, dict[str, Any]], torch.Tensor]


def build_data(settings: TrainSettings) -> Any:
    """MovingShapes (`settings.data == "synthetic"`: `num_videos` clips, seeded by `seed`) or a
    folder of videos, as clips `(3, frames, image_size, image_size)` in [0, 1]."""
    from mp_layers.training import make_dataset

    synthetic = settings.data == "synthetic"
    return make_dataset(
        settings.data,
        image_size=settings.image_size,
        num_frames=settings.frames,
        seed=settings.seed,
        **({"num_videos": settings.num_videos} if synthetic else {}),
        **settings.data_options,
    )


def make_loss_fn(cond: str, num_classes: int | None) -> LossFn:
    """The training loss of a batch `{"video", "text", "label"}`: `model(videos, cond=...)` with
    the captions (`cond="text"`), one-hot labels (`"class"`) or no condition (`"none"`)."""

    def loss_fn(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        videos = batch["video"]
        if cond == "text":
            loss: torch.Tensor = model(videos, cond=list(batch["text"]))
        elif cond == "class":
            labels = batch["label"]
            if bool((labels < 0).any()):
                raise ValueError(
                    "--cond class: expected labelled data (MovingShapes), got label -1"
                )
            one_hot = torch.nn.functional.one_hot(labels, num_classes or 0).to(videos.dtype)
            loss = model(videos, cond=one_hot)
        else:
            loss = model(videos)
        return loss

    return loss_fn
