"""Caption sidecars of `VideoFolder`: `.txt` or `.json`, checked at construction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("av")

from mp_layers.video import VideoFolder
from mp_layers.video.testing import write_indexed_video


def test_txt_and_json_sidecars(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write_indexed_video(tmp_path / f"{name}.mp4", 4, width=32, height=24)
    (tmp_path / "a.txt").write_text("  a dog runs \n", encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps({"caption": "a cat sleeps"}), encoding="utf-8")
    folder = VideoFolder(tmp_path, image_size=16, num_frames=2)
    assert folder.has_captions
    assert [folder[i]["text"] for i in range(3)] == ["a dog runs", "a cat sleeps", ""]
    (tmp_path / "a.txt").unlink()
    (tmp_path / "b.json").unlink()
    assert not VideoFolder(tmp_path, image_size=16, num_frames=2).has_captions


def test_a_caption_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    write_indexed_video(tmp_path / "a.mp4", 4, width=32, height=24)
    (tmp_path / "a.txt").write_bytes(b"caf\xe9 au lait")
    with pytest.raises(ValueError, match=r"caption .*a\.txt is not UTF-8 text"):
        VideoFolder(tmp_path, image_size=16, num_frames=2)
    (tmp_path / "a.txt").unlink()
    (tmp_path / "a.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"caption .*a\.json is not valid JSON"):
        VideoFolder(tmp_path, image_size=16, num_frames=2)
