"""`video-ddpm sample` with the conditioning flags (shared with karras-unet3d), on a tiny
class-conditional MovingShapes run and a real h264 file (34x22, 25 fps)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("mp_layers.training")
pytest.importorskip("mp_layers.video")

from mp_layers.video import read_video
from mp_layers.video.testing import write_indexed_video
from video_ddpm.cli import main, sample, train

from .test_cli import TINY_RUN


def test_extend_long_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    train([*TINY_RUN, "--out", str(run), "--cond", "class"])
    clip = tmp_path / "clip.mp4"
    write_indexed_video(clip, 3, width=34, height=22, fps=25, keyframe_interval=2)
    common = ["--checkpoint", str(run), "--sample-steps", "2", "--num-per-row", "1"]
    out = tmp_path / "extended.gif"
    summary = sample([*common, "--out", str(out), "--init-video", str(clip), "--extend", "5",
                      "--overlap", "1"])  # fmt: skip
    assert (summary["mode"], summary["frames"], summary["given_frames"]) == ("extend", 5, 3)
    assert read_video(out).shape[1] == 5
    assert 0.0 <= summary["color_accuracy"] <= 1.0  # one row per colour class
    summary = sample([*common, "--out", str(tmp_path / "long.mp4"), "--frames", "6",
                      "--sampler", "ddpm", "--sample-steps", "10"])  # fmt: skip
    assert (summary["mode"], summary["frames"]) == ("long sample", 6)
    argv = ["sample", *common, "--out", str(tmp_path / "x.gif"), "--init-video", str(clip),
            "--interpolate", "1"]  # fmt: skip
    assert main(argv) == 1
    assert "--interpolate: expected an int >= 2, got 1" in capsys.readouterr().err
