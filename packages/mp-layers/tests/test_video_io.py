from __future__ import annotations

from pathlib import Path

import pytest
import torch

av = pytest.importorskip("av")
np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")

from mp_layers.video import (  # noqa: E402
    MovingShapes,
    count_frames,
    read_video,
    video_grid,
    write_video,
)
from mp_layers.video import io as video_io  # noqa: E402


def assert_near(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    """Like torch.testing.assert_close with rtol=0, without its heavy first import."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = (actual.double() - expected.double()).abs().max().item()
    assert error <= atol, f"max abs error {error:.4g} > {atol:.4g}"


def solid(rgb: tuple[float, float, float], frames: int = 6, size: int = 16) -> torch.Tensor:
    return torch.tensor(rgb).view(3, 1, 1, 1).expand(3, frames, size, size).clone()


def stripes(frames: int = 4, size: int = 24) -> torch.Tensor:
    """Red, green and blue vertical bands: tells RGB from BGR."""
    video = torch.zeros(3, frames, size, size)
    band = size // 3
    for channel in range(3):
        video[channel, :, :, channel * band : (channel + 1) * band] = 1.0
    return video


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_round_trip_keeps_shape_range_and_rgb_order(tmp_path: Path, suffix: str) -> None:
    video = stripes()
    path = tmp_path / f"clip{suffix}"
    write_video(video, path, fps=8)
    back = read_video(path)
    assert back.shape == video.shape
    assert back.dtype == torch.float32
    assert back.min().item() >= 0.0
    assert back.max().item() <= 1.0
    # Compare band interiors (mp4 chroma subsampling blurs the edges between bands).
    for channel in range(3):
        inner = back[:, :, 2:-2, channel * 8 + 2 : channel * 8 + 6].mean(dim=(1, 2, 3))
        expected = torch.nn.functional.one_hot(torch.tensor(channel), 3).float()
        assert_near(inner, expected, atol=0.05)


def test_pure_red_survives_lossy_mp4_within_five_percent(tmp_path: Path) -> None:
    write_video(solid((1.0, 0.0, 0.0)), tmp_path / "red.mp4")
    back = read_video(tmp_path / "red.mp4")
    assert back.shape == (3, 6, 16, 16)
    assert (back - solid((1.0, 0.0, 0.0))).abs().max().item() <= 0.05


def test_gif_is_exact_for_palette_clips_and_keeps_identical_frames(tmp_path: Path) -> None:
    video = MovingShapes(2, image_size=32, num_frames=8)[1]["video"]
    write_video(video, tmp_path / "shape.gif")
    assert torch.equal(read_video(tmp_path / "shape.gif"), video)
    write_video(solid((1.0, 1.0, 0.0), frames=5), tmp_path / "still.gif")  # 5 identical frames
    assert read_video(tmp_path / "still.gif").shape[1] == 5
    assert count_frames(tmp_path / "still.gif") == 5


def test_mp4_of_moving_shapes_is_close(tmp_path: Path) -> None:
    video = MovingShapes(1, image_size=32, num_frames=8)[0]["video"]
    write_video(video, tmp_path / "shape.mp4", fps=12)
    back = read_video(tmp_path / "shape.mp4")
    assert back.shape == video.shape
    assert (back - video).abs().mean().item() < 0.03
    assert count_frames(tmp_path / "shape.mp4") == 8


def test_grey_video_is_written_as_rgb(tmp_path: Path) -> None:
    grey = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(1, 3, 8, 16).clone()
    write_video(grey, tmp_path / "grey.gif")
    back = read_video(tmp_path / "grey.gif")
    assert back.shape == (3, 3, 8, 16)
    assert_near(back, grey.expand(3, -1, -1, -1), atol=1.01 / 255)


@pytest.mark.parametrize(("codec", "suffix"), [("libvpx", ".webm"), ("mpeg4", ".avi")])
def test_reads_webm_and_avi(tmp_path: Path, codec: str, suffix: str) -> None:
    path = tmp_path / f"clip{suffix}"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(5):
            array = np.zeros((32, 32, 3), np.uint8)
            array[..., 1] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    back = read_video(path)
    assert back.shape == (3, 5, 32, 32)
    assert_near(back.mean(dim=(1, 2, 3)), torch.tensor([0.0, 1.0, 0.0]), atol=0.05)


def test_frame_folder_is_read_in_natural_order(tmp_path: Path) -> None:
    for number in [1, 2, 10, 3]:
        array = np.full((6, 8, 3), number * 20, np.uint8)
        Image.fromarray(array).save(tmp_path / f"frame{number}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    video = read_video(tmp_path)
    assert video.shape == (3, 4, 6, 8)
    levels = (video[0, :, 0, 0] * 255).round().tolist()
    assert levels == [20.0, 40.0, 60.0, 200.0]
    assert read_video(tmp_path, num_frames=2).shape[1] == 2
    assert read_video(tmp_path, num_frames=9).shape[1] == 4  # shorter: returned whole


def test_jpg_frames(tmp_path: Path) -> None:
    for number in range(3):
        Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(tmp_path / f"{number:03d}.jpg")
    video = read_video(tmp_path)
    assert video.shape == (3, 3, 8, 8)
    assert abs(video.mean().item() - 128 / 255) < 0.02


def test_resize_shorter_side_and_centre_crop(tmp_path: Path) -> None:
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :10, 0] = 255  # red left quarter
    array[:, 10:30, 1] = 255  # green centre half
    array[:, 30:, 2] = 255  # blue right quarter
    for number in range(2):
        Image.fromarray(array).save(tmp_path / f"{number}.png")
    video = read_video(tmp_path, image_size=10)
    assert video.shape == (3, 2, 10, 10)
    # The crop is the green centre; antialiasing blends only the outermost columns.
    assert video[1, :, :, 1:-1].min().item() > 0.99
    assert video[1].min().item() > 0.8
    assert video[0].max().item() < 0.2
    assert video[2].max().item() < 0.2


def test_num_frames_takes_the_first_frames(tmp_path: Path) -> None:
    video = torch.arange(6).float().div(10).view(1, 6, 1, 1).expand(3, 6, 8, 8).clone()
    write_video(video, tmp_path / "ramp.gif")
    back = read_video(tmp_path / "ramp.gif", num_frames=3)
    assert_near(back[0, :, 0, 0], torch.tensor([0.0, 0.1, 0.2]), atol=1.01 / 255)


@pytest.mark.parametrize("name", ["broken.mp4", "broken.gif", "empty.webm"])
def test_undecodable_file_raises_value_error_naming_it(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"" if name.startswith("empty") else b"this is not a video" * 10)
    with pytest.raises(ValueError, match=name) as info:
        read_video(path)
    assert info.value.__cause__ is not None
    with pytest.raises(ValueError, match=name):
        count_frames(path)


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4")
    (tmp_path / "clip.mov").write_bytes(b"x")
    with pytest.raises(ValueError, match="suffix"):
        read_video(tmp_path / "clip.mov")
    with pytest.raises(ValueError, match="no"):
        read_video(tmp_path)  # a folder without frames
    with pytest.raises(TypeError, match="parameter path=3"):
        read_video(3)  # type: ignore[arg-type]


def test_write_validates(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(c, f, h, w\).*\(8, 3, 16, 16\)"):
        write_video(torch.rand(8, 3, 16, 16), tmp_path / "a.gif")  # (F, C, H, W) is refused
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write_video(torch.rand(3, 2, 8, 8) * 2 - 1, tmp_path / "a.gif")
    with pytest.raises(ValueError, match="even"):
        write_video(torch.rand(3, 2, 9, 8), tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="suffix"):
        write_video(torch.rand(3, 2, 8, 8), tmp_path / "a.avi")
    with pytest.raises(TypeError, match="floating"):
        write_video(torch.zeros(3, 2, 8, 8, dtype=torch.uint8), tmp_path / "a.gif")
    with pytest.raises(ValueError, match="fps"):
        write_video(torch.rand(3, 2, 8, 8), tmp_path / "a.gif", fps=0)
    with pytest.raises(ValueError, match="folder"):
        write_video(torch.rand(3, 2, 8, 8), tmp_path / "missing" / "a.gif")
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "clip.mp4"
    write_video(solid((0.0, 0.0, 1.0)), target)
    before = target.read_bytes()

    def crash(frames: object, path: str, rate: object) -> None:
        Path(path).write_bytes(b"half a video")
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(video_io, "_encode_mp4", crash)
    with pytest.raises(RuntimeError, match="crashed"):
        write_video(solid((1.0, 0.0, 0.0)), target)
    assert target.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]  # no temporary left


def test_video_grid_layout() -> None:
    videos = torch.stack([torch.full((3, 2, 4, 6), float(i + 1) / 10) for i in range(3)])
    grid = video_grid(videos, 2, padding=2)
    assert grid.shape == (3, 2, 2 * (4 + 2) + 2, 2 * (6 + 2) + 2)
    assert torch.all(grid[:, :, 2:6, 2:8] == 0.1)  # tile 0, top left
    assert torch.all(grid[:, :, 2:6, 10:16] == 0.2)  # tile 1, top right
    assert torch.all(grid[:, :, 8:12, 2:8] == 0.3)  # tile 2, bottom left
    assert torch.all(grid[:, :, 8:12, 10:16] == 0.0)  # empty slot
    assert torch.all(grid[:, :, :2] == 0.0)
    assert torch.all(grid[:, :, :, 8:10] == 0.0)
    assert video_grid(videos, 3, padding=0).shape == (3, 2, 4, 18)
    with pytest.raises(ValueError, match="b, c, f, h, w"):
        video_grid(videos[0], 2)
    with pytest.raises(ValueError, match="nrow"):
        video_grid(videos, 0)
