"""The `phenaki` command line (extra `phenaki[train]`): `phenaki train-tokenizer | train | sample |
story`.

Each command turns its flags into a config and calls a workflow of `phenaki.workflows`:
`train-tokenizer` (`phenaki.cli_tokenizer`) trains a C-ViViT tokenizer; `train`, `sample` and
`story` (`phenaki.cli_phenaki`) train Phenaki on a frozen tokenizer and sample clips and stories
from a run. The names of 0.1.0's `phenaki.cli` stay importable from here.
"""

from __future__ import annotations

from collections.abc import Sequence

from mp_layers.cli import run_subcommand
from phenaki.cli_phenaki import sample, story, train
from phenaki.cli_tokenizer import _train_parser as _train_parser
from phenaki.cli_tokenizer import build_tokenizer as build_tokenizer
from phenaki.cli_tokenizer import train_tokenizer
from phenaki.workflows.tokenizer import GIF_PAIRS as GIF_PAIRS
from phenaki.workflows.tokenizer import PERCEPTUAL_CHOICES as PERCEPTUAL_CHOICES
from phenaki.workflows.tokenizer import ClipInputs as ClipInputs
from phenaki.workflows.tokenizer import evaluate_reconstructions as evaluate_reconstructions


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `phenaki` console script."""
    commands = {
        "train-tokenizer": train_tokenizer,
        "train": train,
        "sample": sample,
        "story": story,
    }
    return run_subcommand("phenaki", commands, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
