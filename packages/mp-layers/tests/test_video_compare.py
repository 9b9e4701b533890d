"""Measures against real clips (`mp_layers.video.compare`) and held-out splits of any data."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("av")

from mp_layers.training import EpochSubset, held_out_clips, held_out_split, write_report
from mp_layers.video import (
    MovingShapes,
    VideoFolder,
    colour_histogram_distance,
    mean_frame_difference,
    psnr,
    read_video,
    real_data_report,
    ssim,
    write_comparison_sheet,
)
from mp_layers.video.clips import split_timeline
from mp_layers.video.testing import frame_index, write_indexed_video, write_video_folder


def test_mean_frame_difference_measures_motion() -> None:
    still = torch.full((2, 3, 5, 8, 8), 0.3)
    assert mean_frame_difference(still) == 0.0
    flicker = still.clone()
    flicker[:, :, 1::2] = 0.7  # every frame pair differs by 0.4 everywhere
    assert mean_frame_difference(flicker) == pytest.approx(0.4)
    assert math.isnan(mean_frame_difference(still[:, :, :1]))
    with pytest.raises(ValueError, match=r"expected float clips \(b, c, f, h, w\)"):
        mean_frame_difference(torch.zeros(3, 5, 8, 8))


def test_colour_histogram_distance_is_zero_for_the_same_colours_and_one_for_disjoint() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(4, 3, 4, 8, 8, generator=generator)
    assert colour_histogram_distance(a, a.flip(0)) == pytest.approx(0.0, abs=1e-6)
    dark, bright = torch.full((1, 3, 2, 4, 4), 0.1), torch.full((2, 3, 3, 6, 6), 0.9)
    assert colour_histogram_distance(dark, bright) == pytest.approx(1.0)
    half = torch.cat([dark.expand(1, 3, 2, 4, 4), torch.full((1, 3, 2, 4, 4), 0.9)])
    assert colour_histogram_distance(half, bright) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same channels"):
        colour_histogram_distance(a, a[:, :1])


def test_psnr_and_ssim() -> None:
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 3, 16, 16, generator=generator)
    noisy = clean.clone()
    noisy[1] = (clean[1] + 0.1 * torch.randn(clean[1].shape, generator=generator)).clamp(0, 1)
    values = psnr(clean, noisy)
    assert math.isinf(values[0])
    assert 15 < values[1] < 25
    shifted = (clean + 0.1).clamp(0, 1)
    assert psnr(clean, shifted)[0] == pytest.approx(
        10 * math.log10(1 / float((clean[0] - shifted[0]).square().mean())), rel=1e-5
    )
    similarity = ssim(clean, noisy)
    assert similarity[0] == pytest.approx(1.0, abs=1e-5)
    assert 0.0 < similarity[1] < 0.95
    assert ssim(clean, 1 - clean).max() < 0.1  # inverted contrast: no structure in common
    with pytest.raises(ValueError, match="expected the shape of the reference"):
        psnr(clean, clean[:, :, :2])


def test_real_data_report_and_comparison_sheet(tmp_path: Path) -> None:
    real = torch.rand(3, 3, 6, 20, 30)
    samples = torch.rand(4, 3, 4, 16, 16)
    figures, line = real_data_report(samples, real)
    assert set(figures) == {"motion", "real_motion", "colour_histogram_distance"}
    assert "vs 3 held-out real clips" in line
    gif, mp4 = write_comparison_sheet(samples, real, tmp_path / "sheet.gif", fps=5)
    assert (gif.name, mp4.name) == ("sheet.gif", "sheet.mp4")
    sheet = read_video(gif)
    assert sheet.shape[1] == 4  # the samples' frames
    assert sheet.shape[2] == 2 * (2 + 16 + 2)  # one row of real clips above one of samples
    assert read_video(mp4).shape[1] == 4


def test_split_timeline_keeps_the_parts_apart() -> None:
    timeline = torch.arange(100).numpy()
    train = split_timeline(timeline, 8, "train", 0.1)
    held = split_timeline(timeline, 8, "held_out", 0.1)
    assert len(train) == 90
    assert len(held) == 10
    assert train[-1] < held[0]
    # A clip's span when 10% is shorter, never more than half.
    assert len(split_timeline(timeline, 30, "held_out", 0.1)) == 30
    assert len(split_timeline(timeline[:20], 30, "held_out", 0.1)) == 10
    assert len(split_timeline(timeline[:1], 8, "train", 0.1)) == 1
    with pytest.raises(ValueError, match="split: expected one of"):
        split_timeline(timeline, 8, "test", 0.1)


def test_small_folder_is_split_in_time_and_clips_never_overlap(tmp_path: Path) -> None:
    write_video_folder(tmp_path)
    folder = VideoFolder(tmp_path, image_size=16, num_frames=4, clips_per_video=3)
    split = held_out_split(folder)
    assert split.by == "time"
    assert "3 videos" in split.description
    assert len(split.train) == len(split.held_out) == len(folder)
    for index in range(len(folder)):
        train_frames = split.train.plan(index)["frame_indices"]
        held_frames = split.held_out.plan(index)["frame_indices"]
        assert train_frames.max() < held_frames.min()
    clips = held_out_clips(split.held_out, 2)
    assert clips["video"].shape == (2, 3, 4, 16, 16)
    first = split.held_out[0]
    assert frame_index(first["video"][:, 0]) == int(first["frame_indices"][0])


def test_large_folder_holds_out_whole_videos(tmp_path: Path) -> None:
    for index in range(10):
        write_indexed_video(tmp_path / f"v{index}.mp4", 6, width=32, height=24)
    folder = VideoFolder(tmp_path, image_size=16, num_frames=4)
    split = held_out_split(folder, fraction=0.2)
    assert split.by == "videos"
    assert split.description == "2 of 10 videos held out"
    train_sources = {split.train[i]["source"] for i in range(len(split.train))}
    held_sources = {split.held_out[i]["source"] for i in range(len(split.held_out))}
    assert len(train_sources) == 8
    assert len(held_sources) == 2
    assert not train_sources & held_sources
    assert isinstance(split.train, EpochSubset)


def test_item_datasets_keep_at_least_one_item_each_side() -> None:
    split = held_out_split(MovingShapes(3, image_size=8, num_frames=2))
    assert (len(split.train), len(split.held_out)) == (2, 1)
    with pytest.raises(ValueError, match="at least 2 items"):
        held_out_split(MovingShapes(1, image_size=8, num_frames=2))


def test_write_report_is_plain_json(tmp_path: Path) -> None:
    import json

    path = write_report(tmp_path, {"psnr": math.inf, "out": tmp_path, "n": torch.tensor(3)})
    assert json.loads(path.read_text()) == {"psnr": None, "out": str(tmp_path), "n": 3}
