"""`phenaki train | sample | story`: text-to-video on a frozen tokenizer (extra `phenaki[train]`).

The flags become a config of `phenaki.workflows` and one call does the work: `train` ->
`PhenakiTrainConfig` / `train_phenaki_run` (MaskGit, and a critic with `--critic token|self`, on
clips tokenised once by a frozen C-ViViT: `--tokenizer DIR`, or one trained first with a short
budget; see `phenaki.workflows.text_to_video` for what a run writes and prints); `sample` ->
`SampleConfig` / `sample_clips` and `story` -> `StoryConfig` / `tell_story`, which load such a run
(`phenaki.workflows.generate`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from phenaki.workflows.generate import SampleConfig, StoryConfig, sample_clips, tell_story
from phenaki.workflows.text_to_video import DEFAULT_PROMPTS as DEFAULT_PROMPTS
from phenaki.workflows.text_to_video import RUN_FOLDER as RUN_FOLDER
from phenaki.workflows.text_to_video import PhenakiTrainConfig, train_phenaki_run
from phenaki.workflows.text_to_video import TokenizedClips as TokenizedClips
from phenaki.workflows.text_to_video import prompt_indices as prompt_indices
from phenaki.workflows.text_to_video import sample_sheet as sample_sheet

DEFAULTS = PhenakiTrainConfig()


def _train_parser() -> argparse.ArgumentParser:
    from mp_layers.training import add_train_arguments

    parser = argparse.ArgumentParser(
        prog="phenaki train",
        description="Train MaskGit on a frozen C-ViViT (defaults: MovingShapes captions, about "
        "10 minutes on a 2-core CPU including the tokenizer).",
    )
    add_train_arguments(parser)
    add = parser.add_argument
    add("--tokenizer", help="a CViViT folder or a train-tokenizer run; default: train one first")
    add("--tokenizer-max-time", type=float, help="budget of that tokenizer run")
    add("--image-size", type=int, help="frame size (when training the tokenizer)")
    add("--frames", type=int, help="frames per clip")
    add("--text-encoder", help="a Hugging Face name or folder (default: MiniLM)")
    add("--dim", type=int, help="MaskGit width")
    add("--depth", type=int, help="MaskGit layers")
    add("--heads", type=int, help="attention heads")
    add("--dim-head", type=int, help="width of an attention head")
    add("--critic", choices=("none", "token", "self"), help="token critic")
    add("--cond-drop-prob", type=float, help="captions dropped in training")
    add("--sample-steps", type=int, help="MaskGit decoding steps")
    add("--decoding", choices=("reference", "maskgit"), help="rule")
    add("--guidance", type=float, help="classifier-free guidance scale")
    add("--prompts", help="'|'-separated sample prompts")
    add("--num-per-row", type=int, help="samples per prompt")
    add("--num-videos", type=int, help="MovingShapes clips")
    add("--warmup-steps", type=int, help="linear learning-rate warm-up")
    add("--ema-beta", type=float, help="EMA decay (0: no EMA)")
    add("--no-progress", action="store_true", help="no progress bar")
    defaults = {f.name: getattr(DEFAULTS, f.name) for f in fields(PhenakiTrainConfig)}
    del defaults["progress"]  # --no-progress
    defaults["prompts"] = "|".join(DEFAULTS.prompts)
    parser.set_defaults(**defaults)
    return parser


def train_config(args: argparse.Namespace) -> PhenakiTrainConfig:
    """The config of parsed `phenaki train` flags."""
    values: dict[str, Any] = {
        f.name: getattr(args, f.name) for f in fields(PhenakiTrainConfig) if f.name != "progress"
    }
    values["prompts"] = tuple(p.strip() for p in args.prompts.split("|") if p.strip())
    return PhenakiTrainConfig(**values, progress=not args.no_progress)


def train(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`phenaki train`: returns a summary dict (also printed)."""
    from mp_layers.training import parse_train_args

    args = parse_train_args(argv, parser=_train_parser())
    return train_phenaki_run(train_config(args))


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    add = parser.add_argument
    add("--run", default="runs/phenaki", help="a `phenaki train` folder or its phenaki/ folder")
    add("--out", required=True, help="the video file to write (.gif or .mp4)")
    add("--text-encoder", default=None, help="the encoder the run was trained with")
    add("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    add("--temperature", type=float, default=0.9, help="starting sampling temperature")
    add("--seed", type=int, default=0, help="random seed")
    add("--fps", type=int, default=8, help="frames per second of the file")
    return parser


def _common_values(args: argparse.Namespace) -> dict[str, Any]:
    names = ("run", "out", "text_encoder", "guidance", "temperature", "seed", "fps")
    return {name: getattr(args, name) for name in names} | {"texts": tuple(args.text)}


def sample(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`phenaki sample --text "..." --frames N --out FILE.gif|mp4` (one clip per `--text`)."""
    parser = _common(argparse.ArgumentParser(prog="phenaki sample"))
    parser.add_argument("--text", action="append", required=True, help="a prompt (repeatable)")
    parser.add_argument("--frames", type=int, default=9, help="frames (1 + k * temporal patch)")
    args = parser.parse_args(argv)
    return sample_clips(SampleConfig(**_common_values(args), frames=args.frames))


def story(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`phenaki story --text A --text B --frames 9,6 --prime 3 --out FILE`: scene `i + 1` starts
    from the last `--prime` frames of scene `i`."""
    parser = _common(argparse.ArgumentParser(prog="phenaki story"))
    parser.add_argument("--text", action="append", required=True, help="a scene (repeatable)")
    parser.add_argument(
        "--frames", default="9,6", help="frames per scene (prime + new frames <= trained length)"
    )
    parser.add_argument("--prime", default="3", help="prime frames per transition (one or a list)")
    args = parser.parse_args(argv)
    frames = tuple(int(v) for v in args.frames.split(","))
    primes = tuple(int(v) for v in args.prime.split(","))
    return tell_story(
        StoryConfig(
            **_common_values(args),
            frames=frames[0] if len(frames) == 1 else frames,
            primes=primes[0] if len(primes) == 1 else primes,
        )
    )
