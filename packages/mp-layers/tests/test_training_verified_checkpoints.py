"""Verified checkpoints: SHA-256 digests in `state.json`, guarded loads, and what `resume` does with
a damaged checkpoint."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("accelerate")

from mp_layers.training.checkpoint import (
    CheckpointError,
    load_model_weights,
    load_safetensors_into,
    load_tensors,
    record_files,
    resolve_resume,
    verify_checkpoint,
    write_checkpoint,
)

from .conftest import load_training_worker

SETTINGS: dict[str, Any] = {"optimizer": "adam", "noise": 0.1}


@pytest.fixture(scope="module")
def worker() -> ModuleType:
    return load_training_worker()


class Payload:
    """Unpickled by plain `pickle`, it creates `marker`: what `weights_only=True` must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.marker), "w")


def _state(folder: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((folder / "state.json").read_text())
    return state


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    (folder / "state.json").write_text(json.dumps(state))


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _rerecord(folder: Path, name: str) -> None:
    """Record `name`'s current digest, as a writer that replaced it on purpose would."""
    state = _state(folder)
    data = (folder / name).read_bytes()
    state["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    _write_state(folder, state)


def _fake_checkpoint(root: Path, step: int) -> Path:
    """A checkpoint with two small files, one in a sub-folder (as FSDP shards are)."""

    def write(folder: Path) -> None:
        (folder / "weights.bin").write_bytes(bytes(range(256)) * 4)
        (folder / "model").mkdir()
        (folder / "model" / "__0_0.distcp").write_bytes(b"shard" * 100)

    return write_checkpoint(root, step=step, write=write, state={"step": step}, keep_last=10)


def test_state_records_the_digest_of_every_file(worker: ModuleType, tmp_path: Path) -> None:
    _, result = worker.run(out=tmp_path, steps=2, **SETTINGS)
    folder = result.checkpoint
    files = _state(folder)["files"]
    on_disk = sorted(p.name for p in folder.iterdir() if p.name != "state.json")
    assert sorted(files) == on_disk == ["model.safetensors", "optimizer.pt", "rng.pt"]
    for name, entry in files.items():
        data = (folder / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert verify_checkpoint(folder)["step"] == 2

    fake = _fake_checkpoint(tmp_path / "fake", 3)
    assert sorted(_state(fake)["files"]) == ["model/__0_0.distcp", "weights.bin"]
    assert _state(fake)["files"] == record_files(fake)
    (fake / "model" / "__0_0.distcp").write_bytes(b"shard" * 99 + b"shaRd")  # same size
    with pytest.raises(CheckpointError, match=r"model/__0_0\.distcp: SHA-256 mismatch"):
        verify_checkpoint(fake)
    (fake / "model" / "__0_0.distcp").unlink()
    with pytest.raises(CheckpointError, match=r"model/__0_0\.distcp: missing$"):
        verify_checkpoint(fake)


def test_latest_skips_a_truncated_checkpoint_and_resumes_exactly(
    worker: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, full = worker.run(out=tmp_path, steps=12, save_every=4, **SETTINGS)
    checkpoints = tmp_path / "checkpoints"
    bad = checkpoints / "step-000000012" / "model.safetensors"
    size = bad.stat().st_size
    _truncate(bad)
    capsys.readouterr()
    _, resumed = worker.run(out=tmp_path, steps=12, save_every=4, resume="latest", **SETTINGS)
    assert resumed.resumed_from == checkpoints / "step-000000008"
    assert resumed.losses == pytest.approx(full.losses[8:], abs=1e-6, rel=0)
    assert capsys.readouterr().out.splitlines() == [
        f"warning: skipping checkpoint {checkpoints / 'step-000000012'}: model.safetensors: "
        f"SHA-256 mismatch (file changed or truncated: {size // 2} bytes, expected {size})"
    ]
    verify_checkpoint(checkpoints / "step-000000012")  # written again, whole


def test_explicit_path_to_a_damaged_checkpoint_is_refused(
    worker: ModuleType, tmp_path: Path
) -> None:
    _, result = worker.run(out=tmp_path, steps=2, **SETTINGS)
    folder = result.checkpoint
    _truncate(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"SHA-256 mismatch") as caught:
        worker.run(out=tmp_path, steps=4, resume=str(folder), **SETTINGS)
    assert (caught.value.folder, caught.value.file) == (folder, "model.safetensors")
    assert str(caught.value).startswith(f"checkpoint {folder}: model.safetensors: SHA-256")
    assert "\n" not in str(caught.value)
    assert pickle.loads(pickle.dumps(caught.value)).args == caught.value.args  # broadcastable
    (folder / "rng.pt").unlink()
    _rerecord(folder, "model.safetensors")
    with pytest.raises(CheckpointError, match=r": rng\.pt: missing$"):
        worker.run(out=tmp_path, steps=4, resume=str(folder), **SETTINGS)


def test_tampered_optimizer_state_is_refused_by_weights_only(
    worker: ModuleType, tmp_path: Path
) -> None:
    _, result = worker.run(out=tmp_path, steps=2, **SETTINGS)
    folder = result.checkpoint
    marker = tmp_path / "code-ran"
    (folder / "optimizer.pt").write_bytes(pickle.dumps(Payload(marker), protocol=2))
    _rerecord(folder, "optimizer.pt")  # the digest matches: only the guarded load can refuse it
    for resume in ("latest", str(folder)):
        with pytest.raises(CheckpointError, match=r"weights_only=True: Unsupported global") as e:
            worker.run(out=tmp_path, steps=4, resume=resume, **SETTINGS)
        assert e.value.file == "optimizer.pt"
        assert "\n" not in str(e.value)
    assert not marker.exists()


def test_checkpoint_without_digests_still_resumes(worker: ModuleType, tmp_path: Path) -> None:
    _, full = worker.run(out=tmp_path / "full", steps=6, **SETTINGS)
    _, first = worker.run(out=tmp_path / "old", steps=4, **SETTINGS)
    folder = first.checkpoint
    state = _state(folder)
    del state["files"]  # as written before digests were recorded
    _write_state(folder, state)
    assert verify_checkpoint(folder) == state
    _, resumed = worker.run(out=tmp_path / "old", steps=6, resume="latest", **SETTINGS)
    assert resumed.resumed_from == folder
    assert resumed.losses == pytest.approx(full.losses[4:], abs=1e-6, rel=0)
    # Unverified, its loads are still guarded: a truncated file is named, not a Rust traceback.
    newest = resumed.checkpoint
    state = _state(newest)
    del state["files"]
    _write_state(newest, state)
    _truncate(newest / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not valid safetensors: "):
        worker.run(out=tmp_path / "old", steps=8, resume="latest", **SETTINGS)


def test_latest_in_an_empty_folder_starts_fresh(
    worker: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, result = worker.run(out=tmp_path, steps=2, resume="latest", **SETTINGS)
    assert result.resumed_from is None
    assert result.step == 2
    out = capsys.readouterr().out
    assert f"resume: no checkpoint in {tmp_path / 'checkpoints'}: starting fresh" in out


def test_resolve_resume_semantics(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    messages: list[str] = []
    assert resolve_resume(root, "latest", warn=messages.append) is None
    assert messages == [f"resume: no checkpoint in {root}: starting fresh"]
    assert resolve_resume(root, None) is None
    older, newer = _fake_checkpoint(root, 1), _fake_checkpoint(root, 2)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        resolve_resume(root, None)
    assert resolve_resume(root, "latest", warn=messages.append) == newer
    assert resolve_resume(root, older) == older
    with pytest.raises(ValueError, match="expected 'latest' or a checkpoint folder"):
        resolve_resume(root, tmp_path)

    (newer / "state.json").write_text("{not json")
    messages.clear()
    assert resolve_resume(root, "latest", warn=messages.append) == older
    assert messages == [
        f"warning: skipping checkpoint {newer}: state.json: not valid JSON: "
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    ]
    (older / "weights.bin").write_bytes(b"")
    messages.clear()
    # Checkpoints exist but none is valid: refuse rather than silently train from scratch.
    with pytest.raises(CheckpointError, match=r"none of the 2 checkpoints .* is valid") as caught:
        resolve_resume(root, "latest", warn=messages.append)
    assert caught.value.folder == newer
    assert [m.split(": ")[2] for m in messages] == ["state.json", "weights.bin"]
    with pytest.raises(CheckpointError, match=r"weights\.bin: SHA-256 mismatch .*0 bytes"):
        resolve_resume(root, older)


def test_guarded_loaders(tmp_path: Path) -> None:
    tensors = tmp_path / "tensors.pt"
    torch.save({"a": torch.ones(3)}, tensors)
    assert torch.equal(load_tensors(tensors)["a"], torch.ones(3))
    _truncate(tensors)
    with pytest.raises(CheckpointError, match=r"tensors\.pt: not a readable torch file "):
        load_tensors(tensors)
    with pytest.raises(CheckpointError, match=r"absent\.pt: missing"):
        load_tensors(tmp_path / "absent.pt")

    from safetensors.torch import save_model

    model = nn.Linear(4, 3)
    weights = tmp_path / "w.safetensors"
    save_model(model, str(weights))
    copy = nn.Linear(4, 3)
    load_safetensors_into(copy, weights)
    assert torch.equal(copy.weight, model.weight)
    with pytest.raises(CheckpointError, match=r"weights do not match the model \(size mismatch"):
        load_safetensors_into(nn.Linear(4, 2), weights)
    with pytest.raises(CheckpointError, match=r"missing \['0\.bias', '0\.weight'\], unexpected"):
        load_safetensors_into(nn.Sequential(nn.Linear(4, 3)), weights)
    _truncate(weights)
    with pytest.raises(CheckpointError, match=r"w\.safetensors: not valid safetensors: "):
        load_safetensors_into(copy, weights)


def test_load_model_weights_verifies_and_guards(worker: ModuleType, tmp_path: Path) -> None:
    _, result = worker.run(out=tmp_path, steps=2, **SETTINGS)
    folder = result.checkpoint
    load_model_weights(worker.make_model(), folder)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: weights do not match"):
        load_model_weights(nn.Sequential(nn.Linear(4, 16)), folder)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # still valid safetensors, but not what was written
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: SHA-256 mismatch"):
        load_model_weights(worker.make_model(), folder)
    (folder / "state.json").unlink()  # an exported folder: nothing to verify against, still read
    load_model_weights(worker.make_model(), folder)
    _truncate(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not valid safetensors"):
        load_model_weights(worker.make_model(), folder)
