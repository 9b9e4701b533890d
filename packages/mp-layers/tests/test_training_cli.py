"""The shared train/sample flags and their TOML config files."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mp_layers.training import (
    TrainerConfig,
    add_sample_arguments,
    add_train_arguments,
    make_dataset,
    parse_train_args,
    trainer_config_from_args,
)


def _parser() -> argparse.ArgumentParser:
    parser = add_train_arguments(argparse.ArgumentParser())
    parser.add_argument("--image-size", type=int, default=32)  # a model package's own flag
    parser.add_argument("--no-compile", action="store_true")
    return parser


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return str(path)


def test_defaults_and_flags() -> None:
    args = parse_train_args([])
    assert (args.data, args.steps, args.batch_size, args.lr) == ("synthetic", 10_000, 8, 1e-4)
    assert (args.out, args.resume, args.mixed_precision, args.config) == (
        "runs/train",
        None,
        "no",
        None,
    )
    args = parse_train_args(
        [
            "--data",
            "/clips",
            "--steps",
            "5",
            "--batch-size",
            "2",
            "--lr",
            "3e-4",
            "--out",
            "o",
            "--resume",
            "latest",
            "--mixed-precision",
            "bf16",
        ]
    )
    assert (args.data, args.steps, args.batch_size, args.lr) == ("/clips", 5, 2, 3e-4)
    assert (args.out, args.resume, args.mixed_precision) == ("o", "latest", "bf16")


def test_toml_fills_in_and_command_line_wins(tmp_path: Path) -> None:
    config = _toml(
        tmp_path,
        'steps = 50\nbatch-size = 3\nlr = 1\nmixed_precision = "bf16"\nimage-size = 16\n'
        "no-compile = true\n",
    )
    args = parse_train_args(["--config", config, "--steps", "7"], parser=_parser())
    assert args.steps == 7  # the flag wins
    assert args.batch_size == 3
    assert args.mixed_precision == "bf16"
    assert args.lr == 1.0
    assert isinstance(args.lr, float)
    assert args.image_size == 16
    assert args.no_compile is True
    assert args.data == "synthetic"  # neither: the default


def test_toml_fills_in_defaults_set_with_set_defaults(tmp_path: Path) -> None:
    """`parser.set_defaults` (how phenaki's flags take a dataclass's defaults) is a default too:
    the file overrides it, the command line overrides the file."""
    parser = _parser()
    parser.add_argument("--frames", type=int)
    parser.set_defaults(frames=9, image_size=32, steps=4000)
    config = _toml(tmp_path, "frames = 17\nimage-size = 64\nsteps = 10\n")
    args = parse_train_args(["--config", config, "--steps", "7"], parser=parser)
    assert (args.frames, args.image_size, args.steps) == (17, 64, 7)
    assert parse_train_args([], parser=parser).frames == 9


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stepz = 5\n", r"unknown key 'stepz'; expected one of: .*batch-size"),
        ('steps = "5"\n', r"key 'steps' expected int, got str '5'"),
        ("steps = true\n", r"key 'steps' expected int, got bool True"),
        ('mixed-precision = "fp8"\n', r"key 'mixed-precision' expected one of \['no', 'bf16'"),
        ("config = 'other.toml'\n", r"unknown key 'config'"),
        ("[train]\nsteps = 5\n", r"unknown key 'train'"),
        ("steps = \n", r"invalid TOML"),
    ],
)
def test_toml_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_train_args(["--config", _toml(tmp_path, text)])


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected an existing TOML file"):
        parse_train_args(["--config", str(tmp_path / "absent.toml")])


def test_max_time_zero_means_no_limit() -> None:
    assert trainer_config_from_args(parse_train_args(["--max-time", "0"])).max_time_s is None
    assert trainer_config_from_args(parse_train_args(["--max-time", "60"])).max_time_s == 60.0


def test_trainer_config_from_args() -> None:
    args = parse_train_args(["--steps", "9", "--out", "x", "--grad-accum-steps", "2"])
    config = trainer_config_from_args(args, ema_beta=None)
    assert isinstance(config, TrainerConfig)
    assert (config.steps, config.out_dir, config.grad_accum_steps, config.ema_beta) == (
        9,
        "x",
        2,
        None,
    )
    assert config.max_time_s is None
    timed = parse_train_args(["--max-time", "90"])
    assert trainer_config_from_args(timed).max_time_s == 90.0


def test_sample_arguments() -> None:
    parser = add_sample_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--num-samples", "4", "--no-ema"])
    assert (args.checkpoint, args.num_samples, args.no_ema, args.out) == (
        "latest",
        4,
        True,
        "runs/train",
    )


def test_make_dataset(tmp_path: Path) -> None:
    pytest.importorskip("mp_layers.video")
    dataset = make_dataset("synthetic", image_size=16, num_frames=4, num_videos=8)
    assert len(dataset) == 8
    assert dataset[0]["video"].shape == (3, 4, 16, 16)
    with pytest.raises(ValueError, match="expected 'synthetic', an existing folder"):
        make_dataset(tmp_path / "missing", image_size=16, num_frames=4)
    with pytest.raises(ValueError, match="VideoFolder options"):
        make_dataset("synthetic", image_size=16, num_frames=4, random_flip=True)


def test_distributed_and_compile_flags(tmp_path: Path) -> None:
    args = parse_train_args([])
    assert (args.distributed, args.compile) == ("ddp", False)
    config = trainer_config_from_args(args)
    assert (config.distributed, config.compile) == ("ddp", False)
    args = parse_train_args(["--distributed", "fsdp", "--compile"])
    config = trainer_config_from_args(args)
    assert (config.distributed, config.compile) == ("fsdp", True)
    from_file = parse_train_args(
        ["--config", _toml(tmp_path, 'distributed = "fsdp"\ncompile = true\n')]
    )
    assert (from_file.distributed, from_file.compile) == ("fsdp", True)
    with pytest.raises(SystemExit):
        parse_train_args(["--distributed", "deepspeed"])
    with pytest.raises(ValueError, match=r"key 'distributed' expected one of \['ddp', 'fsdp'\]"):
        parse_train_args(["--config", _toml(tmp_path, 'distributed = "zero"\n')])
    with pytest.raises(ValueError, match=r"key 'compile' expected bool"):
        parse_train_args(["--config", _toml(tmp_path, 'compile = "yes"\n')])


def test_num_workers_and_clip_flags(tmp_path: Path) -> None:
    from mp_layers.training.cli import data_options, default_num_workers, num_workers_from_args

    args = parse_train_args([])
    assert num_workers_from_args(args) == 0  # synthetic data lives in memory
    assert trainer_config_from_args(args).num_workers == 0
    assert data_options(args) == {}
    folder = parse_train_args(["--data", str(tmp_path)])
    assert num_workers_from_args(folder) == default_num_workers() >= 1
    assert trainer_config_from_args(parse_train_args(["--num-workers", "3"])).num_workers == 3
    with pytest.raises(ValueError, match="--num-workers"):
        num_workers_from_args(parse_train_args(["--num-workers", "-1"]))
    args = parse_train_args(
        ["--clips-per-video", "all", "--sampling", "uniform", "--clip-fps", "12",
         "--skip-undecodable"]
    )  # fmt: skip
    assert data_options(args) == {
        "clips_per_video": "all",
        "sampling": "uniform",
        "fps": 12.0,
        "skip_undecodable": True,
    }
    assert data_options(parse_train_args(["--clips-per-video", "4", "--frame-stride", "2"])) == {
        "clips_per_video": 4,
        "frame_stride": 2,
    }
    with pytest.raises(ValueError, match="--clips-per-video"):
        data_options(parse_train_args(["--clips-per-video", "many"]))


def test_make_dataset_reads_folders_and_shard_patterns(tmp_path: Path) -> None:
    pytest.importorskip("av")
    pytest.importorskip("webdataset")
    from mp_layers.video import VideoFolder, VideoShards
    from mp_layers.video.testing import write_indexed_video

    write_indexed_video(tmp_path / "a.mp4", 20)
    folder = make_dataset(tmp_path, image_size=16, num_frames=4, clips_per_video=3)
    assert isinstance(folder, VideoFolder)
    assert len(folder) == 3
    shards = make_dataset(str(tmp_path / "{00000..00003}.tar"), image_size=16, num_frames=4)
    assert isinstance(shards, VideoShards)
    assert len(shards.shards) == 4
    with pytest.raises(ValueError, match="shard pattern"):
        make_dataset(tmp_path / "missing", image_size=16, num_frames=4)
