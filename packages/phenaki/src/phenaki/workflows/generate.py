"""Sampling a trained Phenaki run (`phenaki sample`, `phenaki story`): clips and multi-scene stories.

A run is a `phenaki train` folder (or its `phenaki/` folder, `Phenaki.from_pretrained`); its text
encoder is loaded by name or folder. `sample_clips` writes one clip per text side by side,
`tell_story` one video whose scene `i + 1` starts from the last frames of scene `i`
(`phenaki.story.make_video`); both to a `.gif` or `.mp4` file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mp_layers.typecheck import typechecked
from phenaki.model import Phenaki
from phenaki.story import make_video
from phenaki.workflows.text_to_video import RUN_FOLDER, text_encoder

__all__ = ["SampleConfig", "StoryConfig", "load_run", "sample_clips", "tell_story", "write_clip"]


@typechecked
@dataclass(frozen=True, kw_only=True)
class _GenerationConfig:
    run: str = "runs/phenaki"  # a `phenaki train` folder or its phenaki/ folder
    out: str  # the video file to write (.gif or .mp4)
    texts: tuple[str, ...]
    text_encoder: str | None = None  # the encoder the run was trained with
    guidance: float = 3.0  # classifier-free guidance scale
    temperature: float = 0.9  # starting sampling temperature
    seed: int = 0
    fps: int = 8


@typechecked
@dataclass(frozen=True, kw_only=True)
class SampleConfig(_GenerationConfig):
    """`phenaki sample`: one clip of `frames` (`1 + k * pt`) frames per text."""

    frames: int = 9


@typechecked
@dataclass(frozen=True, kw_only=True)
class StoryConfig(_GenerationConfig):
    """`phenaki story`: one scene per text; `frames` per scene and `primes` (frames that carry
    over) per transition, each one value for all or one per scene / transition."""

    frames: int | tuple[int, ...] = (9, 6)
    primes: int | tuple[int, ...] = 3


def load_run(run: str, encoder: str | None) -> Phenaki:
    """The `Phenaki` of a run folder (or of its `phenaki/` folder) with the text encoder `encoder`
    (a name or folder; None: the default MiniLM)."""
    folder = Path(run)
    if (folder / RUN_FOLDER / "config.json").is_file():
        folder = folder / RUN_FOLDER
    return Phenaki.from_pretrained(folder, text_encoder=text_encoder(encoder))


def write_clip(video: Tensor, path: str, fps: int) -> None:
    """Write a video `(c, f, h, w)` (clamped to [0, 1]) to a `.gif` or `.mp4` file."""
    from mp_layers.video import write_video

    write_video(video.clamp(0, 1).cpu(), path, fps=fps)


@typechecked
def sample_clips(config: SampleConfig) -> dict[str, Any]:
    """Sample one clip per text and write them side by side; returns the file and the clips'
    shape `(b, c, f, h, w)`."""
    from mp_layers.video import video_grid

    model = load_run(config.run, config.text_encoder)
    video = model.sample(
        num_frames=config.frames,
        texts=list(config.texts),
        cond_scale=config.guidance,
        starting_temperature=config.temperature,
        generator=torch.Generator().manual_seed(config.seed),
    )
    write_clip(video_grid(video.clamp(0, 1), nrow=len(config.texts)), config.out, config.fps)
    print(f"wrote {config.out}: {len(config.texts)} clip(s) of {video.shape[2]} frames")
    return {"out": config.out, "shape": tuple(video.shape)}


@typechecked
def tell_story(config: StoryConfig) -> dict[str, Any]:
    """Sample the scenes of a story into one video; returns the file and the scene lengths."""
    model = load_run(config.run, config.text_encoder)
    video, scenes = make_video(
        model,
        list(config.texts),
        config.frames,
        config.primes,
        cond_scale=config.guidance,
        starting_temperature=config.temperature,
        generator=torch.Generator().manual_seed(config.seed),
    )
    write_clip(video[0], config.out, config.fps)
    lengths = [scene.shape[2] for scene in scenes]
    print(f"wrote {config.out}: {len(scenes)} scenes of {lengths} frames, {video.shape[2]} in all")
    return {"out": config.out, "scenes": lengths}
