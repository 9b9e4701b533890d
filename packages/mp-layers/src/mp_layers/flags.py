"""`DataFlags`: the data flags of the train commands as dataclass fields (no heavy imports, so a
package's run config can inherit them without importing the training loop)."""

from __future__ import annotations

from dataclasses import dataclass

from mp_layers.typecheck import typechecked

__all__ = ["DataFlags"]


@typechecked
@dataclass(frozen=True)
class DataFlags:
    """The data flags of `add_train_arguments` as dataclass fields, for a package's run config
    (`class MyRunConfig(DataFlags)`): `num_workers_from_args` and `data_options` read them."""

    num_workers: int | None = None
    clips_per_video: str = "1"
    sampling: str = "random"
    frame_stride: int = 1
    clip_fps: float | None = None
    skip_undecodable: bool = False
