"""The `train` / `sample` command-line flags every model package shares, with TOML config files.

A model package builds its parser, calls `add_train_arguments` (and adds its own flags), then
`parse_train_args(argv, parser=parser)`. `--config FILE` reads a TOML file whose keys are flag names
(`batch-size` or `batch_size`); flags given on the command line win over the file, the file wins
over defaults, and unknown keys or wrongly typed values raise `ValueError`.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mp_layers.flags import DataFlags as DataFlags
from mp_layers.training.config import DISTRIBUTED, MIXED_PRECISION, REPORT_TO, TrainerConfig
from mp_layers.typecheck import typechecked

SAMPLINGS = ("random", "uniform", "first")  # mp_layers.video.clips.SAMPLINGS, without its import

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


@typechecked
def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the shared training flags (DESIGN.md section 4) to `parser` and return it.

    `--data synthetic|PATH`, `--steps`, `--batch-size` (per process), `--lr`, `--out DIR`,
    `--resume latest|PATH`, `--mixed-precision no|bf16|fp16`, `--config FILE`, plus `--seed`,
    `--grad-accum-steps`, `--save-every`, `--sample-every`, `--max-time` (seconds),
    `--distributed ddp|fsdp` (how several processes share the model; `TrainerConfig.distributed`)
    `--compile` (`torch.compile` the model; `TrainerConfig.compile`) and `--report-to
    none|tensorboard|wandb|trackio` (an experiment tracker; `TrainerConfig.report_to`).

    Data: `--data` is 'synthetic', a folder of videos (`VideoFolder`) or a WebDataset shard
    pattern such as `data/{00000..00009}.tar` (`VideoShards`); `--num-workers` DataLoader
    workers (default: 0 for 'synthetic', else `default_num_workers()`); how clips are cut from
    real videos: `--clips-per-video N|all`, `--sampling random|uniform|first`, `--frame-stride`
    or `--clip-fps` (resample to this frame rate), `--skip-undecodable` (see `data_options`).

    `--resume latest` continues from the newest checkpoint whose files match the SHA-256 digests
    recorded in its `state.json`, skipping damaged ones with a warning; `--resume PATH` refuses
    a damaged checkpoint (`checkpoint.CheckpointError`, a one-line `ValueError`).
    """
    add = parser.add_argument
    add(
        "--data",
        default="synthetic",
        help="'synthetic' (MovingShapes), a folder of videos, or tar shards ('d/{00000..00009}.tar')",
    )
    add("--num-workers", type=int, default=None, help="DataLoader workers (default: auto)")
    add("--clips-per-video", default="1", help="clips per video: a number or 'all'")
    add("--sampling", default="random", choices=SAMPLINGS, help="where clips start in a video")
    add("--frame-stride", type=int, default=1, help="take every N-th frame of a video")
    add("--clip-fps", type=float, default=None, help="resample videos to this frame rate")
    add("--skip-undecodable", action="store_true", help="skip bad videos with a warning")
    add("--steps", type=int, default=10_000, help="optimizer steps in total")
    add("--batch-size", type=int, default=8, help="samples per step and process")
    add("--lr", type=float, default=1e-4, help="learning rate")
    add("--out", default="runs/train", help="run folder (checkpoints, samples, metrics)")
    add("--resume", default=None, help="'latest' or a checkpoint folder")
    add("--mixed-precision", default="no", choices=MIXED_PRECISION, help="autocast precision")
    add("--config", default=None, help="TOML file whose keys are these flags")
    add("--seed", type=int, default=0, help="random seed")
    add("--grad-accum-steps", type=int, default=1, help="micro-batches per optimizer step")
    add("--save-every", type=int, default=1000, help="steps between checkpoints")
    add("--sample-every", type=int, default=1000, help="steps between sample sheets (0: never)")
    add(
        "--max-time",
        type=float,
        default=None,
        help="stop (with a checkpoint) after SECONDS; 0: no time limit",
    )
    add(
        "--distributed",
        default="ddp",
        choices=DISTRIBUTED,
        help="several processes: 'ddp' (whole model on each) or 'fsdp' (sharded)",
    )
    add("--compile", action="store_true", help="torch.compile the model for training and sampling")
    add(
        "--report-to",
        default="none",
        choices=REPORT_TO,
        help="experiment tracker through Accelerate (default: metrics.csv and loss.png only)",
    )
    return parser


@typechecked
def add_sample_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the shared sampling flags: `--checkpoint latest|PATH` (latest: newest under
    `--out/checkpoints`), `--out DIR`, `--num-samples`, `--seed`, `--no-ema`, `--mixed-precision`,
    `--config FILE`."""
    add = parser.add_argument
    add("--checkpoint", default="latest", help="'latest' (under --out) or a checkpoint folder")
    add("--out", default="runs/train", help="run folder; samples go to OUT/samples")
    add("--num-samples", type=int, default=16, help="videos to sample")
    add("--seed", type=int, default=0, help="random seed")
    add("--no-ema", action="store_true", help="use the raw weights instead of the EMA weights")
    add("--mixed-precision", default="no", choices=MIXED_PRECISION, help="autocast precision")
    add("--config", default=None, help="TOML file whose keys are these flags")
    return parser


@typechecked
def parse_train_args(
    argv: Sequence[str] | None = None, *, parser: argparse.ArgumentParser | None = None
) -> argparse.Namespace:
    """Parse `argv` with `parser` (default: a parser with `add_train_arguments`), merging the
    TOML file named by `--config`: command line > file > defaults."""
    if parser is None:
        parser = add_train_arguments(argparse.ArgumentParser())
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        explicit = _explicit_dests(parser, argv)
        for dest, value in load_toml_config(args.config, parser=parser).items():
            if dest not in explicit:
                setattr(args, dest, value)
    return args


@typechecked
def load_toml_config(path: str | Path, *, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Read a flat TOML file of flag values, checked against `parser`; returns {dest: value}."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"--config: expected an existing TOML file, got {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"--config {path}: invalid TOML ({error})") from None
    actions = {
        action.dest: action
        for action in parser._actions
        if action.option_strings and action.dest not in ("help", "config")
    }
    values: dict[str, Any] = {}
    for key, value in raw.items():
        dest = key.replace("-", "_")
        if dest not in actions:
            known = ", ".join(sorted(d.replace("_", "-") for d in actions))
            raise ValueError(f"--config {path}: unknown key {key!r}; expected one of: {known}")
        values[dest] = _check_value(path, key, value, actions[dest])
    return values


def _check_value(path: Path, key: str, value: Any, action: argparse.Action) -> Any:
    expected: tuple[type, ...]
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        expected = (bool,)
    elif action.type is int:
        expected = (int,)
    elif action.type is float:
        expected = (int, float)
    else:
        expected = (str,)
    if (isinstance(value, bool) and bool not in expected) or not isinstance(value, expected):
        names = " or ".join(t.__name__ for t in expected)
        raise ValueError(
            f"--config {path}: key {key!r} expected {names}, got {type(value).__name__} {value!r}"
        )
    if action.choices is not None and value not in action.choices:
        raise ValueError(
            f"--config {path}: key {key!r} expected one of {list(action.choices)}, got {value!r}"
        )
    return float(value) if action.type is float else value


def _explicit_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The dests set on the command line: parse again with every default suppressed (those of
    the actions and those of `parser.set_defaults`, which argparse applies to every dest)."""
    probe = copy.deepcopy(parser)
    probe._defaults.clear()
    for action in probe._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    return set(vars(probe.parse_known_args(argv)[0]))


@typechecked
def default_num_workers() -> int:
    """DataLoader workers for real videos: one per CPU this process may use, less one for the
    training loop, at least 1 and at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus - 1))


@typechecked
def num_workers_from_args(args: object) -> int:
    """`--num-workers`, or its default: 0 for `--data synthetic` (in memory), else
    `default_num_workers()`. `args`: parsed flags, or any object with the flags' attributes
    (a package's run config)."""
    value = getattr(args, "num_workers", None)
    if value is None:
        return (
            0 if str(getattr(args, "data", "synthetic")) == "synthetic" else default_num_workers()
        )
    if value < 0:
        raise ValueError(f"--num-workers: expected 0 or more, got {value}")
    return int(value)


@typechecked
def data_options(args: object) -> dict[str, Any]:
    """The clip flags that differ from their defaults, as `VideoFolder`/`VideoShards` keyword
    arguments for `make_dataset` (`--clips-per-video` -> `clips_per_video`, ...). `args`: parsed
    flags, or any object with the flags' attributes (a package's run config)."""
    options: dict[str, Any] = {}
    clips = str(getattr(args, "clips_per_video", "1"))
    if clips != "1":
        if clips != "all" and not (clips.isdigit() and int(clips) >= 1):
            raise ValueError(f"--clips-per-video: expected a number >= 1 or 'all', got {clips!r}")
        options["clips_per_video"] = clips if clips == "all" else int(clips)
    for flag, key, default in (
        ("sampling", "sampling", "random"),
        ("frame_stride", "frame_stride", 1),
        ("clip_fps", "fps", None),
        ("skip_undecodable", "skip_undecodable", False),
    ):
        value = getattr(args, flag, default)
        if value != default:
            options[key] = value
    return options


@typechecked
def trainer_config_from_args(args: argparse.Namespace, **overrides: Any) -> TrainerConfig:
    """A `TrainerConfig` from parsed train flags; keyword `overrides` set any other field."""
    values: dict[str, Any] = {
        "num_workers": num_workers_from_args(args),
        "out_dir": args.out,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "mixed_precision": args.mixed_precision,
        "seed": args.seed,
        "grad_accum_steps": args.grad_accum_steps,
        "save_every": args.save_every,
        "sample_every": args.sample_every,
        "max_time_s": args.max_time if args.max_time else None,  # 0: no limit
        "distributed": args.distributed,
        "compile": args.compile,
        "report_to": getattr(args, "report_to", "none"),
    }
    values.update(overrides)
    return TrainerConfig(**values)


@typechecked
def make_dataset(
    data: str | Path,
    *,
    image_size: int,
    num_frames: int,
    channels: int = 3,
    num_videos: int = 1024,
    seed: int = 0,
    **folder_kwargs: Any,
) -> Any:
    """`MovingShapes` for `data == 'synthetic'`, a `VideoShards` stream for a shard pattern (a
    `.tar` path, brace pattern or `::`-separated list), else a `VideoFolder` over the folder
    `data` (`folder_kwargs` go to the dataset, e.g. `random_flip=True`, or `data_options(args)`).
    Videos keep their channels; `channels` is MovingShapes'.
    """
    from mp_layers.video import MovingShapes, VideoFolder, VideoShards  # the [video] extra

    if str(data) == "synthetic":
        if folder_kwargs:
            raise ValueError(
                f"make_dataset: VideoFolder options {sorted(folder_kwargs)} given with 'synthetic'"
            )
        return MovingShapes(
            num_videos, image_size=image_size, num_frames=num_frames, channels=channels, seed=seed
        )
    text = str(data)
    if ".tar" in text and not Path(text).is_dir():
        stream_kwargs = {
            k: v for k, v in folder_kwargs.items() if k not in ("pad_short", "extensions")
        }
        return VideoShards(
            text, image_size=image_size, num_frames=num_frames, seed=seed, **stream_kwargs
        )
    path = Path(data)
    if not path.is_dir():
        raise ValueError(
            f"--data: expected 'synthetic', an existing folder or a .tar shard pattern, got {text!r}"
        )
    return VideoFolder(
        path, image_size=image_size, num_frames=num_frames, seed=seed, **folder_kwargs
    )


@typechecked
def timed_fit(trainer: Any, resume: str | Path | None) -> tuple[Any, dict[str, Any]]:
    """Run `trainer.fit(resume=resume)` and time it. Returns the `FitResult` and a summary dict
    `{"step", "train_seconds", "time_limit_reached"}` that the model CLIs extend and print.

    A `resume` that cannot be honoured (checkpoints exist but `resume` is None, no checkpoint at
    PATH, a damaged checkpoint: `checkpoint.CheckpointError`) raises a `ValueError` whose message
    is one line, which the model CLIs' `main` prints as `<prog> train: error: <message>`."""
    start = time.perf_counter()
    result = trainer.fit(resume=resume)
    train_seconds = time.perf_counter() - start
    summary = {
        "step": result.step,
        "train_seconds": round(train_seconds, 1),
        "time_limit_reached": result.time_limit_reached,
    }
    return result, summary


@typechecked
def print_fit(result: Any, summary: dict[str, Any], out: str | Path) -> None:
    """Print what a training run did: steps, seconds, last checkpoint, and how to continue it when
    it stopped at its time budget."""
    print(
        f"trained {result.step} steps in {summary['train_seconds']:.0f} s; "
        f"checkpoint {result.checkpoint}"
    )
    if result.time_limit_reached:
        print(f"stopped at the --max-time limit; continue with --resume latest --out {out}")
