"""`lumiere-video train --data FOLDER` on a user's own videos: held-out data, figures of that data
(no MovingShapes figure), report.json and a TensorBoard log. Tiny, offline, seeded, CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("mp_layers.training")
pytest.importorskip("mp_layers.video")
pytest.importorskip("av")

from lumiere.cli import REPORT_FILE, main, sample
from mp_layers.video.testing import write_video_folder

try:
    from lumiere import Lumiere  # noqa: F401

    HAS_WRAPPER = True
except ImportError:  # pragma: no cover - only while the wrapper is being written
    HAS_WRAPPER = False

SIZE, FRAMES = 16, 2
TINY = [
    "--image-size", str(SIZE), "--frames", str(FRAMES), "--base-channels", "16,16",
    "--base-steps", "2", "--base-batch-size", "4", "--steps", "2", "--sample-steps", "2",
    "--warmup-steps", "1", "--no-progress", "--batch-size", "4", "--num-workers", "2",
]  # fmt: skip
# Figures of the synthetic MovingShapes data that must not appear for the user's videos.
MOVING_SHAPES_KEYS = {
    "colour_accuracy",
    "frame_colour_accuracy",
    "base_frame_colour_accuracy",
    "object_rate",
    "base_object_rate",
    "displacement",
    "base_displacement",
    "real_displacement",
    "displacement_vs_real",
    "smoother_than_base",
    "path_deviation",
}
REAL_FIGURES = {"motion", "real_motion", "colour_histogram_distance", "sheet_gif", "sheet_mp4"}


def _keys(value: Any) -> set[str]:
    """Every key of a nested JSON value."""
    if isinstance(value, dict):
        return set(value).union(*(_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_keys(v) for v in value))
    return set()


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    write_video_folder(folder)  # 3 mp4 files of different sizes and frame rates, 2 captions
    return folder


def _check_held_out_loss(losses: dict[str, float]) -> None:
    assert set(losses) == {"100", "500", "900"}
    assert all(value > 0 for value in losses.values())


@pytest.mark.skipif(not HAS_WRAPPER, reason="lumiere.Lumiere is not there yet")
def test_train_on_a_video_folder_reports_figures_of_that_data(
    videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["train", *TINY, "--data", str(videos), "--out", str(out), "--report-to", "tensorboard"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "target >= 75%" not in printed
    assert "colour accuracy" not in printed
    assert "px/frame" not in printed  # MovingShapes centroid displacement
    assert "held-out real clips" in printed
    assert "held-out diffusion loss" in printed

    report = json.loads((out / REPORT_FILE).read_text())
    assert report["stage1"]["step"] == 2
    assert report["stage2"]["step"] == 2
    assert not _keys(report) & MOVING_SHAPES_KEYS
    # 3 videos: held out in time (the end of every video), in both stages
    assert "each of 3 videos" in report["stage1"]["held_out"]
    assert "each of 3 videos" in report["stage2"]["held_out"]
    _check_held_out_loss(report["stage1"]["held_out_loss"])
    _check_held_out_loss(report["stage2"]["held_out_loss"])
    figures = report["figures"]
    assert figures["held_out"] == report["stage2"]["held_out"]
    assert figures["num_samples"] == 3  # one sample per held-out clip
    assert "colour" in figures["conditioning"]
    for name in ("samples_vs_real", "base_samples_vs_real"):
        assert set(figures[name]) == REAL_FIGURES, name
        assert 0.0 <= figures[name]["colour_histogram_distance"] <= 1.0
        assert figures[name]["real_motion"] > 0  # the indexed test videos change every frame
        for key in ("sheet_gif", "sheet_mp4"):
            assert Path(figures[name][key]).is_file()
    assert (out / "samples_vs_real.gif").is_file()
    assert (out / "base_samples_vs_real.mp4").is_file()
    assert (out / "samples.gif").is_file()
    assert (out / "base-run" / REPORT_FILE).is_file()  # stage 1 keeps its own loop
    assert json.loads((out / "lumiere_video.json").read_text())["data"] == "real"
    events = list(out.glob("**/events.out.tfevents.*"))
    assert events, "expected TensorBoard event files under OUT"
    assert any("base-run" in str(path) for path in events)  # stage 1 logs too
    assert any("base-run" not in str(path) for path in events)

    # sampling a real-data run prints no MovingShapes figure either
    summary = sample(["--out", str(out), "--steps", "1", "--num-samples", "4", "--no-progress"])
    assert "colour_accuracy" not in summary
    assert summary["motion"] >= 0
    assert "accuracy" not in capsys.readouterr().out


def test_base_only_on_a_video_folder(videos: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY, "--base-only", "--data", str(videos), "--out", str(out)]) == 0
    report = json.loads((out / REPORT_FILE).read_text())
    assert not _keys(report) & MOVING_SHAPES_KEYS
    _check_held_out_loss(report["stage1"]["held_out_loss"])
    assert set(report["figures"]["base_samples_vs_real"]) == REAL_FIGURES
    assert "samples_vs_real" not in report["figures"]
    assert (out / "base_samples_vs_real.gif").is_file()


def test_folder_without_videos_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a video\n")
    (folder / "table.csv").write_text("a,b\n1,2\n")
    (folder / "picture.json").write_text("{}\n")
    assert main(["train", *TINY, "--data", str(folder), "--out", str(tmp_path / "run")]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("lumiere-video train: error: ")
    assert "no video files" in lines[0]
    assert str(folder) in lines[0]
    assert not (tmp_path / "run" / "base-run" / "checkpoints").exists()


def test_diffusion_loss_at_a_fixed_timestep_is_reproducible() -> None:
    import torch

    from lumiere.demo import diffusion_loss_at, make_noise_scheduler

    scheduler = make_noise_scheduler(prediction_type="v_prediction")
    timesteps: list[torch.Tensor] = []

    def model(x: torch.Tensor, *, timestep: torch.Tensor, class_labels: torch.Tensor) -> Any:
        timesteps.append(timestep)
        return torch.zeros_like(x)

    clean = torch.rand(2, 3, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.tensor([0, 1])

    def loss(t: int, seed: int) -> float:
        generator = torch.Generator().manual_seed(seed)
        return float(diffusion_loss_at(model, clean, labels, scheduler, t, generator))

    assert loss(500, 0) == loss(500, 0)
    assert loss(500, 0) != loss(500, 1)
    assert all(torch.equal(t, torch.tensor([500, 500])) for t in timesteps)
    with pytest.raises(ValueError, match=r"timestep: expected an int in \[0, 1000\)"):
        loss(1000, 0)
