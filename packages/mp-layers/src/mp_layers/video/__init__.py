"""mp_layers.video: video files, datasets and a colour measure (extra `mp-layers[video]`).

Files: `read_video` (.gif, .mp4, .webm, .avi, or a folder of numbered .png/.jpg frames →
float32 RGB `(3, F, H, W)` in [0, 1]), `write_video` (.gif, .mp4; atomic), `video_grid` (a batch
`(B, C, F, H, W)` tiled into one sample-sheet video), `count_frames`, `resize_center_crop`.
Datasets: `VideoFolder` (clips on disk, with caption sidecars) and `MovingShapes` (the embedded
synthetic default), whose items are dicts with the same keys `video`, `label`, `shape`, `text`,
batched by `collate_videos`. Measure: `palette_color_accuracy` / `predict_palette_color` against
the `MovingShapes` palette (`PALETTE`, `COLOR_NAMES`, `SHAPE_NAMES`).
Sample quality (`quality`): `object_rate`, `shape_accuracy` / `predict_shape`, `motion_stats` /
`real_motion_stats` and `sample_quality_report`, on `object_masks` / `connected_components`.
Against real clips, for any data (`compare`): `mean_frame_difference`, `colour_histogram_distance`,
`psnr`, `ssim`, `real_data_report` and `write_comparison_sheet` (real clips above samples).
"""

from mp_layers.video._color import COLOR_NAMES, LUMA_WEIGHTS, PALETTE
from mp_layers.video.compare import (
    colour_histogram_distance,
    mean_frame_difference,
    psnr,
    real_data_report,
    ssim,
    write_comparison_sheet,
)
from mp_layers.video.datasets import VideoFolder, collate_videos
from mp_layers.video.io import (
    FRAME_SUFFIXES,
    VIDEO_SUFFIXES,
    count_frames,
    read_video,
    resize_center_crop,
    video_grid,
    write_video,
)
from mp_layers.video.metrics import palette_color_accuracy, predict_palette_color
from mp_layers.video.quality import (
    SHAPE_MIN_SIDE,
    component_areas,
    connected_components,
    motion_stats,
    object_masks,
    object_rate,
    predict_shape,
    real_motion_stats,
    sample_quality_report,
    shape_accuracy,
)
from mp_layers.video.shapes import SHAPE_NAMES, MovingShapes
from mp_layers.video.shards import VideoShards

__all__ = [
    "COLOR_NAMES",
    "FRAME_SUFFIXES",
    "LUMA_WEIGHTS",
    "PALETTE",
    "SHAPE_MIN_SIDE",
    "SHAPE_NAMES",
    "VIDEO_SUFFIXES",
    "MovingShapes",
    "VideoFolder",
    "VideoShards",
    "collate_videos",
    "colour_histogram_distance",
    "component_areas",
    "connected_components",
    "count_frames",
    "mean_frame_difference",
    "motion_stats",
    "object_masks",
    "object_rate",
    "palette_color_accuracy",
    "predict_palette_color",
    "predict_shape",
    "psnr",
    "read_video",
    "real_data_report",
    "real_motion_stats",
    "resize_center_crop",
    "sample_quality_report",
    "shape_accuracy",
    "ssim",
    "video_grid",
    "write_comparison_sheet",
    "write_video",
]
