"""`karras-unet3d sample` with conditioning flags, on a tiny MovingShapes run and real encoded
files (an h264 mp4 of 38x26 at 29.97 fps, a PNG image)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

pytest.importorskip("mp_layers.training")
pytest.importorskip("mp_layers.video")

import numpy as np
import torch

from karras_unet3d.cli import main, sample, train
from mp_layers.video import read_video
from mp_layers.video.testing import write_indexed_video

from .test_cli import TINY_RUN

RED = torch.tensor([1.0, 0.2, 0.2])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    train([*TINY_RUN, "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inputs")
    clip = folder / "clip.mp4"
    write_indexed_video(
        clip, 3, width=38, height=26, fps=Fraction(30000, 1001), keyframe_interval=2
    )
    image = folder / "first.png"
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((11, 13, 3)) * 255).astype("uint8")).save(
        image
    )
    return {"clip": clip, "image": image}


def _marked(sheet: torch.Tensor, frame: int) -> bool:
    """Whether the top-left sample of a sheet `(3, f, H, W)` has the red border at `frame`
    (video_grid pads by 2 pixels)."""
    corner = sheet[:, frame, 2, 2:10]
    return bool(((corner - RED[:, None]).abs() < 0.1).all())


def test_extend_interpolate_first_frame_long_and_upsample(
    run: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    common = ["--checkpoint", str(run), "--steps", "2", "--num-per-class", "1"]
    out = tmp_path / "extended.gif"
    summary = sample([*common, "--out", str(out), "--init-video", str(files["clip"]),
                      "--extend", "6", "--overlap", "1"])  # fmt: skip
    assert (summary["mode"], summary["frames"], summary["given_frames"]) == ("extend", 6, 3)
    sheet = read_video(out)
    assert sheet.shape[1] == 6
    assert [_marked(sheet, i) for i in range(6)] == [True] * 3 + [False] * 3
    assert 0.0 <= summary["color_accuracy"] <= 1.0

    out = tmp_path / "between.mp4"
    summary = sample([*common, "--out", str(out), "--init-video", str(files["clip"]),
                      "--interpolate", "2", "--cond-method", "replace"])  # fmt: skip
    assert (summary["frames"], summary["given_frames"]) == (5, 3)  # frames 0, 2, 4 given
    assert read_video(out).shape[1] == 5

    summary = sample([*common, "--out", str(tmp_path / "i2v.gif"), "--first-frame",
                      str(files["image"]), "--frames", "4"])  # fmt: skip
    assert (summary["mode"], summary["frames"], summary["given_frames"]) == ("first_frame", 4, 1)

    summary = sample([*common, "--out", str(tmp_path / "long.gif"), "--frames", "6"])
    assert (summary["mode"], summary["frames"], summary["given_frames"]) == ("long sample", 6, 0)

    summary = sample([*common, "--out", str(tmp_path / "up.gif"), "--upsample-from",
                      str(files["clip"]), "--reconstruction-weight", "1"])  # fmt: skip
    assert (summary["mode"], summary["frames"]) == ("upsample", 3)
    assert read_video(tmp_path / "up.gif").shape[2] == 4 * (8 + 2) + 2  # 8x8 samples


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--extend", "6"], "--extend: expected --init-video FILE"),
        (["--init-video", "CLIP", "--extend", "6"], "--extend: expected --overlap K"),
        (["--init-video", "CLIP", "--extend", "2", "--overlap", "1"], "expected more than"),
        (["--init-video", "CLIP", "--extend", "6", "--interpolate", "2"], "expected one of"),
        (["--init-video", "CLIP"], "--init-video: expected --extend N or --interpolate K"),
        (
            ["--init-video", "CLIP", "--interpolate", "2", "--reconstruction-weight", "-1"],
            "--reconstruction-weight: expected a number >= 0",
        ),
        (["--upsample-from", "CLIP", "--upsample-factor", "3"], "--upsample-factor: expected"),
        (["--first-frame", "NOWHERE.png"], "NOWHERE.png"),
        (["--init-video", "CLIP", "--extend", "9", "--overlap", "2"], "overlap: expected fewer"),
    ],
)
def test_bad_flags_are_one_line_errors(
    run: Path,
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    flags = [str(files["clip"]) if f == "CLIP" else str(tmp_path / f) if f.startswith("NOWHERE")
             else f for f in flags]  # fmt: skip
    argv = ["sample", "--checkpoint", str(run), "--out", str(tmp_path / "x.gif"), "--steps", "1",
            "--num-per-class", "1", *flags]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
