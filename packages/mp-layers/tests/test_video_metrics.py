from __future__ import annotations

import pytest
import torch

pytest.importorskip("av")  # mp_layers.video needs the [video] extra

from mp_layers.video import (
    MovingShapes,
    collate_videos,
    palette_color_accuracy,
    predict_palette_color,
)


def batch(channels: int = 3, count: int = 16) -> dict[str, torch.Tensor]:
    dataset = MovingShapes(count, image_size=16, num_frames=4, channels=channels, seed=1)
    return collate_videos([dataset[i] for i in range(count)])


def test_true_labels_score_one_and_shifted_labels_zero() -> None:
    data = batch()
    assert torch.equal(predict_palette_color(data["video"]), data["label"])
    assert palette_color_accuracy(data["video"], data["label"]) == 1.0
    assert palette_color_accuracy(data["video"], (data["label"] + 1) % 4) == 0.0
    assert palette_color_accuracy(data["video"], data["label"].tolist()) == 1.0


def test_grey_clips_are_measured_by_luma() -> None:
    data = batch(channels=1)
    assert palette_color_accuracy(data["video"], data["label"]) == 1.0


def test_robust_to_noise_and_dim_colours() -> None:
    data = batch()
    generator = torch.Generator().manual_seed(0)
    noisy = data["video"] * 0.8 + 0.1 * torch.randn(data["video"].shape, generator=generator)
    assert palette_color_accuracy(noisy.clamp(0, 1), data["label"]) == 1.0


def test_blank_clips_are_wrong() -> None:
    blank = torch.zeros(3, 3, 4, 8, 8)
    assert predict_palette_color(blank).tolist() == [-1, -1, -1]
    assert palette_color_accuracy(blank, [0, 1, 2]) == 0.0
    assert predict_palette_color(torch.full((1, 3, 2, 4, 4), float("nan"))).tolist() == [-1]


def test_the_dominant_colour_wins() -> None:
    video = torch.zeros(1, 3, 2, 8, 8)
    video[0, 0, :, :4] = 1.0  # a red half
    video[0, 1, :, 7, 7] = 1.0  # one green pixel (its red channel is on too: yellow)
    assert predict_palette_color(video).tolist() == [0]


def test_validation() -> None:
    data = batch(count=2)
    with pytest.raises(ValueError, match="shape"):
        palette_color_accuracy(data["video"], [0, 1, 2])
    with pytest.raises(ValueError, match="colour indices"):
        palette_color_accuracy(data["video"], [0, 4])
    with pytest.raises(TypeError, match="integer"):
        palette_color_accuracy(data["video"], torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="b, c, f, h, w"):
        predict_palette_color(data["video"][0])
    with pytest.raises(TypeError, match="floating"):
        predict_palette_color(torch.zeros(1, 3, 1, 2, 2, dtype=torch.uint8))
