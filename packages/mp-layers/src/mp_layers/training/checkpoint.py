"""Checkpoint folders on disk: atomic writes, discovery, pruning, and RNG state capture.

Layout of `<out_dir>/checkpoints/step-000001000/`: `model.safetensors`, `ema.safetensors`,
`post_hoc_ema.safetensors` (when enabled), `optimizer.pt`, `scheduler.pt`, `scaler.pt`, `rng.pt`
(one entry per process) and `state.json` (step, data position, counters, config, and under
`"files"` the SHA-256 and size of every other file, sub-folders included), written last.
A folder is written as `.tmp-step-...` and renamed into place, so a crash leaves either a complete
checkpoint or a temporary folder that is ignored and removed at the next start.

Reading is verified: `verify_checkpoint` checks every recorded digest, `resolve_resume` skips
damaged checkpoints for `resume='latest'`, and the loaders (`load_tensors`,
`load_safetensors_into`, `load_model_weights`) turn unreadable files into a one-line
`CheckpointError` naming the folder, the file and the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mp_layers.training.rng import capture_rng_state as capture_rng_state
from mp_layers.training.rng import restore_rng_state as restore_rng_state
from mp_layers.typecheck import typechecked

STATE_FILE = "state.json"
FILES_KEY = "files"
_NAME = re.compile(r"^step-(\d{9,})$")
_TMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, damaged or unreadable. The message is one line:
    `checkpoint <folder>: <file>: <reason>`; the parts are the attributes `folder` (a `Path`),
    `file` (relative to `folder`, POSIX) and `reason`."""

    def __init__(self, folder: str | os.PathLike[str], file: str, reason: str) -> None:
        self.folder = Path(folder)
        self.file = str(file)
        self.reason = " ".join(str(reason).split())  # one line, whatever the cause said
        super().__init__(f"checkpoint {self.folder}: {self.file}: {self.reason}")

    def __reduce__(self) -> tuple[type[CheckpointError], tuple[Path, str, str]]:
        return type(self), (self.folder, self.file, self.reason)


def _describe(error: BaseException) -> str:
    """The informative first sentence of a loader's (often multi-line) error message."""
    text = _ANSI.sub("", str(error))
    marker = "WeightsUnpickler error:"  # torch's weights_only refusal buries the cause here
    if marker in text:
        text = text.split(marker, 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(error).__name__
    for stop in (". Please use", ". This is an internal", ". If you"):
        first = first.split(stop, 1)[0]
    return first.rstrip(".")


@typechecked
def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@typechecked
def record_files(folder: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """`{relative POSIX path: {"sha256": hex, "bytes": size}}` of every file under `folder`
    (sub-folders included, the top-level `state.json` excluded), sorted by path."""
    folder = Path(folder)
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_file() and name != STATE_FILE:
            files[name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    return files


@typechecked
def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint taken after optimizer step `step`."""
    return f"step-{step:09d}"


@typechecked
def list_checkpoints(root: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints under `root` (those with a `state.json`), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


@typechecked
def latest_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint under `root`, or `None`."""
    checkpoints = list_checkpoints(root)
    return checkpoints[-1] if checkpoints else None


@typechecked
def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder meant by `path`: `path` itself when it holds weights
    (`model.safetensors` or `ema.safetensors`: a checkpoint or an exported model), else the
    newest complete checkpoint of the run folder `path` (under `path/checkpoints`)."""
    path = Path(path)
    if (path / "model.safetensors").is_file() or (path / "ema.safetensors").is_file():
        return path
    latest = latest_checkpoint(path / "checkpoints")
    if latest is None:
        raise ValueError(
            "checkpoint: expected a folder with model.safetensors or ema.safetensors, or a run "
            f"folder with checkpoints/, got {path}"
        )
    return latest


@typechecked
def find_run_config(path: str | os.PathLike[str], name: str) -> tuple[Path, dict[str, Any]]:
    """The JSON file `name` of a run, read from `path` or up to two folders above it (a run
    folder, a checkpoint folder in its `checkpoints/`, or an export beside them). Returns the
    folder holding it and its contents; `ValueError` when there is none."""
    path = Path(path)
    for folder in (path, path.parent, path.parent.parent):
        file = folder / name
        if file.is_file():
            config: dict[str, Any] = json.loads(file.read_text())
            return folder, config
    raise ValueError(
        f"checkpoint: expected a run, checkpoint or model folder with {name} in or above it, "
        f"got {path}"
    )


@typechecked
def remove_stale_temporaries(root: str | os.PathLike[str]) -> int:
    """Delete temporary folders a crashed writer left under `root`; return how many."""
    root = Path(root)
    if not root.is_dir():
        return 0
    stale = [p for p in root.iterdir() if p.name.startswith(_TMP_PREFIX)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


@typechecked
def write_checkpoint(
    root: str | os.PathLike[str],
    *,
    step: int,
    write: Callable[[Path], None],
    state: dict[str, Any],
    keep_last: int,
) -> Path:
    """Atomically create `root/step-XXXXXXXXX`: `write(tmp)` fills a temporary folder, then
    `state` plus `"files"` (`record_files` of what `write` wrote: the SHA-256 and size of every
    file, sub-folders included; a key of `state` with that name is replaced) goes to its
    `state.json` and the folder is renamed into place. Older checkpoints beyond the newest
    `keep_last` are deleted afterwards."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f"{_TMP_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    write(tmp)
    state = {**state, FILES_KEY: record_files(tmp)}
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))
    if final.exists():  # the same step written again (a resumed run re-reaching it): swap it out
        old = root / f"{_TMP_PREFIX}old-{final.name}-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    for path in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
    return final


@typechecked
def read_state(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """The `state.json` of a checkpoint folder (not verified: see `verify_checkpoint`).
    `CheckpointError` naming `state.json` when it is missing, unreadable or not a JSON object."""
    folder = Path(checkpoint)
    path = folder / STATE_FILE
    if not path.is_file():
        raise CheckpointError(folder, STATE_FILE, "missing (expected a checkpoint folder)")
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(folder, STATE_FILE, f"not valid JSON: {_describe(error)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(
            folder, STATE_FILE, f"expected a JSON object, got {type(state).__name__}"
        )
    return state


def _recorded_files(folder: Path, state: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The checked `"files"` entry of a checkpoint's state; `None` for a checkpoint written before
    digests were recorded."""
    files = state.get(FILES_KEY)
    if files is None:
        return None
    if not isinstance(files, dict):
        raise CheckpointError(folder, STATE_FILE, f"'{FILES_KEY}': expected an object")
    for name, entry in files.items():
        parts = Path(name).parts
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("bytes"), int)
            and bool(parts)
            and not Path(name).is_absolute()
            and ".." not in parts
        )
        if not ok:
            raise CheckpointError(
                folder,
                STATE_FILE,
                f"'{FILES_KEY}': expected relative paths mapped to {{sha256, bytes}}, got {name!r}",
            )
    return files


def _check_file(folder: Path, name: str, entry: dict[str, Any]) -> None:
    path = folder / name
    if not path.is_file():
        raise CheckpointError(folder, name, "missing")
    size = path.stat().st_size
    if size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
        raise CheckpointError(
            folder,
            name,
            f"SHA-256 mismatch (file changed or truncated: {size} bytes, expected {entry['bytes']})",
        )


@typechecked
def verify_checkpoint(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """Check that every file recorded in a checkpoint's `state.json` exists and has its recorded
    size and SHA-256; return the state. Raises `CheckpointError` naming the first bad file (or
    `state.json` when it is unreadable). A checkpoint written before digests were recorded (no
    `"files"` in its state) is accepted unchecked; its files are still read through the guarded
    loaders, which refuse damaged ones."""
    folder = Path(checkpoint)
    state = read_state(folder)
    for name, entry in (_recorded_files(folder, state) or {}).items():
        _check_file(folder, name, entry)
    return state


def _verify_one(folder: Path, name: str) -> None:
    """Check file `name` of `folder` against its recorded digest, if `folder` is a checkpoint
    that recorded one (an exported model folder without `state.json` is not checked)."""
    if (folder / STATE_FILE).is_file():
        entry = (_recorded_files(folder, read_state(folder)) or {}).get(name)
        if entry is not None:
            _check_file(folder, name, entry)


@typechecked
def resolve_resume(
    checkpoint_dir: str | os.PathLike[str],
    resume: str | os.PathLike[str] | None,
    *,
    warn: Callable[[str], Any] = print,
) -> Path | None:
    """The verified checkpoint a run in `checkpoint_dir` resumes from (`None`: start fresh).

    - `resume=None`: a fresh run; `ValueError` if `checkpoint_dir` already holds checkpoints (so a
      forgotten `--resume` never overwrites a run).
    - `'latest'`: the newest checkpoint that passes `verify_checkpoint`. Each newer one that fails
      is skipped with a one-line `warn("warning: skipping checkpoint <folder>: <file>: <reason>")`.
      No checkpoint at all: `warn("resume: no checkpoint in <dir>: starting fresh")` and `None`.
      Checkpoints exist but none is valid: `CheckpointError` (of the newest) rather than silently
      training from scratch over a damaged run; delete them or use another out_dir to start over.
    - a path: that checkpoint folder (`ValueError` unless it holds `state.json`), verified;
      `CheckpointError` when it fails.

    `warn` prints the messages; pass one that prints on the main process only (e.g.
    `accelerator.print`).
    """
    root = Path(checkpoint_dir)
    if resume is None:
        if list_checkpoints(root):
            raise ValueError(
                f"resume: {root} already holds checkpoints; expected "
                "resume='latest' (or a checkpoint path) or an empty out_dir, got None"
            )
        return None
    if str(resume) == "latest":
        candidates = list_checkpoints(root)
        if not candidates:
            warn(f"resume: no checkpoint in {root}: starting fresh")
            return None
        failures: list[CheckpointError] = []
        for folder in reversed(candidates):
            try:
                verify_checkpoint(folder)
            except CheckpointError as error:
                warn(f"warning: skipping {error}")
                failures.append(error)
            else:
                return folder
        newest = failures[0]
        raise CheckpointError(
            newest.folder,
            newest.file,
            f"{newest.reason}; none of the {len(candidates)} checkpoints in {root} is valid, "
            "refusing to start fresh over them (delete them or use another out_dir)",
        )
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise ValueError(f"resume: expected 'latest' or a checkpoint folder, got {resume}")
    verify_checkpoint(path)
    return path


@typechecked
def load_tensors(path: str | os.PathLike[str]) -> Any:
    """`torch.load` restricted to tensors and plain containers (`weights_only=True`), on the CPU.
    `CheckpointError` naming the file when it is missing, not a torch file (truncated) or holds
    anything else (e.g. a pickled class instance)."""
    path = Path(path)
    folder, name = path.parent, path.name
    if not path.is_file():
        raise CheckpointError(folder, name, "missing")
    try:
        with warnings.catch_warnings():  # the refusal below says it better than this warning
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            folder, name, f"cannot be read with weights_only=True: {_describe(error)}"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise CheckpointError(
            folder, name, f"not a readable torch file ({type(error).__name__}: {_describe(error)})"
        ) from None


def _load_safetensors_file(path: Path) -> dict[str, torch.Tensor]:
    """`safetensors.torch.load_file` on the CPU; `CheckpointError` when missing or damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(path.parent, path.name, "missing")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            path.parent, path.name, f"not valid safetensors: {_describe(error)}"
        ) from None


def _mismatch(missing: Any, unexpected: Any) -> str:
    return (
        f"weights do not match the model (missing {sorted(missing)[:5]}, "
        f"unexpected {sorted(unexpected)[:5]})"
    )


@typechecked
def load_safetensors_into(
    module: torch.nn.Module,
    file: str | os.PathLike[str],
    device: str | torch.device | None = None,
) -> torch.nn.Module:
    """`safetensors.torch.load_model(module, file, device=device)` (strict; tied duplicates are
    handled by safetensors) with its failures as `CheckpointError` naming `file`: missing, not
    valid safetensors (truncated, garbled), or keys or shapes that do not match `module`.
    `device`: where the tensors are read to first (default the CPU). Returns `module`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    path = Path(file)
    if not path.is_file():
        raise CheckpointError(path.parent, path.name, "missing")
    # safetensors takes "cpu" but not the "cpu:0" Accelerate reports on multi-process CPU runs.
    target = torch.device("cpu" if device is None else device)
    where = "cpu" if target.type == "cpu" else str(target)
    try:
        missing, unexpected = load_model(module, path, strict=False, device=where)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            path.parent, path.name, f"not valid safetensors: {_describe(error)}"
        ) from None
    except RuntimeError as error:  # load_state_dict: shapes differ
        details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        raise CheckpointError(
            path.parent,
            path.name,
            f"weights do not match the model ({details[0] if details else _describe(error)})",
        ) from None
    if missing or unexpected:
        raise CheckpointError(path.parent, path.name, _mismatch(missing, unexpected))
    return module


@typechecked
def load_model_weights(
    model: torch.nn.Module, checkpoint: str | os.PathLike[str], *, ema: bool = True,
    allow_missing: tuple[str, ...] = (),
) -> torch.nn.Module:  # fmt: skip
    """Load a checkpoint's EMA weights (`ema=True`, falling back to the raw weights when the run
    had no EMA) or raw weights into a bare `model`, e.g. for sampling. Returns `model`. Layers
    named by the prefixes `allow_missing` may be absent (added since; they keep their values).

    When `checkpoint` has a `state.json` recording digests, the file read is verified first.
    `CheckpointError` (naming the file) when it is missing, damaged or does not match `model`."""
    folder = Path(checkpoint)
    ema_file, model_file = folder / "ema.safetensors", folder / "model.safetensors"
    if ema and ema_file.is_file():
        file, prefix = ema_file, "ema_model."
    elif model_file.is_file():
        file, prefix = model_file, ""
    else:
        raise CheckpointError(
            folder, model_file.name, "missing (expected model.safetensors or ema.safetensors)"
        )
    _verify_one(folder, file.name)
    stored = _load_safetensors_file(file)
    tensors = {k[len(prefix) :]: v for k, v in stored.items() if k.startswith(prefix)}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    # safetensors drops tied duplicates; strict=False tolerates exactly those, so check the rest.
    try:
        missing, unexpected = model.load_state_dict(
            {k: v.to(device) for k, v in tensors.items()}, strict=False
        )
    except RuntimeError as error:  # shapes differ
        details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        reason = details[0] if details else _describe(error)
        raise CheckpointError(
            folder, file.name, f"weights do not match the model ({reason})"
        ) from None
    missing = [k for k in missing if not (allow_missing and k.startswith(allow_missing))]
    if unexpected or any(k not in _tied_names(model) for k in missing):
        raise CheckpointError(folder, file.name, _mismatch(missing, unexpected))
    return model


def _tied_names(model: torch.nn.Module) -> set[str]:
    """Names of state-dict entries that share storage with another entry."""
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    return {name for names in groups.values() if len(names) > 1 for name in names}
