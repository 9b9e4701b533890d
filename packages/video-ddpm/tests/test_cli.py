"""The `video-ddpm` CLI end to end on tiny runs (seconds), offline (a tiny BERT in a folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("mp_layers.training")
pytest.importorskip("mp_layers.video")

from mp_layers.video import read_video
from video_ddpm.cli import CONFIG_FILE, main, sample, train

TINY_RUN = [
    "--steps", "2", "--batch-size", "2", "--image-size", "8", "--frames", "2", "--dim", "8",
    "--dim-mults", "1,2", "--attn-heads", "2", "--attn-dim-head", "8", "--timesteps", "10",
    "--num-videos", "8", "--sample-steps", "2", "--num-per-row", "1", "--no-progress",
]  # fmt: skip


def test_text_conditional_train_then_sample(
    tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    summary = train([*TINY_RUN, "--out", str(run), "--text-encoder", str(tiny_bert_dir)])
    assert summary["step"] == 2
    assert 0.0 <= summary["color_accuracy"] <= 1.0
    printed = capsys.readouterr().out
    assert "colour accuracy of the samples" in printed
    assert "quality: colour" in printed
    assert "one object" in printed
    assert "shape n/a" in printed
    assert 0.0 <= summary["quality"]["object_rate"] <= 1.0
    for name in (CONFIG_FILE, "loss.png", "samples.gif", "metrics.csv"):
        assert (run / name).is_file(), name
    sheet = read_video(run / "samples.gif")
    assert sheet.shape[1] == 2  # frames
    assert sheet.shape[2] == 4 * (8 + 2) + 2  # one row per default prompt (four colours)

    out = tmp_path / "more.mp4"
    result = sample(["--checkpoint", str(run), "--out", str(out), "--prompts", "a red square|a blue circle",
                     "--num-per-row", "2", "--frames", "4", "--sample-steps", "3", "--guidance", "2"])  # fmt: skip
    assert out.is_file()
    video = read_video(out)
    assert video.shape[1] == 4  # longer clips than the training frames
    assert video.shape[2] == 2 * (8 + 2) + 2  # two prompts
    assert "color_accuracy" in result


@pytest.mark.parametrize("cond", ["class", "none"])
def test_class_and_unconditional_runs(tmp_path: Path, cond: str) -> None:
    run = tmp_path / cond
    summary = train([*TINY_RUN, "--out", str(run), "--cond", cond, "--norm", "rms"])
    assert summary["step"] == 2
    assert ("color_accuracy" in summary) == (cond == "class")
    assert main(["sample", "--checkpoint", str(run), "--out", str(tmp_path / "s.gif"),
                 "--sample-steps", "1", "--num-per-row", "1", "--no-ema"]) == 0  # fmt: skip


def test_resume_continues(tmp_path: Path) -> None:
    run = [*TINY_RUN, "--out", str(tmp_path / "run"), "--cond", "none"]
    train(run)
    assert train([*run, "--steps", "3", "--resume", "latest"])["step"] == 3


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["sample", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "x.gif")]) == 1
    assert "error" in capsys.readouterr().err
    bad = ["train", *TINY_RUN, "--out", str(tmp_path / "r"), "--cond", "none", "--dim-mults", "0"]
    assert main(bad) == 1
    assert "dim_mults" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "c"),
                 "--image-size", "8", "--frames", "2"]) == 1  # fmt: skip


def test_convert_then_sample_a_reference_checkpoint(tmp_path: Path) -> None:
    """A file in the reference Trainer's format converts and samples through the CLI."""
    import torch

    from video_ddpm import GaussianDiffusion, Unet3D, load_pretrained

    net = Unet3D(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
    model = GaussianDiffusion(net, image_size=8, num_frames=2, timesteps=12)
    state = model.state_dict()
    checkpoint = tmp_path / "model-3.pt"
    torch.save({"step": 3, "model": state, "ema": state, "scaler": {"scale": 1.0}}, checkpoint)
    out = tmp_path / "converted"
    assert main(["convert", str(checkpoint), "--out", str(out), "--image-size", "8",
                 "--frames", "2"]) == 0  # fmt: skip
    assert load_pretrained(out).num_timesteps == 12
    assert main(["sample", "--checkpoint", str(out), "--out", str(tmp_path / "c.gif"),
                 "--num-per-row", "2", "--sampler", "ddpm"]) == 0  # fmt: skip
    assert read_video(tmp_path / "c.gif").shape[1] == 2


def test_checkpoints_hold_optimizer_scheduler_and_rng(tmp_path: Path) -> None:
    """Reference defect 6: its Trainer saved no optimizer state."""
    run = tmp_path / "run"
    train([*TINY_RUN, "--out", str(run), "--cond", "class"])
    (checkpoint,) = (run / "checkpoints").iterdir()
    names = {p.name for p in checkpoint.iterdir()}
    assert {
        "model.safetensors",
        "ema.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "rng.pt",
    } <= names


def test_train_on_a_folder_of_real_videos_with_workers(
    tmp_path: Path, tiny_bert_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The data path as users run it: three h264 files (sizes 96x54, 33x41, 64x48; 25, 29.97 fps
    and variable), two captioned, fewer files than the batch, 2 DataLoader workers, a TensorBoard
    tracker; the report holds real-data figures only."""
    import json

    from mp_layers.video.testing import write_video_folder

    write_video_folder(tmp_path / "videos")
    at = TINY_RUN.index("--num-videos")
    base = TINY_RUN[:at] + TINY_RUN[at + 2 :]  # --num-videos is MovingShapes'
    run = tmp_path / "run"
    code = main(
        ["train", *base, "--out", str(run), "--data", str(tmp_path / "videos"),
         "--batch-size", "4", "--num-workers", "2", "--clips-per-video", "all",
         "--text-encoder", str(tiny_bert_dir), "--report-to", "tensorboard"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "held-out loss at fixed noise" in printed
    assert "held-out real clips: motion" in printed
    assert "colour accuracy" not in printed
    assert "quality:" not in printed  # no MovingShapes figure
    report = json.loads((run / "report.json").read_text())
    assert report["step"] == 2
    assert set(report["held_out_loss"]) == {"t=1", "t=5", "t=9"}
    assert report["held_out"] == "the last 10% of each of 3 videos held out"
    assert {"motion", "real_motion", "colour_histogram_distance"} <= set(report["samples_vs_real"])
    assert not {"color_accuracy", "quality"} & set(report)
    config = json.loads((run / CONFIG_FILE).read_text())
    assert config["cond"] == "text"  # auto: two of the three videos have captions
    assert config["data"] == "videos"
    assert config["sample_prompts"]  # the captions of the videos
    for name in ("samples.gif", "samples_vs_real.gif", "samples_vs_real.mp4"):
        assert (run / name).is_file(), name
    assert list((run / "tracking").glob("**/events.out.tfevents.*"))

    assert main(["sample", "--checkpoint", str(run), "--out", str(tmp_path / "s.mp4"),
                 "--sample-steps", "1", "--num-per-row", "1"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "colour accuracy" not in printed
    assert read_video(tmp_path / "s.mp4").shape[1] == 2


def test_videos_without_captions_train_unconditionally(tmp_path: Path) -> None:
    import json

    from mp_layers.video.testing import write_video_folder

    write_video_folder(tmp_path / "videos", captions=False)
    at = TINY_RUN.index("--num-videos")
    base = TINY_RUN[:at] + TINY_RUN[at + 2 :]
    summary = train([*base, "--out", str(tmp_path / "run"), "--data", str(tmp_path / "videos"),
                     "--batch-size", "4"])  # fmt: skip
    assert summary["step"] == 2
    assert json.loads((tmp_path / "run" / CONFIG_FILE).read_text())["cond"] == "none"
    assert "sample_prompts" not in summary


def test_bad_user_data_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mp_layers.video.testing import write_video_folder

    at = TINY_RUN.index("--num-videos")
    base = TINY_RUN[:at] + TINY_RUN[at + 2 :]
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not a video")
    (junk / "clip.mp4").write_bytes(b"not an mp4 either")
    assert main(["train", *base, "--out", str(tmp_path / "a"), "--data", str(junk)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert error.startswith("video-ddpm train: error:")
    assert "clip.mp4" in error

    videos = tmp_path / "videos"
    write_video_folder(videos)
    (videos / "a.txt").write_bytes(b"caf\xe9")
    assert main(["train", *base, "--out", str(tmp_path / "b"), "--data", str(videos)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "a.txt is not UTF-8 text" in error

    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_wandb_available", lambda: False)
    (videos / "a.txt").write_text("a caption")
    assert main(["train", *base, "--out", str(tmp_path / "c"), "--data", str(videos),
                 "--cond", "none", "--report-to", "wandb"]) == 1  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert "mp-layers[wandb]" in error
    assert error.count("\n") == 0
    assert main(["train", *base, "--out", str(tmp_path / "d"), "--data", str(videos),
                 "--cond", "class"]) == 1  # fmt: skip
    assert "--cond class: expected class-labelled data" in capsys.readouterr().err


def test_sample_from_a_hub_repo_id_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sample --checkpoint org/name`: a save_pretrained folder published on the Hub, read from
    a Hub cache with `local_files_only` (nothing fetched)."""
    from mp_layers.testing import populate_hub_cache
    from video_ddpm import GaussianDiffusion, Unet3D

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = Unet3D(dim=8, dim_mults=(1, 2), attn_heads=2, attn_dim_head=8)
    folder = GaussianDiffusion(net, image_size=8, num_frames=2, timesteps=10).save_pretrained(
        tmp_path / "saved"
    )
    populate_hub_cache(tmp_path / "hub", "someone/tiny-video-ddpm", folder)
    import huggingface_hub

    def from_cache(**kwargs: object) -> str:  # the real lookup, in this cache, never online
        kwargs.update(cache_dir=tmp_path / "hub", local_files_only=True)
        return huggingface_hub.snapshot_download(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("mp_layers.hub.snapshot_download", from_cache)
    out = tmp_path / "hub.gif"
    assert main(["sample", "--checkpoint", "someone/tiny-video-ddpm", "--out", str(out),
                 "--sample-steps", "2", "--num-per-row", "2"]) == 0  # fmt: skip
    assert read_video(out).shape[1] == 2
    assert main(["sample", "--checkpoint", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    assert "or a Hub repo id" in capsys.readouterr().err
