"""The `karras-unet3d` CLI end to end on a tiny run (seconds)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("mp_layers.training")
pytest.importorskip("mp_layers.video")

import json
import math

import torch

from karras_unet3d.cli import CONFIG_FILE, data_rms, main, sample, synthesize_ema, train
from mp_layers.video import MovingShapes, read_video

TINY_RUN = [
    "--steps", "2", "--batch-size", "2", "--image-size", "8", "--frames", "2", "--dim", "8",
    "--dim-max", "8", "--num-downsamples", "1", "--downsample-types", "all", "--attn-res", "4",
    "--attn-dim-head", "8", "--num-videos", "8", "--sample-steps", "2", "--num-per-class", "1",
    "--no-progress", "--post-hoc-ema", "0.05,0.1",
]  # fmt: skip


def test_train_sample_and_post_hoc_ema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    summary = train([*TINY_RUN, "--out", str(run)])
    assert summary["step"] == 2
    assert 0.0 <= summary["color_accuracy"] <= 1.0
    printed = capsys.readouterr().out
    assert "class-colour accuracy of 4 samples" in printed
    assert "quality: colour" in printed
    assert "one object" in printed
    for name in (CONFIG_FILE, "loss.png", "samples.gif", "metrics.csv"):
        assert (run / name).is_file(), name
    sheet = read_video(run / "samples.gif")
    assert sheet.shape[1] == 2  # frames
    assert sheet.shape[2] == 4 * (8 + 2) + 2  # one row per class
    assert list((run / "checkpoints").iterdir())

    out = tmp_path / "more.gif"
    result = sample(["--checkpoint", str(run), "--out", str(out), "--steps", "2", "--guidance", "2",
                     "--num-per-class", "2", "--frames", "4"])  # fmt: skip
    assert out.is_file()
    assert read_video(out).shape[1] == 4  # longer clips than the training frames
    assert "color_accuracy" in result

    ema = synthesize_ema(run, 0.07, tmp_path / "ema")
    assert (ema / "model.safetensors").is_file()
    assert main(["sample", "--checkpoint", str(ema), "--out", str(tmp_path / "e.gif"),
                 "--steps", "1", "--num-per-class", "1"]) == 0  # fmt: skip


def test_train_time_budget_stops_then_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = [*TINY_RUN, "--out", str(tmp_path / "run")]
    summary = train([*run, "--steps", "1000", "--max-time", "0.001"])
    assert summary["time_limit_reached"]
    assert summary["step"] == 1  # the first step already ends past the budget
    assert "stopped at the --max-time limit" in capsys.readouterr().out
    resumed = train([*run, "--steps", "3", "--resume", "latest"])
    assert resumed["step"] == 3
    assert not resumed["time_limit_reached"]


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["sample", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "x.gif")]) == 1
    assert "error" in capsys.readouterr().err
    assert main(["train", *TINY_RUN, "--out", str(tmp_path / "r"), "--downsample-types", "x"]) == 1


def test_data_rms_is_the_second_moment_of_clips_in_minus_one_one() -> None:
    clips = [{"video": torch.full((3, 2, 4, 4), value)} for value in (0.0, 1.0, 0.75)]
    # [-1, 1]: -1, 1 and 0.5 -> sqrt((1 + 1 + 0.25) / 3)
    assert data_rms(clips) == pytest.approx(math.sqrt(2.25 / 3))
    assert data_rms(clips, num_clips=2) == pytest.approx(1.0)  # only the first clips
    # MovingShapes, a small sprite on black, is about 1.0 (EDM's natural-image 0.5 is 2x off)
    shapes = MovingShapes(num_videos=16, image_size=16, num_frames=8, seed=0)
    assert 0.95 < data_rms(shapes) <= 1.0
    with pytest.raises(ValueError, match="at least one clip"):
        data_rms([])
    with pytest.raises(ValueError, match="num_clips"):
        data_rms(clips, num_clips=0)


def test_train_noise_flags_reach_the_run_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train([*TINY_RUN, "--steps", "1", "--out", str(run), "--p-mean", "0.2", "--p-std", "1.3"])
    diffusion = json.loads((run / CONFIG_FILE).read_text())["diffusion"]
    auto = data_rms(MovingShapes(num_videos=8, image_size=8, num_frames=2, seed=0))
    assert diffusion["sigma_data"] == pytest.approx(auto, abs=1e-4)  # --sigma-data auto
    assert (diffusion["P_mean"], diffusion["P_std"]) == (0.2, 1.3)
    train([*TINY_RUN, "--steps", "1", "--out", str(tmp_path / "b"), "--sigma-data", "0.5"])
    assert json.loads((tmp_path / "b" / CONFIG_FILE).read_text())["diffusion"]["sigma_data"] == 0.5
    for bad in ("0", "-1", "big", "inf", "nan"):
        with pytest.raises(SystemExit):
            train([*TINY_RUN, "--out", str(tmp_path / "c"), "--sigma-data", bad])


def test_colour_shape_classes_train_sample_and_report_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    train([*TINY_RUN, "--steps", "1", "--out", str(run), "--classes", "colour-shape"])
    config = json.loads((run / CONFIG_FILE).read_text())
    assert config["classes"] == "colour-shape"
    assert config["net"]["num_classes"] == 12
    printed = capsys.readouterr().out
    assert "class-colour accuracy of 12 samples" in printed  # one clip per class
    assert "shape n/a (sprite side 2 < 6)" in printed  # 8x8: too small to tell shapes
    sample(["--checkpoint", str(run), "--out", str(tmp_path / "s.gif"), "--steps", "1",
            "--num-per-class", "1"])  # fmt: skip
    assert "shape n/a" in capsys.readouterr().out
    assert read_video(tmp_path / "s.gif").shape[2] == 12 * (8 + 2) + 2  # one row per class


def test_report_decodes_colour_shape_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Real 32x32 clips labelled colour * 3 + shape: colour and shape must both score 100 %.
    from karras_unet3d.workflow import class_labels as _class_labels
    from karras_unet3d.workflow import report_samples as _report_samples

    data = MovingShapes(num_videos=48, image_size=32, num_frames=4, seed=0)
    items = [data[i] for i in range(48)]
    batch = {key: torch.tensor([item[key] for item in items]) for key in ("label", "shape")}
    labels = _class_labels(batch, "colour-shape")
    assert torch.equal(labels, batch["label"] * 3 + batch["shape"])
    assert set(labels.tolist()) == set(range(12))
    videos = torch.stack([item["video"] for item in items])
    accuracy = _report_samples(videos, labels, tmp_path / "r.gif", num_per_class=4,
                               classes="colour-shape")  # fmt: skip
    assert accuracy == 1.0
    assert "shape 100.0%" in capsys.readouterr().out
    _report_samples(videos, labels % 4, tmp_path / "c.gif", num_per_class=4, classes=None)
    assert "colour" not in capsys.readouterr().out  # labels that are not colours: not scored


def test_classes_errors_and_runs_without_the_key(tmp_path: Path) -> None:
    from karras_unet3d.workflow import run_classes as _run_classes

    base = [*TINY_RUN, "--out", str(tmp_path / "r")]
    assert main(["train", *base, "--num-classes", "5"]) == 1
    assert main(["train", *base, "--data", str(tmp_path), "--classes", "colour-shape"]) == 1
    with pytest.raises(SystemExit):
        train([*base, "--classes", "shape"])
    assert _run_classes({"net": {"num_classes": 4}}) == "colour"  # runs before the key existed
    assert _run_classes({"net": {"num_classes": 10}}) is None
    assert _run_classes({"net": {"num_classes": 12}, "classes": "colour-shape"}) == "colour-shape"


def test_train_on_a_folder_of_real_videos_with_workers_and_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The data path as users run it: a folder of h264 files of different sizes and frame rates,
    fewer files than the batch, several clips per video, 2 DataLoader workers, a TensorBoard
    tracker, the default guidance (which used to fail at the end without class labels); the
    report holds real-data figures only; then a resume and `sample`."""
    from mp_layers.video.testing import write_video_folder

    videos = tmp_path / "videos"
    write_video_folder(videos)
    run = tmp_path / "run"
    real = [
        "--data", str(videos), "--batch-size", "4", "--num-workers", "2", "--clips-per-video",
        "2", "--clip-fps", "10", "--out", str(run), "--report-to", "tensorboard",
    ]  # fmt: skip
    at = TINY_RUN.index("--num-videos")
    base = TINY_RUN[:at] + TINY_RUN[at + 2 :]  # --num-videos is MovingShapes'
    assert main(["train", *base, *real]) == 0
    printed = capsys.readouterr().out
    assert "held-out loss at fixed noise" in printed
    assert "held-out real clips: motion" in printed
    assert "accuracy" not in printed
    assert "quality:" not in printed  # no MovingShapes figure
    report = json.loads((run / "report.json").read_text())
    assert report["step"] == 2
    assert set(report["held_out_loss"]) == {"sigma=0.2", "sigma=1.0", "sigma=5.0"}
    assert all(math.isfinite(v) for v in report["held_out_loss"].values())
    assert report["held_out"] == "the last 10% of each of 3 videos held out"
    assert {"motion", "real_motion", "colour_histogram_distance"} <= set(report["samples_vs_real"])
    assert "color_accuracy" not in report
    config = json.loads((run / CONFIG_FILE).read_text())
    assert config["net"]["num_classes"] is None  # auto: no labels in videos
    assert config["data"] == "videos"
    for name in ("samples.gif", "samples_vs_real.gif", "samples_vs_real.mp4"):
        assert (run / name).is_file(), name
    assert list((run / "tracking").glob("**/events.out.tfevents.*"))
    resumed = train([*base, *real, "--steps", "3", "--resume", "latest"])
    assert resumed["step"] == 3
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(run), "--out", str(tmp_path / "s.mp4"),
                 "--steps", "2", "--num-per-class", "2"]) == 0  # fmt: skip
    assert "accuracy" not in capsys.readouterr().out
    assert read_video(tmp_path / "s.mp4").shape[1] == 2


def test_real_data_flag_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mp_layers.video.testing import write_video_folder

    videos = tmp_path / "videos"
    write_video_folder(videos)
    at = TINY_RUN.index("--num-videos")
    base = TINY_RUN[:at] + TINY_RUN[at + 2 :]
    for flags, message in (
        (["--cond", "class"], "--cond class: expected class-labelled data"),
        (["--guidance", "2"], "--guidance 2.0: an unconditional model has no guidance"),
    ):
        code = main(["train", *base, "--data", str(videos), "--out", str(tmp_path / "r"), *flags])
        assert code == 1
        error = capsys.readouterr().err
        assert message in error
        assert error.strip().count("\n") == 0
    assert not (tmp_path / "r" / "checkpoints").exists()  # refused before training
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.mp4").write_bytes(b"\x00" * 64)
    assert main(["train", *base, "--data", str(junk), "--out", str(tmp_path / "j")]) == 1
    error = capsys.readouterr().err.strip()
    assert "a.mp4" in error
    assert error.count("\n") == 0


def test_sample_from_a_save_pretrained_folder_or_a_hub_repo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from karras_unet3d import EDM2Diffusion, KarrasUnet3D

    torch.manual_seed(0)
    net = KarrasUnet3D(
        image_size=8, frames=2, dim=8, dim_max=8, num_downsamples=1, downsample_types=("all",),
        attn_res=(4,), attn_dim_head=8, channels=3,
    )  # fmt: skip
    saved = tmp_path / "saved"
    EDM2Diffusion(net).save_pretrained(saved)
    out = tmp_path / "s.gif"
    assert main(["sample", "--checkpoint", str(saved), "--out", str(out), "--steps", "2",
                 "--num-per-class", "3"]) == 0  # fmt: skip
    assert read_video(out).shape[1] == 2
    assert "accuracy" not in capsys.readouterr().out

    monkeypatch.setattr("mp_layers.hub.snapshot_download", lambda **kwargs: str(saved))
    out = tmp_path / "hub.mp4"
    assert main(["sample", "--checkpoint", "someone/karras-tiny", "--out", str(out),
                 "--steps", "2", "--num-per-class", "2"]) == 0  # fmt: skip
    assert read_video(out).shape[1] == 2
    assert main(["sample", "--checkpoint", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    assert "or a Hub repo id" in capsys.readouterr().err
