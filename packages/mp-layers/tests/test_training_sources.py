"""`model_source`: what a `sample --checkpoint` names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("accelerate")

from mp_layers.training import model_source


def test_runs_checkpoints_pretrained_folders_and_hub_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000000002"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"")
    (checkpoint / "state.json").write_text(json.dumps({"step": 2, "files": {}}))
    assert model_source(checkpoint) == ("run", checkpoint)
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "config.json").write_text(json.dumps({"_class_name": "EDM2Diffusion"}))
    assert model_source(saved) == ("pretrained", saved)

    asked: list[str] = []

    def snapshot_download(*, repo_id: str, **kwargs: object) -> str:
        asked.append(repo_id)
        return str(saved)

    monkeypatch.setattr("mp_layers.hub.snapshot_download", snapshot_download)
    assert model_source("someone/video-model") == ("pretrained", saved)
    assert asked == ["someone/video-model"]
    with pytest.raises(ValueError, match="or a Hub repo id"):
        model_source(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"expected a folder with model\.safetensors"):
        model_source(tmp_path)
