"""C-ViViT's token geometry: how many tokens a video of `F` frames has, and which are valid.

The first frame is patched on its own (`p1 x p2`) and the rest as tubelets (`pt x p1 x p2`), so a
video of `F = 1 + k pt` frames of `H x W` is a token grid `(t', h', w') = (1 + k, H / p1, W / p2)`.
A frame mask `(b, F)` (variable-length or mixed image/video batches) keeps each clip's first frame
and `1 + j pt` frames; a tubelet's token is valid when any of its frames is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import Tensor

__all__ = ["PatchGeometry"]


@dataclass(frozen=True)
class PatchGeometry:
    """How frames become patches: `channels`, the frame `image_size` `(H, W)`, the spatial
    `patch` `(p1, p2)` and the frames per tubelet `temporal_patch_size` (`pt`)."""

    channels: int
    image_size: tuple[int, int]
    patch: tuple[int, int]
    temporal_patch_size: int

    @property
    def frame_inputs(self) -> int:
        """Values in one frame's patch: `c p1 p2`."""
        return self.channels * self.patch[0] * self.patch[1]

    @property
    def patch_height_width(self) -> tuple[int, int]:
        """Tokens per frame along height and width: `(H // p1, W // p2)`."""
        return self.image_size[0] // self.patch[0], self.image_size[1] // self.patch[1]

    @property
    def image_num_tokens(self) -> int:
        """Tokens of one frame (or of one tubelet step): `h' * w'`."""
        h, w = self.patch_height_width
        return h * w

    def check_num_frames(self, num_frames: int, include_first_frame: bool = True) -> None:
        """`num_frames` is `1 + k pt` (`k pt` after a first frame, without `include_first_frame`)."""
        rest = num_frames - 1 if include_first_frame else num_frames
        if rest < 0 or rest % self.temporal_patch_size:
            form = "1 + k * " if include_first_frame else "k * "
            raise ValueError(
                f"num_frames: expected {form}temporal_patch_size ({self.temporal_patch_size}) "
                f"frames, got {num_frames}"
            )

    def video_patch_shape(
        self, num_frames: int, include_first_frame: bool = True
    ) -> tuple[int, int, int]:
        """The token grid `(t', h', w')` of a video of `num_frames` frames."""
        self.check_num_frames(num_frames, include_first_frame)
        rest = num_frames - 1 if include_first_frame else num_frames
        steps = int(include_first_frame) + rest // self.temporal_patch_size
        return (steps, *self.patch_height_width)

    def frames_per_num_tokens(self, num_tokens: int) -> int:
        """Frames of a video of `num_tokens` tokens: `(n / (h' w') - 1) pt + 1`."""
        per_step = self.image_num_tokens
        if num_tokens < per_step or num_tokens % per_step:
            raise ValueError(
                f"num_tokens: expected a positive multiple of the {per_step} tokens per frame, "
                f"got {num_tokens}"
            )
        return (num_tokens // per_step - 1) * self.temporal_patch_size + 1

    def check_frame_mask(self, mask: Tensor, batch: int, frames: int) -> Tensor:
        """A frame mask `(batch, frames)` as bool, each clip keeping its first frame and
        `1 + j pt` frames."""
        if mask.shape != (batch, frames):
            raise ValueError(
                f"mask: expected shape (batch, frames) = {(batch, frames)}, got {tuple(mask.shape)}"
            )
        mask = mask.bool()
        counts = mask.sum(dim=-1)
        pt = self.temporal_patch_size
        if bool(((counts - 1) % pt != 0).any()) or not bool(mask[:, 0].all()):
            raise ValueError(
                "mask: expected each clip to keep its first frame and 1 + k * "
                f"temporal_patch_size ({pt}) frames, got counts {counts.tolist()}"
            )
        return mask

    def video_token_mask(self, frame_mask: Tensor, batch: int, frames: int) -> Tensor:
        """Token mask `(b, t' h' w')` of a frame mask `(b, F)`: a tubelet is valid if any of its
        frames is."""
        self.check_num_frames(frames)
        mask = self.check_frame_mask(frame_mask, batch, frames)
        rest = rearrange(mask[:, 1:], "b (t p) -> b t p", p=self.temporal_patch_size).any(dim=-1)
        steps = torch.cat((mask[:, :1], rest), dim=-1)
        return repeat(steps, "b t -> b (t hw)", hw=self.image_num_tokens)
