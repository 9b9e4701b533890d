"""mp_layers.text: the text-encoder loading helpers, without needing transformers installed."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from mp_layers.text import (
    from_pretrained,
    import_transformers,
    looks_like_path,
    resolve_max_length,
    target_device,
)


def test_looks_like_path() -> None:
    for name in ("bert-base-cased", "google/t5-v1_1-base"):
        assert not looks_like_path(name)
    for name in ("/models/t5", "./t5", "../t5", "~/t5", "a/b/c", "models\\t5"):
        assert looks_like_path(name)


def test_target_device() -> None:
    assert target_device(None) == torch.device("cpu")
    assert target_device("cpu") == torch.device("cpu")


def test_resolve_max_length() -> None:
    tokenizer = types.SimpleNamespace(model_max_length=int(1e30))
    config = types.SimpleNamespace(max_position_embeddings=64)
    assert resolve_max_length(None, tokenizer, config) == 64
    assert resolve_max_length(8, tokenizer, config) == 8
    assert resolve_max_length(None, types.SimpleNamespace(model_max_length=16), config) == 16
    assert resolve_max_length(None, None, None) is None
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        resolve_max_length(65, tokenizer, config)


def test_missing_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install \"pkg\[text\]\""):
        import_transformers("pkg[text]")


@pytest.fixture
def fake_transformers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """A stand-in `transformers` whose AutoConfig records its calls and fails for "missing"."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def load(source: str, **kwargs: Any) -> str:
        calls.append((source, kwargs))
        if "missing" in source:
            raise OSError("not in the cache")
        return "config"

    auto_config = types.SimpleNamespace(from_pretrained=load)
    monkeypatch.setitem(sys.modules, "transformers", types.SimpleNamespace(AutoConfig=auto_config))
    return calls


def test_from_pretrained_local_folders_stay_offline(
    fake_transformers: list[tuple[str, dict[str, Any]]], tmp_path: Path
) -> None:
    kwargs = {"extra": "pkg[text]", "remedy": "download it"}
    assert from_pretrained("AutoConfig", str(tmp_path), is_path=True, **kwargs) == "config"
    assert from_pretrained("AutoConfig", "org/name", is_path=False, **kwargs) == "config"
    from_pretrained("AutoConfig", "org/name", is_path=False, local_files_only=True, **kwargs)
    assert fake_transformers == [
        (str(tmp_path), {"local_files_only": True}),
        ("org/name", {}),
        ("org/name", {"local_files_only": True}),
    ]
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        from_pretrained("AutoConfig", str(tmp_path / "no-such-folder"), is_path=True, **kwargs)
    assert len(fake_transformers) == 3  # a missing folder never reaches transformers


def test_from_pretrained_failure_is_one_chained_sentence(
    fake_transformers: list[tuple[str, dict[str, Any]]],
) -> None:
    with pytest.raises(OSError, match=r"'org/missing' \(AutoConfig\).*offline.*download it") as e:
        from_pretrained(
            "AutoConfig", "org/missing", is_path=False, extra="pkg[text]", remedy="download it"
        )
    assert "(cause: not in the cache)" in str(e.value)
    assert isinstance(e.value.__cause__, OSError)
