"""The `mp-layers` command: data preparation shared by every model package; and
`run_subcommand`, the entry point every model package's console script goes through.

mp-layers prepare-videos SRC OUT [--short-side 128] [--keyframe-interval 1] [--shard-size N]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mp_layers.typecheck import typechecked

__all__ = ["main", "run_subcommand"]


@typechecked
def run_subcommand(
    prog: str,
    commands: Mapping[str, Callable[[list[str]], Any]],
    argv: Sequence[str] | None = None,
    *,
    extra: str = "train",
) -> int:
    """Run `prog COMMAND [options]`: dispatch to `commands[COMMAND](options)`; returns the exit
    status.

    Bad input (`ValueError`, `OSError`: a missing or unreadable file) is one line on stderr and
    status 1, not a traceback; so is an `ImportError` whose message says what to install. A dependency of an extra that is not installed (`pip install prog`
    without `[train]`) is one line naming the extra to install. No command or `-h`: the usage
    line (status 2, or 0 when help was asked for).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = f"usage: {prog} {{{','.join(commands)}}} [options]  (COMMAND -h for help)"
    if not argv or argv[0] not in commands:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print(usage)
        return 0 if asked else 2
    try:
        commands[argv[0]](argv[1:])
    except ModuleNotFoundError as error:
        print(
            f"{prog} {argv[0]}: error: needs the Python package '{error.name}', which is not "
            f"installed; install the extra: pip install '{prog}[{extra}]'",
            file=sys.stderr,
        )
        return 1
    except (ValueError, OSError, ImportError) as error:
        print(f"{prog} {argv[0]}: error: {error}", file=sys.stderr)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mp-layers", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser(
        "prepare-videos",
        help="transcode a folder of videos to a small size with frequent keyframes",
        description="Transcode every video under SRC to h264 with a small short side and a "
        "keyframe every KEYFRAME_INTERVAL seconds, into OUT (a mirror of SRC, or tar shards). "
        "Captions (.txt sidecars) are kept. Resumable: finished outputs are skipped.",
    )
    prepare.add_argument("src", help="folder of videos (searched recursively)")
    prepare.add_argument("out", help="output folder")
    prepare.add_argument("--short-side", type=int, default=128, help="pixels (0: keep the size)")
    prepare.add_argument("--keyframe-interval", type=float, default=1.0, help="seconds")
    prepare.add_argument("--shard-size", type=int, default=None, help="videos per tar shard")
    prepare.add_argument("--crf", type=int, default=18, help="x264 quality (lower: better)")
    prepare.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@typechecked
def main(argv: Sequence[str] | None = None) -> int:
    """Run `mp-layers`; returns the exit status (1 when every video failed)."""
    parser = _parser()
    args = parser.parse_args(argv)
    from mp_layers.video.prepare import prepare_videos  # the [video] extra, imported on use

    prog = f"{parser.prog} {args.command}"
    try:
        summary = prepare_videos(
            args.src,
            args.out,
            short_side=args.short_side or None,
            keyframe_interval=args.keyframe_interval,
            shard_size=args.shard_size,
            crf=args.crf,
            progress=not args.no_progress,
        )
    except ValueError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    print(
        f"{prog}: wrote {len(summary.written)}, kept {len(summary.existing)} already done, "
        f"{len(summary.failed)} failed -> {args.out}"
    )
    nothing = not summary.written and not summary.existing
    return 1 if summary.failed and nothing else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
