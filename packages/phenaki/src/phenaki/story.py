"""`make_video`: a multi-scene story (Phenaki, Villegas et al. 2022: a video from a sequence of
prompts), each scene sampled from its text and primed on the last frames of the one before."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mp_layers.typecheck import typechecked
from phenaki.model import Phenaki

__all__ = ["make_video"]


@typechecked
def make_video(
    phenaki: Phenaki,
    texts: Sequence[str],
    num_frames: int | Sequence[int],
    prime_lengths: int | Sequence[int],
    *,
    cond_scale: float = 3.0,
    starting_temperature: float = 0.9,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """A multi-scene story: scene `i` is sampled from `texts[i]`, primed on the last
    `prime_lengths[i - 1]` frames of scene `i - 1` (`1 + j * pt` frames each). `num_frames` per
    scene (an int for all): `1 + k * pt` for the first, multiples of `pt` after. Returns the whole
    video `(1, c, sum(num_frames), H, W)` and the list of scenes."""
    if not texts:
        raise ValueError("texts: expected at least one scene")
    frames = [num_frames] * len(texts) if isinstance(num_frames, int) else list(num_frames)
    primes = (
        [prime_lengths] * (len(texts) - 1)
        if isinstance(prime_lengths, int)
        else list(prime_lengths)
    )
    if len(frames) != len(texts) or len(primes) < len(texts) - 1:
        raise ValueError(
            f"num_frames / prime_lengths: expected {len(texts)} and {len(texts) - 1} values, got "
            f"{len(frames)} and {len(primes)}"
        )
    scenes: list[Tensor] = []
    prime = None
    for index, (text, count) in enumerate(zip(texts, frames, strict=True)):
        scene = phenaki.sample(
            num_frames=count,
            texts=[text],
            prime_frames=prime,
            cond_scale=cond_scale,
            starting_temperature=starting_temperature,
            generator=generator,
        )
        scenes.append(scene)
        if index < len(texts) - 1:
            length = primes[index]
            if length > scene.shape[2]:
                raise ValueError(
                    f"prime_lengths[{index}]: expected at most the scene's {scene.shape[2]} "
                    f"frames, got {length}"
                )
            prime = scene[:, :, scene.shape[2] - length :]
    return torch.cat(scenes, dim=2), scenes
