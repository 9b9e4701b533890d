"""`phenaki train-tokenizer` and `phenaki train` on a user's own folder of videos (issue 25):
three mp4 files of different sizes and frame rates, captions for two; tiny models, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mp_layers.video.testing import write_video_folder
from phenaki import CViViT
from phenaki.cli import main

from .conftest import TINY

REAL_FIGURES = {"motion", "real_motion", "colour_histogram_distance", "sheet_gif", "sheet_mp4"}
SHARED = ["--batch-size=4", "--num-workers=2", "--report-to=tensorboard", "--no-progress"]

TOKENIZER_RUN = [
    "--image-size=16",
    "--frames=5",
    "--dim=16",
    "--heads=2",
    "--dim-head=8",
    "--codebook-size=32",
    "--warmup-steps=1",
    "--steps=2",
]


@pytest.fixture
def video_folder(tmp_path: Path) -> Path:
    write_video_folder(tmp_path / "videos")
    return tmp_path / "videos"


@pytest.fixture
def not_videos(tmp_path: Path) -> Path:
    folder = tmp_path / "not-videos"
    folder.mkdir()
    (folder / "notes.txt").write_text("a caption without its video\n", encoding="utf-8")
    (folder / "clip.mp4").write_bytes(b"this is not an mp4 file")
    return folder


@pytest.fixture
def tiny_tokenizer(tmp_path: Path) -> Path:
    config = {**TINY, "codebook_size": 32, "use_vgg_and_gan": False}
    return CViViT(**config).save_pretrained(tmp_path / "tok")


def phenaki_run(tokenizer: Path, bert: Path) -> list[str]:
    return [
        f"--tokenizer={tokenizer}",
        f"--text-encoder={bert}",
        "--frames=5",
        "--dim=16",
        "--depth=1",
        "--heads=2",
        "--dim-head=8",
        "--num-per-row=2",
        "--sample-steps=3",
        "--warmup-steps=1",
        "--steps=2",
    ]


def real_figures(report: dict[str, object], name: str) -> set[str]:
    """The keys of `report_against_real`'s figures (under `name`, or `{name}_vs_real`)."""
    figures = report.get(f"{name}_vs_real", report.get(name))
    assert isinstance(figures, dict), f"no real-data figures for {name}"
    return set(figures)


def assert_tracked(out: Path) -> None:
    assert list((out / "tracking").glob("**/events.out.tfevents.*")), "no TensorBoard events"


def test_tokenizer_trains_and_reports_on_a_small_folder(video_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "tokenizer"
    code = main(
        ["train-tokenizer", f"--data={video_folder}", *TOKENIZER_RUN, *SHARED, f"--out={out}"]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["step"] == 2
    assert report["psnr"] > 0
    assert -1.0 <= report["ssim"] <= 1.0
    assert 0 < report["codebook_usage"] <= 1
    assert report["held_out_clips"] >= 1
    assert "3 videos" in report["held_out_split"]  # fewer than 8 videos: split in time
    assert real_figures(report, "reconstructions") == REAL_FIGURES
    assert "color_accuracy" not in report  # no MovingShapes figures on real data
    for name in ("recons.gif", "reconstructions_vs_real.gif", "reconstructions_vs_real.mp4"):
        assert (out / name).is_file(), name
    assert CViViT.from_pretrained(out / "tokenizer").config["image_size"] == [16, 16]
    assert_tracked(out)


def test_text_to_video_trains_and_reports_on_a_partly_captioned_folder(
    video_folder: Path, tiny_tokenizer: Path, tiny_bert_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "phenaki"
    flags = [f"--data={video_folder}", *phenaki_run(tiny_tokenizer, tiny_bert_dir), *SHARED]
    assert main(["train", *flags, f"--out={out}"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["step"] == 2
    # the prompts are the folder's captions (c.mp4 has none and trained with an empty caption)
    assert set(report["prompts"]) <= {"a grey clip with bands", "an odd sized clip"}
    assert report["prompts"]
    assert real_figures(report, "samples") == REAL_FIGURES
    assert report["held_out_clips"] >= 1
    assert "quality" not in report  # no MovingShapes colour or shape figures on real data
    assert "colour" not in json.dumps(report).replace("colour_histogram", "")
    for name in ("samples.gif", "samples_vs_real.gif", "samples_vs_real.mp4"):
        assert (out / name).is_file(), name
    assert_tracked(out)


def test_text_to_video_without_captions_samples_an_empty_prompt(
    tmp_path: Path, tiny_tokenizer: Path, tiny_bert_dir: Path
) -> None:
    write_video_folder(tmp_path / "videos", captions=False)
    out = tmp_path / "phenaki"
    flags = [f"--data={tmp_path / 'videos'}", *phenaki_run(tiny_tokenizer, tiny_bert_dir)]
    assert main(["train", *flags, "--batch-size=4", "--no-progress", f"--out={out}"]) == 0
    assert json.loads((out / "report.json").read_text())["prompts"] == [""]


@pytest.mark.parametrize("command", ["train-tokenizer", "train"])
def test_a_folder_of_non_videos_is_one_clear_error(
    command: str,
    not_videos: Path,
    tiny_tokenizer: Path,
    tiny_bert_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    flags = (
        TOKENIZER_RUN
        if command == "train-tokenizer"
        else phenaki_run(tiny_tokenizer, tiny_bert_dir)
    )
    code = main([command, f"--data={not_videos}", *flags, *SHARED, f"--out={tmp_path / 'run'}"])
    assert code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1
    assert errors[0].startswith(f"phenaki {command}: error: ")
    assert "clip.mp4" in errors[0]
    assert "cannot decode" in errors[0]
