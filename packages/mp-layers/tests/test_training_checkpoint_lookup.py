"""`resolve_checkpoint` and `find_run_config`: what a `sample --checkpoint PATH` flag may name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("mp_layers.training")

from mp_layers.training import find_run_config, resolve_checkpoint


def _checkpoint(run: Path, step: int) -> Path:
    folder = run / "checkpoints" / f"step-{step:09d}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "state.json").write_text("{}")
    return folder


def test_resolve_checkpoint_takes_a_weights_folder_or_the_newest_of_a_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _checkpoint(run, 5)
    newest = _checkpoint(run, 12)
    assert resolve_checkpoint(run) == newest
    first = run / "checkpoints" / "step-000000005"
    assert resolve_checkpoint(first) == first
    export = tmp_path / "export"
    export.mkdir()
    (export / "ema.safetensors").write_bytes(b"")
    assert resolve_checkpoint(str(export)) == export
    with pytest.raises(ValueError, match=r"expected a folder with model.safetensors .* got"):
        resolve_checkpoint(tmp_path / "empty")


def test_find_run_config_looks_in_the_folder_and_two_above(tmp_path: Path) -> None:
    run = tmp_path / "run"
    checkpoint = _checkpoint(run, 3)
    (run / "cfg.json").write_text(json.dumps({"a": 1}))
    assert find_run_config(run, "cfg.json") == (run, {"a": 1})
    assert find_run_config(checkpoint, "cfg.json") == (run, {"a": 1})
    with pytest.raises(ValueError, match=r"with other\.json in or above it"):
        find_run_config(checkpoint, "other.json")
