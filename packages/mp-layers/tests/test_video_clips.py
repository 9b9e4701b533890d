"""Clips from anywhere in real encoded videos: exact seeking, sampling, frame rates, workers.

The fixtures are h264 files written with PyAV whose frame `k` shows `k` (`write_indexed_video`),
so every returned frame is checked against the position named in `frame_indices`.
"""

from __future__ import annotations

import itertools
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av")

from mp_layers.video import VideoFolder, collate_videos
from mp_layers.video.probe import probe_video
from mp_layers.video.testing import frame_index, write_indexed_video

NTSC = Fraction(30000, 1001)
FIXTURES = {  # name: (frames, write_indexed_video keywords)
    "key1.mp4": (40, {"keyframe_interval": 1}),
    "key12.mp4": (90, {"keyframe_interval": 12}),
    "key250.mp4": (300, {"keyframe_interval": 250, "fps": NTSC}),
    "odd.mp4": (60, {"width": 177, "height": 99, "pix_fmt": "yuv444p", "fps": NTSC}),
    "vfr.mp4": (70, {"pts": [40 * i + 13 * (i % 3) + 30 * (i // 10) for i in range(70)]}),
    "late.mp4": (50, {"pts": [5000 + 40 * i for i in range(50)]}),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for name, (frames, options) in FIXTURES.items():
        write_indexed_video(root / name, frames, **options)  # type: ignore[arg-type]
    return root


def one(videos: Path, name: str, tmp_path: Path) -> Path:
    """A folder holding only the fixture `name`."""
    (tmp_path / "one").mkdir()
    shutil.copy(videos / name, tmp_path / "one" / name)
    return tmp_path / "one"


def shown(item: dict) -> list[int]:
    return [frame_index(item["video"][:, k]) for k in range(item["video"].shape[1])]


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_frames_returned_are_the_frames_named(videos: Path, tmp_path: Path, name: str) -> None:
    dataset = VideoFolder(
        one(videos, name, tmp_path), image_size=32, num_frames=6, frame_stride=3, clips_per_video=5
    )
    assert probe_video(videos / name).num_frames == FIXTURES[name][0]
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item = dataset[index]
            indices = item["frame_indices"].tolist()
            assert shown(item) == indices
            assert np.all(np.diff(indices) == 3)
            assert indices[0] >= 0
            assert indices[-1] < FIXTURES[name][0]


def test_shapes_sizes_and_crops(videos: Path, tmp_path: Path) -> None:
    folder = one(videos, "odd.mp4", tmp_path)  # 177 x 99
    square = VideoFolder(folder, image_size=32, num_frames=4)[0]["video"]
    assert square.shape == (3, 4, 32, 32)
    wide = VideoFolder(folder, image_size=(24, 40), num_frames=4, crop="random")
    crops = set()
    for epoch in range(6):
        wide.set_epoch(epoch)
        assert wide[0]["video"].shape == (3, 4, 24, 40)
        plan = wide.plan(0)
        assert plan["resize"] == (24, 43)  # the short side fits, the aspect is kept
        crops.add(plan["crop"])
    assert len(crops) > 1  # random crops move
    assert VideoFolder(folder, image_size=(24, 40), num_frames=4).plan(0)["crop"] == (0, 1, 24, 40)


def test_all_covers_each_video_with_consecutive_clips(videos: Path, tmp_path: Path) -> None:
    folder = one(videos, "key12.mp4", tmp_path)  # 90 frames: 11 clips of 8, 2 frames spare
    for sampling in ("first", "uniform", "random"):
        dataset = VideoFolder(
            folder, image_size=16, num_frames=8, clips_per_video="all", sampling=sampling
        )
        assert len(dataset) == 11
        for epoch in range(4):
            dataset.set_epoch(epoch)
            frames = np.concatenate([dataset.plan(i)["frame_indices"] for i in range(11)])
            shift = int(frames[0])
            assert frames.tolist() == list(range(shift, shift + 88))  # no gap, no overlap
            assert shift == 0 if sampling != "random" else 0 <= shift <= 2


def test_uniform_first_and_random_starts(videos: Path, tmp_path: Path) -> None:
    folder = one(videos, "key12.mp4", tmp_path)  # 90 frames; clips of 10 start in [0, 80]
    uniform = VideoFolder(
        folder, image_size=16, num_frames=10, clips_per_video=5, sampling="uniform"
    )
    assert [int(uniform.plan(i)["frame_indices"][0]) for i in range(5)] == [0, 20, 40, 60, 80]
    middle = VideoFolder(folder, image_size=16, num_frames=10, sampling="uniform")
    assert int(middle.plan(0)["frame_indices"][0]) == 40
    first = VideoFolder(folder, image_size=16, num_frames=10, sampling="first")
    assert int(first.plan(0)["frame_indices"][0]) == 0
    random = VideoFolder(folder, image_size=16, num_frames=10, clips_per_video=3)
    starts = []
    for epoch in range(20):
        random.set_epoch(epoch)
        row = [int(random.plan(i)["frame_indices"][0]) for i in range(3)]
        assert row[0] <= 26 < row[1] <= 53 < row[2] <= 80  # clip j starts in the j-th third
        starts.append(row)
    assert len({tuple(r) for r in starts}) > 10  # a new start each epoch
    with pytest.raises(ValueError, match="sampling='first'"):
        VideoFolder(folder, image_size=16, num_frames=10, clips_per_video=2, sampling="first")


def test_random_choices_are_a_pure_function_of_seed_epoch_and_index(
    videos: Path, tmp_path: Path
) -> None:
    def plans(seed: int, epoch: int) -> list[tuple]:
        dataset = VideoFolder(
            videos, image_size=24, num_frames=4, clips_per_video=3, crop="random",
            random_flip=True, seed=seed,
        )  # fmt: skip
        dataset.set_epoch(epoch)
        return [
            (p["frame_indices"].tolist(), p["crop"], p["flip"])
            for p in map(dataset.plan, range(len(dataset)))
        ]

    assert plans(0, 1) == plans(0, 1)
    assert plans(0, 1) != plans(0, 2)
    assert plans(0, 1) != plans(1, 1)
    dataset = VideoFolder(videos, image_size=24, num_frames=4, clips_per_video=3)
    dataset.set_epoch(5)
    assert (
        dataset.plan(7, epoch=5)["frame_indices"].tolist() == dataset[7]["frame_indices"].tolist()
    )


def test_fps_resampling_gives_the_same_speed_at_25_and_29_97(videos: Path) -> None:
    dataset = VideoFolder(videos, image_size=16, num_frames=8, fps=10.0, sampling="first")
    for index, file in enumerate(dataset.files):
        item = dataset[index]
        assert item["fps"] == 10.0
        seconds = probe_video(file).seconds[item["frame_indices"].numpy()]
        frame_time = 1 / 20  # every fixture has frames at most 1/20 s apart
        assert np.all(np.abs(seconds - np.arange(8) / 10) < frame_time + 1e-9), file.name
        assert shown(item) == item["frame_indices"].tolist()
    native = VideoFolder(videos, image_size=16, num_frames=8, frame_stride=2)
    rates = {f.name: native[i]["fps"] for i, f in enumerate(native.files)}
    assert rates["key12.mp4"] == pytest.approx(12.5)
    assert rates["key250.mp4"] == pytest.approx(float(NTSC) / 2)
    with pytest.raises(ValueError, match="exclusive"):
        VideoFolder(videos, image_size=16, num_frames=8, fps=10.0, frame_stride=2)


def test_len_and_items_of_several_videos(videos: Path) -> None:
    dataset = VideoFolder(videos, image_size=16, num_frames=4, clips_per_video=2)
    assert len(dataset) == 2 * len(FIXTURES)
    assert [dataset.locate(i) for i in (0, 1, 2, 11)] == [(0, 0), (0, 1), (1, 0), (5, 1)]
    batch = collate_videos([dataset[i] for i in (0, 3, 5)])
    assert batch["video"].shape == (3, 3, 4, 16, 16)
    assert batch["frame_indices"].shape == (3, 4)
    assert batch["source"] == [str(dataset.files[i]) for i in (0, 1, 2)]
    assert batch["fps"].dtype == torch.float32


def _batches(dataset: VideoFolder, workers: int, start: int, count: int) -> list[dict]:
    from accelerate import Accelerator

    from mp_layers.training import TrainerConfig
    from mp_layers.training.data import endless_batches

    config = TrainerConfig(out_dir="unused", batch_size=4, num_workers=workers, seed=3, cpu=True)
    stream = endless_batches(
        dataset, Accelerator(cpu=True), config, start=start, collate_fn=collate_videos
    )
    return list(itertools.islice(stream, count))


def test_batches_equal_with_0_and_2_workers_and_resume_exactly(videos: Path) -> None:
    pytest.importorskip("accelerate")
    dataset = VideoFolder(videos, image_size=16, num_frames=4, clips_per_video=2, crop="random")
    # 12 clips, batches of 4: 3 per epoch, so 7 batches cross two epoch boundaries
    plain = _batches(dataset, 0, 0, 7)
    parallel = _batches(dataset, 2, 0, 7)
    for a, b in zip(plain, parallel, strict=True):
        assert torch.equal(a["video"], b["video"])
        assert torch.equal(a["frame_indices"], b["frame_indices"])
    resumed = _batches(dataset, 2, 4, 3)  # a fresh process resuming after 4 batches
    for a, b in zip(plain[4:], resumed, strict=True):
        assert torch.equal(a["video"], b["video"])
    epochs = [
        torch.stack([b["frame_indices"][:, 0] for b in plain[e * 3 : e * 3 + 3]]) for e in (0, 1)
    ]
    assert not torch.equal(epochs[0], epochs[1])  # the epoch reached the workers


def test_bad_files_name_themselves_or_are_skipped(videos: Path, tmp_path: Path) -> None:
    import av

    root = tmp_path / "bad"
    root.mkdir()
    shutil.copy(videos / "key12.mp4", root / "good.mp4")
    (root / "empty.mp4").write_bytes(b"")
    whole = (videos / "key1.mp4").read_bytes()
    (root / "no_index.mp4").write_bytes(whole[: len(whole) // 2])  # the moov atom is at the end
    with av.open(str(root / "audio.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp")
        frame.sample_rate = 16000
        for _ in range(8):
            frame.pts = None
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    for name in ("empty.mp4", "no_index.mp4", "audio.mp4"):
        alone = tmp_path / f"only_{name}"
        alone.mkdir()
        shutil.copy(root / name, alone / name)
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            VideoFolder(alone, image_size=16, num_frames=4)
    with pytest.warns(UserWarning, match="skipping undecodable"):
        lenient = VideoFolder(root, image_size=16, num_frames=4, skip_undecodable=True)
    assert lenient.num_skipped == 3
    assert lenient.files == [root / "good.mp4"]
    assert shown(lenient[0]) == lenient[0]["frame_indices"].tolist()
    short = VideoFolder(
        root, image_size=16, num_frames=120, skip_undecodable=True, sampling="first"
    )
    assert short[0]["frame_indices"].tolist()[-31:] == [89] * 31  # padded with the last frame
    with pytest.raises(ValueError, match="no usable videos"):
        VideoFolder(root, image_size=16, num_frames=120, skip_undecodable=True, pad_short=False)


def test_a_file_broken_after_construction_is_replaced(videos: Path, tmp_path: Path) -> None:
    root = tmp_path / "two"
    root.mkdir()
    shutil.copy(videos / "key1.mp4", root / "a.mp4")
    shutil.copy(videos / "key12.mp4", root / "b.mp4")
    strict = VideoFolder(root, image_size=16, num_frames=4)
    lenient = VideoFolder(root, image_size=16, num_frames=4, skip_undecodable=True)
    (root / "a.mp4").write_bytes(b"")
    with pytest.raises(ValueError, match=r"a\.mp4"):
        strict[0]
    with pytest.warns(UserWarning, match=r"a\.mp4"):
        item = lenient[0]
    assert item["source"] == str(root / "b.mp4")
    assert lenient.num_skipped == 1
