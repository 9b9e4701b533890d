"""`mp-layers prepare-videos` and `VideoShards`, on real encoded files written with PyAV."""

from __future__ import annotations

import itertools
import json
import shutil
import tarfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av")
pytest.importorskip("webdataset")

from mp_layers.cli import main
from mp_layers.video import VideoFolder, VideoShards, collate_videos
from mp_layers.video.probe import probe_video
from mp_layers.video.testing import frame_index, write_indexed_video


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("source")
    (root / "sub").mkdir()
    write_indexed_video(root / "wide.mp4", 120, width=320, height=180, keyframe_interval=250)
    write_indexed_video(
        root / "sub" / "ntsc.mp4", 90, width=177, height=99, pix_fmt="yuv444p",
        fps=Fraction(30000, 1001), keyframe_interval=250,
    )  # fmt: skip
    write_indexed_video(root / "vfr.mp4", 60, pts=[5000 + 40 * i + 13 * (i % 3) for i in range(60)])
    (root / "wide.txt").write_text("a wide one\n", encoding="utf-8")
    (root / "broken.mp4").write_bytes(b"\x00" * 100)
    return root


def keyframes(path: Path) -> list[int]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = sorted((p.pts, p.is_keyframe) for p in container.demux(stream) if p.size)
    return [i for i, (_, key) in enumerate(packets) if key]


def test_prepare_videos_to_a_folder_and_resume(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "small"
    assert (
        main(["prepare-videos", str(source), str(out), "--short-side", "64", "--no-progress"]) == 0
    )
    captured = capsys.readouterr()
    assert "wrote 3, kept 0 already done, 1 failed" in captured.out
    assert "broken.mp4" in captured.err
    wide, ntsc, vfr = out / "wide.mp4", out / "sub" / "ntsc.mp4", out / "vfr.mp4"
    assert (out / "wide.txt").read_text(encoding="utf-8") == "a wide one"
    meta = json.loads((out / "sub" / "ntsc.json").read_text())
    assert (meta["frames"], meta["height"], meta["width"]) == (90, 64, 114)
    assert meta["fps"] == pytest.approx(30000 / 1001)
    for path, frames, rate in ((wide, 120, 25), (ntsc, 90, 30)):
        probe = probe_video(path)
        assert probe.num_frames == frames
        assert min(probe.height, probe.width) == 64
        assert keyframes(path) == list(range(0, frames, rate))  # one keyframe a second
    source_seconds = probe_video(source / "vfr.mp4").seconds
    assert np.allclose(probe_video(vfr).seconds, source_seconds, atol=1e-3)  # timing kept
    dataset = VideoFolder(out, image_size=32, num_frames=8, frame_stride=2, clips_per_video=3)
    for index in range(len(dataset)):
        item = dataset[index]
        shown = [frame_index(item["video"][:, k]) for k in range(8)]
        assert shown == item["frame_indices"].tolist()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}
    assert (
        main(["prepare-videos", str(source), str(out), "--short-side", "64", "--no-progress"]) == 0
    )
    assert "wrote 0, kept 3 already done, 1 failed" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")} == before
    assert not [p for p in out.rglob(".*")]  # no temporary left behind


def test_prepare_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare-videos", str(tmp_path / "missing"), str(tmp_path / "o")]) == 2
    assert "expected an existing folder" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.mp4").write_bytes(b"")
    assert (
        main(["prepare-videos", str(tmp_path / "bad"), str(tmp_path / "o"), "--no-progress"]) == 1
    )


@pytest.fixture(scope="module")
def shards(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    code = main(
        ["prepare-videos", str(source), str(out), "--short-side", "64", "--shard-size", "2",
         "--no-progress"]
    )  # fmt: skip
    assert code == 0
    return out


def test_shards_have_the_video2dataset_layout(shards: Path) -> None:
    assert sorted(p.name for p in shards.iterdir()) == ["00000.tar", "00001.tar"]
    with tarfile.open(shards / "00000.tar") as tar:  # broken.mp4 and sub/ntsc.mp4
        assert sorted(tar.getnames()) == ["sub__ntsc.json", "sub__ntsc.mp4"]
    with tarfile.open(shards / "00001.tar") as tar:
        names = sorted(tar.getnames())
    assert names == ["vfr.json", "vfr.mp4", "wide.json", "wide.mp4", "wide.txt"]


def test_video_shards_items_are_exact(shards: Path) -> None:
    pattern = str(shards / "{00000..00001}.tar")
    dataset = VideoShards(
        pattern, image_size=32, num_frames=6, frame_stride=2, clips_per_video=2, resampled=False,
        shuffle=0,
    )  # fmt: skip
    items = list(dataset)
    assert len(items) == 6  # 3 videos x 2 clips
    for item in items:
        shown = [frame_index(item["video"][:, k]) for k in range(6)]
        assert shown == item["frame_indices"].tolist()
        assert item["video"].shape == (3, 6, 32, 32)
    texts = {item["source"].rsplit(":", 1)[1]: item["text"] for item in items}
    assert texts == {"sub__ntsc": "", "vfr": "", "wide": "a wide one"}
    batch = collate_videos(items[:4])
    assert batch["video"].shape == (4, 3, 6, 32, 32)
    again = list(dataset)
    assert [i["frame_indices"].tolist() for i in again] == [
        i["frame_indices"].tolist() for i in items
    ]  # the same pass gives the same clips
    dataset.set_epoch(1)
    assert [i["frame_indices"].tolist() for i in dataset] != [
        i["frame_indices"].tolist() for i in items
    ]


def test_video_shards_split_by_node_and_worker_and_resample(shards: Path) -> None:
    pattern = str(shards / "{00000..00001}.tar")
    keys = []
    for rank in (0, 1):
        dataset = VideoShards(
            pattern, image_size=16, num_frames=4, resampled=False, shuffle=0, rank=rank,
            world_size=2,
        )  # fmt: skip
        keys.append({item["source"] for item in dataset})
    assert keys[0]
    assert keys[1]
    assert not keys[0] & keys[1]  # each shard goes to one node
    endless = VideoShards(pattern, image_size=16, num_frames=4, shuffle=8, seed=1)
    first = [item["source"] for item in itertools.islice(endless, 20)]
    assert len(first) == 20  # resampled: never runs out
    loader = torch.utils.data.DataLoader(
        VideoShards(pattern, image_size=16, num_frames=4, resampled=False, shuffle=0),
        batch_size=None,
        num_workers=2,
    )
    sources = sorted(item["source"] for item in loader)
    assert len(sources) == 3  # two workers, each shard read once
    assert len(set(sources)) == 3


def test_truncated_and_missing_shards(shards: Path, tmp_path: Path) -> None:
    whole = (shards / "00001.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(whole[: len(whole) // 2 + 100])
    strict = VideoShards(str(tmp_path / "cut.tar"), image_size=16, num_frames=4, resampled=False)
    with pytest.raises(ValueError, match=r"cut\.tar"):
        list(strict)
    shutil.copy(shards / "00000.tar", tmp_path / "good.tar")
    lenient = VideoShards(
        [str(tmp_path / "cut.tar"), str(tmp_path / "good.tar"), str(tmp_path / "gone.tar")],
        image_size=16, num_frames=4, resampled=False, shuffle=0, skip_undecodable=True,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="skipping"):
        items = list(lenient)
    assert any(item["source"].endswith("good.tar:sub__ntsc") for item in items)
    assert lenient.num_skipped >= 2
    with pytest.raises(ValueError, match="at least one shard"):
        VideoShards([], image_size=16, num_frames=4)
