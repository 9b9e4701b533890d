from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("av")  # mp_layers.video needs the [video] extra

from mp_layers.video import (
    SHAPE_MIN_SIDE,
    MovingShapes,
    collate_videos,
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


def real(
    size: int, count: int = 32, frames: int = 8, channels: int = 3, seed: int = 0
) -> tuple[MovingShapes, dict[str, torch.Tensor]]:
    dataset = MovingShapes(count, image_size=size, num_frames=frames, channels=channels, seed=seed)
    return dataset, collate_videos([dataset[i] for i in range(count)])


def test_connected_components_use_four_neighbours() -> None:
    mask = torch.tensor(
        [
            [1, 1, 0, 0, 1],
            [0, 1, 0, 1, 0],  # (1, 3) touches (0, 4) only diagonally
            [0, 0, 0, 0, 0],
            [1, 0, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    labels = connected_components(mask)
    assert labels.dtype == torch.int64
    assert bool((labels[~mask] == 0).all())
    assert bool((labels[mask] > 0).all())
    assert len(set(labels[mask].tolist())) == 5
    assert labels[0, 0] == labels[0, 1] == labels[1, 1]
    assert labels[3, 2] == labels[3, 3] == labels[3, 4]
    areas = component_areas(labels)
    assert areas.shape == (21,)
    assert sorted(areas[areas > 0].tolist()) == [1, 1, 1, 3, 3]
    # A spiral (long path) and batched leading dimensions.
    spiral = torch.zeros(2, 3, 9, 9, dtype=torch.bool)
    spiral[..., 0, :] = spiral[..., :, 8] = spiral[..., 8, :] = spiral[..., 2:, 0] = True
    spiral[..., 2, :7] = spiral[..., 2:7, 6] = spiral[..., 6, 2:7] = spiral[..., 4:7, 2] = True
    spiral_labels = connected_components(spiral)
    assert spiral_labels.shape == spiral.shape
    assert bool((component_areas(spiral_labels) > 0).sum(-1).eq(1).all())
    assert connected_components(torch.zeros(0, 4, 4, dtype=torch.bool)).shape == (0, 4, 4)


def test_object_masks_follow_the_palette_rule() -> None:
    video = torch.zeros(1, 3, 1, 2, 3)
    video[0, :, 0, 0, 0] = torch.tensor([0.6, 0.0, 0.0])  # nearer red than black
    video[0, :, 0, 0, 1] = torch.tensor([0.4, 0.0, 0.0])  # nearer black
    video[0, :, 0, 1, 2] = float("nan")  # counts as black
    assert object_masks(video)[0, 0].tolist() == [[True, False, False], [False, False, False]]
    grey = torch.tensor([0.0, 0.05, 0.07, 0.3]).view(1, 1, 1, 1, 4)  # blue's luma is 0.114
    assert object_masks(grey).flatten().tolist() == [False, False, True, True]


@pytest.mark.parametrize(("size", "channels"), [(16, 3), (32, 3), (16, 1)])
def test_real_clips_show_one_object_per_frame(size: int, channels: int) -> None:
    # Stated calibration: 1.000 at image sizes 8, 16, 32 and 64 (RGB and luma); asserted >= 0.98.
    _, data = real(size, channels=channels)
    assert object_rate(data["video"]) >= 0.98


@pytest.mark.parametrize("size", [16, 32])
def test_real_shapes_are_recognised(size: int) -> None:
    # Stated calibration: shape accuracy 1.000 on real clips at sizes 16 (side 4) and 32 (side 8).
    _, data = real(size)
    assert torch.equal(predict_shape(data["video"]), data["shape"])
    assert shape_accuracy(data["video"], data["shape"]) == 1.0
    assert shape_accuracy(data["video"], (data["shape"] + 1) % 3) == 0.0


def test_shapes_survive_noise_from_the_minimum_side() -> None:
    size = 4 * SHAPE_MIN_SIDE
    _, data = real(size)
    generator = torch.Generator().manual_seed(0)
    noisy = data["video"] + 0.2 * torch.randn(data["video"].shape, generator=generator)
    assert shape_accuracy(noisy.clamp(0, 1), data["shape"]) >= 0.95


def test_two_sprites_are_not_one_object() -> None:
    _, data = real(32, count=4)
    video = data["video"]
    double = torch.maximum(video, video.flip(-1).flip(-2))  # a second, mirrored sprite
    separate = (component_areas(connected_components(object_masks(double))) > 0).sum(-1) == 2
    frames = separate.float().mean().item()
    assert frames > 0.5
    assert object_rate(double) == pytest.approx(1.0 - frames)


def test_single_pixel_speckles_are_ignored() -> None:
    _, data = real(32, count=4)
    video = data["video"].clone()
    sprite = object_masks(video)
    near = torch.nn.functional.max_pool2d(sprite.float().flatten(0, 1), 5, 1, 2).view_as(sprite)
    grid = torch.zeros_like(sprite)
    grid[..., ::4, ::4] = True  # isolated single pixels, 3 apart
    speckles = grid & (near == 0)
    assert int(speckles.sum()) > 100
    video[:, 1] = torch.where(speckles, 1.0, video[:, 1])  # green dots
    assert object_rate(video) == 1.0
    assert torch.equal(predict_shape(video), data["shape"])
    assert object_rate(video, min_speck=1) == 0.0  # counted when specks are not allowed


def test_smears_and_empty_frames_are_rejected() -> None:
    video = torch.zeros(1, 3, 4, 32, 32)
    video[0, 0, 0, 4:12, 4:12] = 1.0  # the right size (side 8 square)
    video[0, 0, 1, 4:20, 4:20] = 1.0  # smeared: 4x the square, 5.2x the mean sprite area
    video[0, 0, 2, 4:7, 4:7] = 1.0  # 9 pixels: too small
    assert object_rate(video) == 0.25  # frame 3 is empty
    assert object_rate(video, area_range=(0.1, 10.0)) == 0.75
    assert object_rate(video, sprite_side=16) == 0.25  # now only the large blob fits


def test_motion_of_real_clips_matches_their_speed() -> None:
    # Stated calibration (256 clips, 16 frames): displacement 1.07 / 1.97 / 3.87 px/frame at
    # sizes 16 / 32 / 64 for a mean true speed of 0.99 / 1.98 / 3.97.
    dataset, data = real(32, count=32, frames=12)
    speed = sum(float(dataset.describe(i)["velocity"].norm()) for i in range(32)) / 32
    stats = motion_stats(data["video"])
    assert stats["displacement"] == pytest.approx(speed, rel=0.1)
    assert 0.3 < stats["path_deviation"] < 1.3  # rounding to whole pixels, not 0


def test_static_clips_do_not_move_and_jitter_is_seen() -> None:
    _, data = real(32, count=4, frames=6)
    static = data["video"][:, :, :1].expand(-1, -1, 6, -1, -1)
    assert motion_stats(static) == {"displacement": 0.0, "path_deviation": 0.0}
    jitter = static.clone()
    jitter[:, :, 1::2] = static[:, :, 1::2].roll(3, -1)  # 3 px right every other frame
    stats = motion_stats(jitter)
    assert stats["displacement"] > 1.0
    assert stats["path_deviation"] > 2.0  # reversals away from the borders are not bounces
    assert math.isnan(motion_stats(static[:, :, :1])["displacement"])  # no frame step
    blank = motion_stats(torch.zeros(1, 3, 4, 16, 16))
    assert math.isnan(blank["displacement"])
    assert math.isnan(blank["path_deviation"])


def test_real_motion_stats_are_cached_and_positive() -> None:
    first = real_motion_stats(16, 8, n=16)
    assert first == real_motion_stats(16, 8, n=16)
    assert first["displacement"] > 0.5
    with pytest.raises(ValueError, match="image_size"):
        real_motion_stats(4, 8)


def test_report_line_holds_every_figure() -> None:
    _, data = real(32, count=8)
    figures, line = sample_quality_report(data["video"], labels=data["label"], shapes=data["shape"])
    assert figures["colour"] == 1.0
    assert figures["object_rate"] == 1.0
    assert figures["shape"] == 1.0
    assert line.startswith("quality: colour 100.0% | one object 100.0% of frames | shape 100.0%")
    for key in ("displacement", "path_deviation", "real_displacement", "real_path_deviation"):
        value = figures[key]
        assert value is not None
        assert f"{value:.2f}" in line
    small, small_line = sample_quality_report(real(16, count=4)[1]["video"], shapes=[0, 1, 2, 0])
    assert small["shape"] is None
    assert small["colour"] is None
    assert "shape n/a (sprite side 4 < 6)" in small_line
    assert "colour" not in small_line


def test_validation() -> None:
    _, data = real(16, count=2)
    video = data["video"]
    with pytest.raises(ValueError, match=r"\(b, c, f, h, w\)"):
        object_rate(video[0])
    with pytest.raises(ValueError, match="c in"):
        object_rate(torch.zeros(1, 2, 2, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        object_masks(video.to(torch.uint8))
    with pytest.raises(TypeError, match="bool"):
        connected_components(torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"shape \(2,\), got \(3,\)"):
        shape_accuracy(video, [0, 1, 2])
    with pytest.raises(TypeError, match="integer shape"):
        shape_accuracy(video, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape indices in \[0, 2\]"):
        shape_accuracy(video, [0, 3])
    with pytest.raises(ValueError, match=r"colour indices in \[0, 3\]"):
        sample_quality_report(video, labels=[0, 4])
    with pytest.raises(ValueError, match="low <= high"):
        object_rate(video, area_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="sprite_side"):
        object_rate(video, sprite_side=1)
    with pytest.raises(ValueError, match="min_speck"):
        object_rate(video, min_speck=0)
    assert predict_shape(torch.zeros(2, 3, 2, 16, 16)).tolist() == [-1, -1]
