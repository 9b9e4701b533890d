"""`run_subcommand`: the entry point of every model package's console script."""

from __future__ import annotations

import pytest

from mp_layers.cli import run_subcommand


def _ok(argv: list[str]) -> None:
    assert argv == ["--x", "1"]


def _missing_extra(argv: list[str]) -> None:
    raise ModuleNotFoundError("No module named 'accelerate'", name="accelerate")


def _bad_input(argv: list[str]) -> None:
    raise ValueError("--data: expected a folder of videos, got /nowhere")


def _missing_file(argv: list[str]) -> None:
    with open("/nowhere/at/all.mp4", "rb"):
        pass


def _bug(argv: list[str]) -> None:
    raise RuntimeError("a bug is a traceback, not a one-line error")


COMMANDS = {
    "ok": _ok,
    "extra": _missing_extra,
    "bad": _bad_input,
    "file": _missing_file,
    "bug": _bug,
}


def test_dispatch_and_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_subcommand("tool", COMMANDS, ["ok", "--x", "1"]) == 0
    assert run_subcommand("tool", COMMANDS, []) == 2
    assert "usage: tool {ok,extra,bad,file,bug}" in capsys.readouterr().out
    assert run_subcommand("tool", COMMANDS, ["nonsense"]) == 2
    assert run_subcommand("tool", COMMANDS, ["--help"]) == 0
    assert "usage: tool" in capsys.readouterr().out


def test_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_subcommand("tool", COMMANDS, ["extra"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "'accelerate', which is not installed" in err
    assert "pip install 'tool[train]'" in err
    assert run_subcommand("tool", COMMANDS, ["bad"]) == 1
    assert capsys.readouterr().err == (
        "tool bad: error: --data: expected a folder of videos, got /nowhere\n"
    )
    assert run_subcommand("tool", COMMANDS, ["file"]) == 1
    assert "/nowhere/at/all.mp4" in capsys.readouterr().err
    with pytest.raises(RuntimeError):
        run_subcommand("tool", COMMANDS, ["bug"])
