from __future__ import annotations

import re
from collections import deque
from pathlib import Path

import pytest
import torch

pytest.importorskip("av")

from mp_layers.video import (
    COLOR_NAMES,
    FRAME_SUFFIXES,
    PALETTE,
    SHAPE_NAMES,
    VIDEO_SUFFIXES,
    MovingShapes,
    VideoFolder,
    collate_videos,
    write_video,
)

KEYS = {"video", "label", "shape", "text"}
FOLDER_KEYS = KEYS | {"source", "frame_indices", "fps"}


def assert_near(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    """Like torch.testing.assert_close with rtol=0, without its heavy first import."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = (actual.double() - expected.double()).abs().max().item()
    assert error <= atol, f"max abs error {error:.4g} > {atol:.4g}"


def ramp(frames: int, size: int = 16) -> torch.Tensor:
    """Frame k is grey level k / 20 with a white left column, so order and flips are visible."""
    video = torch.arange(frames).float().div(20).view(1, frames, 1, 1).expand(3, -1, size, size)
    video = video.clone()
    video[:, :, :, 0] = 1.0
    return video


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "a" / "b").mkdir(parents=True)
    write_video(ramp(8), tmp_path / "one.gif")
    write_video(ramp(8), tmp_path / "a" / "two.mp4")
    write_video(ramp(3), tmp_path / "a" / "b" / "short.gif")
    (tmp_path / "a" / "two.txt").write_text("  two moving things\n", encoding="utf-8")
    (tmp_path / "readme.md").write_text("not a clip")
    return tmp_path


def test_video_folder_items(folder: Path) -> None:
    dataset = VideoFolder(folder, image_size=8, num_frames=4)
    assert len(dataset) == 3
    names = [p.name for p in dataset.files]
    assert names == ["short.gif", "two.mp4", "one.gif"]  # sorted: a/b/short, a/two, one
    item = dataset[1]
    assert set(item) == FOLDER_KEYS
    assert item["source"] == str(folder / "a" / "two.mp4")
    assert item["frame_indices"].dtype == torch.int64
    assert item["frame_indices"].shape == (4,)
    assert item["video"].shape == (3, 4, 8, 8)
    assert item["video"].dtype == torch.float32
    assert item["text"] == "two moving things"
    assert item["label"] == -1
    assert item["shape"] == -1
    assert dataset[2]["text"] == ""
    grey = VideoFolder(folder, image_size=8, num_frames=4, channels=1)[2]["video"]
    assert grey.shape == (1, 4, 8, 8)


def test_frame_stride(folder: Path) -> None:
    dataset = VideoFolder(
        folder, image_size=16, num_frames=3, frame_stride=2, extensions=(".gif",), sampling="first"
    )
    video = dataset.files.index(folder / "one.gif")
    item = dataset[video]
    assert_near(item["video"][0, :, 5, 5], torch.tensor([0.0, 0.1, 0.2]), atol=1.01 / 255)
    assert item["frame_indices"].tolist() == [0, 2, 4]


def test_short_clips_padded_or_skipped(folder: Path) -> None:
    padded = VideoFolder(folder, image_size=16, num_frames=6)
    clip = padded[padded.files.index(folder / "a" / "b" / "short.gif")]["video"]
    assert clip.shape[1] == 6
    assert torch.equal(clip[:, 3:], clip[:, 2:3].expand(-1, 3, -1, -1))  # last frame repeated
    assert not torch.equal(clip[:, 1], clip[:, 2])
    skipping = VideoFolder(folder, image_size=16, num_frames=6, pad_short=False)
    assert len(skipping) == 2
    assert skipping.num_short == 1
    assert folder / "a" / "b" / "short.gif" not in skipping.files


def test_one_flip_decision_per_clip_drawn_per_epoch(folder: Path) -> None:
    dataset = VideoFolder(
        folder, image_size=16, num_frames=8, random_flip=True, extensions=(".gif",)
    )
    index = dataset.files.index(folder / "one.gif")
    flips = []
    for epoch in range(16):
        dataset.set_epoch(epoch)
        video = dataset[index]["video"]
        assert torch.equal(video, dataset[index]["video"])  # a pure function of the epoch
        left, right = video[0, :, :, 0], video[0, :, :, -1]
        flipped = (right == 1.0).all(dim=1)  # per frame: is the white column on the right?
        assert bool((left == 1.0).all(dim=1).logical_xor(flipped).all())
        assert flipped.all() or not flipped.any()  # every frame agrees
        flips.append(bool(flipped.all()))
    assert any(flips)
    assert not all(flips)


def write_frames(folder: Path, video: torch.Tensor, suffix: str = ".png") -> None:
    """Frame k as `f{k}.png` (unpadded numbers, so name order is not natural order)."""
    from PIL import Image

    folder.mkdir(parents=True)
    pixels = (video.clamp(0, 1) * 255).round().byte().permute(1, 2, 3, 0).numpy()
    for index, frame in enumerate(pixels):
        Image.fromarray(frame).save(folder / f"f{index}{suffix}")


def test_frame_folders_are_clips_when_frame_suffixes_are_asked_for(folder: Path) -> None:
    write_frames(folder / "frames" / "walk", ramp(12))
    write_frames(folder / "frames" / "run", ramp(3), suffix=".jpg")
    (folder / "frames" / "walk.txt").write_text("a walk\n", encoding="utf-8")
    videos_only = VideoFolder(folder, image_size=16, num_frames=4)
    assert len(videos_only) == 3  # the default extensions: video files only
    both = VideoFolder(
        folder,
        image_size=16,
        num_frames=11,
        extensions=VIDEO_SUFFIXES + FRAME_SUFFIXES,
        sampling="first",
    )
    assert len(both) == 5
    walk = both[both.files.index(folder / "frames" / "walk")]
    assert walk["text"] == "a walk"
    # natural order: f2 before f10, so the grey levels rise frame by frame
    assert_near(walk["video"][0, :, 5, 5], torch.arange(11).float() / 20, atol=1.01 / 255)
    run = both[both.files.index(folder / "frames" / "run")]["video"]
    assert run.shape == (3, 11, 16, 16)  # 3 frames, padded with the last one
    assert torch.equal(run[:, 3:], run[:, 2:3].expand(-1, 8, -1, -1))
    frames_only = VideoFolder(
        folder, image_size=16, num_frames=11, extensions=(".png",), pad_short=False
    )
    assert frames_only.files == [folder / "frames" / "walk"]


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no video files"):
        VideoFolder(tmp_path, image_size=8, num_frames=4)
    (tmp_path / "clip.txt").write_text("caption without a clip")
    with pytest.raises(ValueError, match="no video files"):
        VideoFolder(tmp_path, image_size=8, num_frames=4)
    with pytest.raises(ValueError, match="existing folder"):
        VideoFolder(tmp_path / "missing", image_size=8, num_frames=4)


def test_validation(folder: Path) -> None:
    with pytest.raises(ValueError, match="extensions"):
        VideoFolder(folder, image_size=8, num_frames=4, extensions=(".mov",))
    with pytest.raises(ValueError, match="channels"):
        VideoFolder(folder, image_size=8, num_frames=4, channels=2)
    with pytest.raises(ValueError, match="num_frames"):
        VideoFolder(folder, image_size=8, num_frames=0)
    with pytest.raises(TypeError, match="random_flip"):
        VideoFolder(folder, image_size=8, num_frames=4, random_flip=1)  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        VideoFolder(folder, image_size=8, num_frames=4)[3]


def test_undecodable_files(folder: Path) -> None:
    (folder / "a" / "bad.mp4").write_bytes(b"garbage" * 50)
    with pytest.raises(ValueError, match=r"bad\.mp4.*--skip-undecodable"):  # probed at construction
        VideoFolder(folder, image_size=8, num_frames=4)
    with pytest.warns(UserWarning, match=r"bad\.mp4"):
        lenient = VideoFolder(folder, image_size=8, num_frames=4, skip_undecodable=True)
    assert lenient.num_skipped == 1
    assert len(lenient) == 3
    with pytest.raises(ValueError, match=r"bad\.mp4"):
        VideoFolder(folder, image_size=8, num_frames=4, pad_short=False)


def test_collate_videos() -> None:
    items = [MovingShapes(4, image_size=16, num_frames=3)[i] for i in range(3)]
    batch = collate_videos(items)
    assert batch["video"].shape == (3, 3, 3, 16, 16)
    assert batch["label"].dtype == torch.int64
    assert batch["label"].shape == (3,)
    assert batch["text"] == [item["text"] for item in items]
    with pytest.raises(ValueError, match="same keys"):
        collate_videos([items[0], {"video": items[1]["video"]}])
    with pytest.raises(ValueError, match="one shape"):
        collate_videos([items[0], {**items[1], "video": torch.zeros(3, 2, 16, 16)}])
    with pytest.raises(ValueError, match="non-empty"):
        collate_videos([])


# MovingShapes -------------------------------------------------------------------------------


def components(mask: torch.Tensor) -> int:
    """Number of 4-connected components of a small boolean (H, W) mask."""
    cells = {tuple(p) for p in mask.nonzero().tolist()}
    count = 0
    while cells:
        count += 1
        queue = deque([cells.pop()])
        while queue:
            y, x = queue.popleft()
            for neighbour in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if neighbour in cells:
                    cells.remove(neighbour)
                    queue.append(neighbour)
    return count


def bounce(start: float, velocity: float, span: float, steps: int) -> list[float]:
    """Independent oracle: step a point between walls 0 and span, reflecting on contact."""
    positions, x = [], start
    for _ in range(steps):
        positions.append(x)
        x += velocity
        if x > span:
            x, velocity = 2 * span - x, -velocity
        elif x < 0:
            x, velocity = -x, -velocity
    return positions


def test_moving_shapes_is_deterministic_per_seed_and_index() -> None:
    first, again = MovingShapes(8, seed=3), MovingShapes(8, seed=3)
    for index in range(4):
        assert torch.equal(first[index]["video"], again[index]["video"])
        assert first[index]["text"] == again[index]["text"]
    assert not torch.equal(first[0]["video"], first[1]["video"])
    assert not torch.equal(first[0]["video"], MovingShapes(8, seed=4)[0]["video"])


def test_moving_shapes_matches_its_spec() -> None:
    dataset = MovingShapes(48, image_size=32, num_frames=12)
    palette = torch.tensor(PALETTE)
    labels, shapes, bounced = set(), set(), 0
    for index in range(len(dataset)):
        item = dataset[index]
        video, label, shape = item["video"], item["label"], item["shape"]
        assert set(item) == KEYS
        assert video.shape == (3, 12, 32, 32)
        labels.add(label)
        shapes.add(shape)
        foreground = video.amax(dim=0) > 0  # (F, H, W)
        colours = video.permute(1, 2, 3, 0)[foreground].unique(dim=0)
        assert torch.equal(colours, palette[label : label + 1])  # one palette colour, exactly
        assert torch.all(video.permute(1, 2, 3, 0)[~foreground] == 0)  # black background
        areas = foreground.sum(dim=(1, 2))
        assert torch.all(areas == areas[0])
        assert areas[0] > 0
        if SHAPE_NAMES[shape] == "square":
            assert areas[0] == dataset.side**2
        for frame in foreground:
            assert components(frame) == 1
        spec = dataset.describe(index)
        span = 32 - dataset.side
        for axis in range(2):
            expected = bounce(
                spec["positions"][0, axis].item(), spec["velocity"][axis].item(), span, 12
            )
            assert_near(
                spec["positions"][:, axis], torch.tensor(expected, dtype=torch.float64), atol=1e-9
            )
        steps = spec["positions"].diff(dim=0).abs()
        bounced += int(not torch.allclose(steps, spec["velocity"].abs().expand_as(steps)))
        # The drawn shape follows the trajectory: its bounding box starts at the corner.
        ys, xs = foreground[0].nonzero().unbind(1)
        corner = spec["positions"][0]
        assert xs.min().item() == round(corner[0].item())
        assert ys.max().item() == round(corner[1].item()) + dataset.side - 1
        # The caption names the faster axis and the way most frame steps go along it.
        axis = int(spec["velocity"][1].abs() > spec["velocity"][0].abs())
        moves = spec["positions"][:, axis].diff().tolist()
        forward, backward = sum(m > 0 for m in moves), sum(m < 0 for m in moves)
        positive = forward > backward or (forward == backward and spec["velocity"][axis] > 0)
        word = [["left", "right"], ["up", "down"]][axis][int(positive)]
        assert item["text"] == f"a {COLOR_NAMES[label]} {SHAPE_NAMES[shape]} moving {word}"
        assert re.fullmatch(
            r"a (red|green|blue|yellow) (circle|square|triangle) moving \w+", item["text"]
        )
    assert labels == {0, 1, 2, 3}
    assert shapes == {0, 1, 2}
    assert bounced > 0  # some clips do hit a border


def test_moving_shapes_grey_and_validation() -> None:
    grey = MovingShapes(4, channels=1)[0]
    assert grey["video"].shape == (1, 16, 32, 32)
    levels = {0.0, 0.299, 0.587, 0.114, 0.886}
    assert {round(v, 3) for v in grey["video"].unique().tolist()} <= levels
    with pytest.raises(ValueError, match="channels"):
        MovingShapes(4, channels=2)
    with pytest.raises(ValueError, match="image_size"):
        MovingShapes(4, image_size=4)
    with pytest.raises(IndexError):
        MovingShapes(4)[4]
    with pytest.raises(TypeError):
        MovingShapes(4)["0"]  # type: ignore[index]
