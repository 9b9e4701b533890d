"""Helpers for the packages' tests (and users' own): a Hugging Face Hub cache without a network.

- `populate_hub_cache(cache, repo_id, folder)`: lay `folder` out as `huggingface_hub` caches a
  download of `repo_id` (`models--org--name/snapshots/<commit>/`, `refs/main`), so that
  `from_pretrained(repo_id, cache_dir=cache)` under `HF_HUB_OFFLINE=1` finds it offline.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mp_layers.typecheck import typechecked

__all__ = ["populate_hub_cache"]

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@typechecked
def populate_hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """Copy `folder` into `cache` as the snapshot of `repo_id`'s `main`; returns the snapshot."""
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / FAKE_COMMIT
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    return snapshot
