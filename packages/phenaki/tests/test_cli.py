"""`phenaki train-tokenizer`: tiny runs end to end, resume, GAN phases, inputs, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from phenaki import CViViT
from phenaki.cli import ClipInputs, main, train_tokenizer

TINY_RUN = [
    "--image-size=16",
    "--frames=5",
    "--dim=16",
    "--heads=2",
    "--dim-head=8",
    "--codebook-size=32",
    "--batch-size=2",
    "--num-videos=8",
    "--num-held-out=4",
    "--warmup-steps=1",
    "--no-progress",
]


def test_default_flags_describe_the_documented_run() -> None:
    from phenaki.cli import _train_parser

    args = _train_parser().parse_args([])
    assert (args.image_size, args.frames, args.patch_size, args.temporal_patch_size) == (
        32,
        9,
        4,
        2,
    )
    assert args.max_time is not None
    assert args.max_time <= 480
    assert args.data == "synthetic"


def test_tiny_run_writes_everything_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = train_tokenizer([*TINY_RUN, "--steps=3", f"--out={out}", "--save-every=2"])
    assert summary["step"] == 3
    for name in ("recons.gif", "loss.png", "metrics.csv", "report.json"):
        assert (out / name).is_file(), name
    tokenizer = CViViT.from_pretrained(out / "tokenizer")
    assert tokenizer.config["image_size"] == [16, 16]
    assert 0 < summary["codebook_usage"] <= 1
    assert summary["psnr"] > 0
    assert 0 <= summary["color_accuracy"] <= 1
    assert json.loads((out / "report.json").read_text())["step"] == 3


def test_max_time_zero_means_no_limit(tmp_path: Path) -> None:
    summary = train_tokenizer([*TINY_RUN, "--steps=1", f"--out={tmp_path}", "--max-time=0"])
    assert summary["step"] == 1
    assert not summary["time_limit_reached"]


def test_resume_continues_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    train_tokenizer([*TINY_RUN, "--steps=2", f"--out={out}", "--save-every=1"])
    summary = train_tokenizer([*TINY_RUN, "--steps=4", f"--out={out}", "--resume=latest"])
    assert summary["step"] == 4
    assert (out / "checkpoints" / "step-000000004").is_dir()


@pytest.mark.parametrize("gan", ["frame", "video"])
def test_gan_run_trains_the_discriminator_in_its_own_phase(tmp_path: Path, gan: str) -> None:
    out = tmp_path / gan
    train_tokenizer(
        [
            *TINY_RUN,
            "--steps=2",
            f"--out={out}",
            f"--gan={gan}",
            "--discr-base-dim=2",
            "--gp-every=2",
        ]
    )
    checkpoint = out / "checkpoints" / "step-000000002"
    assert (checkpoint / "optimizer-discriminator.pt").is_file()
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert "loss_discriminator" in header
    state = torch.load(checkpoint / "optimizer-discriminator.pt", weights_only=True)
    tokenizer = CViViT.from_pretrained(out / "tokenizer")
    assert tokenizer.discr is not None
    assert len(state["param_groups"][0]["params"]) == len(list(tokenizer.discr.parameters()))


def test_clip_inputs_image_pretraining_and_mixed_batches() -> None:
    video = torch.rand(64, 3, 5, 8, 8)
    pretrain = ClipInputs(seed=0, image_pretrain_steps=2, image_fraction=0.5)
    images, mask = pretrain(video, 1)
    assert images.shape == (64, 3, 8, 8)
    assert mask is None
    clips, mask = pretrain(video, 2)
    assert clips is video
    assert mask is not None
    assert mask[:, 0].all()
    cut = ~mask[:, 1:].any(dim=1)
    assert 16 < int(cut.sum()) < 48  # about half the clips become images
    assert mask[~cut].all()
    again = pretrain(video, 2)[1]
    assert again is not None
    assert torch.equal(again, mask)  # the same for both phases of a step and on resume
    other = pretrain(video, 3)[1]
    assert other is not None
    assert not torch.equal(other, mask)
    plain = ClipInputs(seed=0, image_pretrain_steps=0, image_fraction=0.0)
    assert plain(video, 0)[1] is None


def test_image_pretraining_run(tmp_path: Path) -> None:
    summary = train_tokenizer(
        [
            *TINY_RUN,
            "--steps=2",
            f"--out={tmp_path}",
            "--image-pretrain-steps=1",
            "--image-fraction=0.5",
        ]
    )
    assert summary["step"] == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--image-fraction=2"], "--image-fraction: expected a value in [0, 1], got 2.0"),
        (["--perceptual=vgg16"], "--perceptual: the perceptual loss comes with the GAN"),
        (["--gan=frame", "--perceptual=nothing.pt"], "--perceptual: expected one of"),
        (["--frames=4"], "1 + k * temporal_patch_size (2) frames, got 4"),
        (["--codebook-size=100"], "power of two, got 100"),
        (["--gp-every=0"], "--gp-every: expected >= 1, got 0"),
    ],
)
def test_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    code = main(["train-tokenizer", *TINY_RUN, "--steps=1", f"--out={tmp_path}", *flags])
    assert code == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "train-tokenizer" in capsys.readouterr().out
