"""`phenaki train-tokenizer`: the flags of a C-ViViT tokenizer run (extra `phenaki[train]`).

The flags become a `phenaki.workflows.tokenizer.TokenizerConfig` (its defaults are the flags'),
and `train_tokenizer_run` does the work: see `phenaki.workflows.tokenizer` for what a run writes
under `--out` and prints.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from phenaki.cvivit import CViViT
from phenaki.workflows import tokenizer as workflow
from phenaki.workflows.tokenizer import TokenizerConfig

__all__ = ["build_tokenizer", "tokenizer_config", "train_tokenizer"]

DEFAULTS = TokenizerConfig()


def _train_parser() -> argparse.ArgumentParser:
    from mp_layers.training import add_train_arguments

    parser = argparse.ArgumentParser(
        prog="phenaki train-tokenizer",
        description="Train a C-ViViT video tokenizer (defaults: a ~8-minute CPU run on "
        "MovingShapes, 9 frames of 32x32).",
    )
    add_train_arguments(parser)
    add = parser.add_argument
    add("--image-size", type=int, help="frame height and width")
    add("--frames", type=int, help="frames per clip (1 + k * temporal patch)")
    add("--patch-size", type=int, help="spatial patch size")
    add("--temporal-patch-size", type=int, help="frames per tubelet")
    add("--dim", type=int, help="token width")
    add("--spatial-depth", type=int, help="layers of each spatial transformer")
    add("--temporal-depth", type=int, help="layers of each temporal transformer")
    add("--heads", type=int, help="attention heads")
    add("--dim-head", type=int, help="width of an attention head")
    add("--codebook-size", type=int, help="codes (a power of two with LFQ)")
    add("--quantizer", choices=("lfq", "vq"), help="LFQ or VectorQuantize")
    add("--entropy-loss-weight", type=float, help="LFQ entropy loss weight")
    add("--gan", choices=("none", "frame", "video"), help="discriminator")
    add("--gan-loss", choices=("hinge", "bce"), help="GAN loss")
    add("--discr-base-dim", type=int, help="discriminator base width")
    add("--discr-lr", type=float, help="discriminator learning rate (--lr)")
    add("--gp-every", type=int, help="gradient penalty every N discriminator steps")
    add(
        "--perceptual",
        help="perceptual network: 'none', 'vgg16' (torchvision ImageNet weights, extra "
        "phenaki[vgg]; must be cached offline) or a TorchScript file",
    )
    add("--perceptual-weight", type=float, help="perceptual loss weight")
    add("--image-pretrain-steps", type=int, help="first steps on single frames")
    add("--image-fraction", type=float, help="clips cut to one frame per batch")
    add("--warmup-steps", type=int, help="linear learning-rate warm-up")
    add("--max-grad-norm", type=float, help="gradient clipping (0: off)")
    add("--ema-beta", type=float, help="EMA decay (0: no EMA)")
    add("--num-videos", type=int, help="MovingShapes clips to train on")
    add("--num-held-out", type=int, help="held-out clips for the report")
    add("--no-progress", action="store_true", help="no progress bar")
    defaults = {f.name: getattr(DEFAULTS, f.name) for f in fields(TokenizerConfig)}
    del defaults["progress"]  # --no-progress
    parser.set_defaults(**defaults, sample_every=0)
    return parser


def tokenizer_config(args: argparse.Namespace) -> TokenizerConfig:
    """The config of parsed `train-tokenizer` flags."""
    values: dict[str, Any] = {
        f.name: getattr(args, f.name) for f in fields(TokenizerConfig) if f.name != "progress"
    }
    return TokenizerConfig(**values, progress=not args.no_progress)


def build_tokenizer(args: argparse.Namespace) -> CViViT:
    """The `CViViT` the flags describe."""
    return workflow.build_tokenizer(tokenizer_config(args))


def train_tokenizer(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`phenaki train-tokenizer`: returns a summary dict (also printed)."""
    from mp_layers.training import parse_train_args

    args = parse_train_args(argv, parser=_train_parser())
    return workflow.train_tokenizer_run(tokenizer_config(args))
