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


def test_train_on_a_folder_of_real_videos_with_workers(tmp_path: Path, tiny_bert_dir: Path) -> None:
    """The data path as users run it: three h264 files (sizes 96x54, 33x41, 64x48; 25, 29.97 fps
    and variable), two captioned, fewer files than the batch, 2 DataLoader workers."""
    from mp_layers.video.testing import write_video_folder

    write_video_folder(tmp_path / "videos")
    at = TINY_RUN.index("--num-videos")
    base = TINY_RUN[:at] + TINY_RUN[at + 2 :]  # --num-videos is MovingShapes'
    summary = train(
        [*base, "--out", str(tmp_path / "run"), "--data", str(tmp_path / "videos"),
         "--batch-size", "4", "--num-workers", "2", "--clips-per-video", "all",
         "--text-encoder", str(tiny_bert_dir)]
    )  # fmt: skip
    assert summary["step"] == 2
    assert (tmp_path / "run" / "samples.gif").is_file()
