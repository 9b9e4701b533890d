"""Phenaki's folders beyond `mp_layers.hub`: the tokenizer a model was trained on, and 0.1.0's layout.

A `Phenaki` folder (`save_pretrained`) holds its parts as subfolders (`maskgit/`, `cvivit/`,
`critic/`, each a `config.json` + `model.safetensors`); its `config.json` may also record where
the tokenizer came from, `"tokenizer_source": {"folder": ..., "sha256": ...}` (the SHA-256 of that
folder's `model.safetensors`), so that a tokenizer given by folder at load time
(`from_pretrained(..., tokenizer=DIR)`) is checked to be the one the model was trained on.

phenaki 0.1.0 wrote a different folder: `{"format": "phenaki.Phenaki", "version": 1, "phenaki":
..., "maskgit": ..., "critic": ..., "tokenizer": {"folder": ..., "sha256": ...}}` and one
`model.safetensors` with MaskGit's and the critic's weights; the tokenizer stayed in its own
folder, referenced by path and hash. `load_v010` reads it (`Phenaki._hub_load_legacy`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from mp_layers.hub import CONFIG_NAME, WEIGHTS_NAME
from mp_layers.pretrained import load_state_checked
from phenaki.cvivit import CViViT
from phenaki.maskgit import MaskGit
from phenaki.token_critic import TokenCritic

__all__ = [
    "CONFIG_NAME",
    "FORMAT",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "checked_tokenizer",
    "file_sha256",
    "load_v010",
    "recorded_tokenizer",
    "tokenizer_digest",
]

FORMAT = "phenaki.Phenaki"  # the config.json of phenaki 0.1.0 (still read)
FORMAT_VERSION = 1


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_digest(folder: Path) -> str:
    """The SHA-256 of a tokenizer folder's weights (`ValueError` when it has none)."""
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"tokenizer: expected {weights} to exist, got a folder without it")
    return file_sha256(weights)


def checked_tokenizer(folder: Path, sha256: str | None, config_path: Path) -> CViViT:
    """The tokenizer saved in `folder` (without GAN), after checking that its weights have the
    SHA-256 recorded in `config_path` (when one is recorded)."""
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"tokenizer: expected {weights} to exist (recorded in {config_path})")
    digest = file_sha256(weights)
    if sha256 is not None and digest != sha256:
        raise ValueError(
            f"tokenizer {weights}: expected SHA-256 {sha256} (recorded in {config_path}), got "
            f"{digest}: not the tokenizer this model was trained on"
        )
    return CViViT.from_pretrained(folder, use_vgg_and_gan=False)


def recorded_tokenizer(config: dict[str, Any]) -> dict[str, str] | None:
    """The tokenizer's `{"folder", "sha256"}` a folder's `config.json` records (0.1.0 or now)."""
    source = config.get("tokenizer") if config.get("format") == FORMAT else None
    source = config.get("tokenizer_source") if source is None else source
    if source is None:
        return None
    if not isinstance(source, dict) or not {"folder", "sha256"} <= source.keys():
        raise ValueError(f"expected the tokenizer's folder and sha256 in config.json, got {source}")
    return {"folder": str(source["folder"]), "sha256": str(source["sha256"])}


def load_v010(cls: Any, folder: Path, config: dict[str, Any], kwargs: dict[str, Any]) -> Any:
    """A `cls` (Phenaki) from a folder written by phenaki 0.1.0, or None for another format.

    The tokenizer is `kwargs["cvivit"]` when given (`from_pretrained(tokenizer=DIR)` checked it
    already), else the recorded folder's, whose weights must have the recorded SHA-256; the other
    `kwargs` (`text_encoder`, Phenaki's arguments) override the saved ones."""
    if config.get("format") != FORMAT:
        return None
    from safetensors.torch import load_file

    config_path = folder / CONFIG_NAME
    sections = ("phenaki", "maskgit", "critic", "tokenizer")
    if config.get("version") != FORMAT_VERSION or not all(k in config for k in sections):
        raise ValueError(f"{config_path}: expected format {FORMAT!r} version {FORMAT_VERSION}")
    given = dict(kwargs)
    cvivit = given.pop("cvivit", None)
    if cvivit is None:
        source = config["tokenizer"]
        cvivit = checked_tokenizer(Path(source["folder"]), source["sha256"], config_path)
    critic = TokenCritic(**config["critic"]) if config["critic"] is not None else None
    arguments = {"maskgit": MaskGit(**config["maskgit"]), "critic": critic, **config["phenaki"]}
    model = cls(**{**arguments, **given, "cvivit": cvivit})
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"{folder}: expected a Phenaki folder with {WEIGHTS_NAME}")
    load_state_checked(model, load_file(weights, device="cpu"), str(weights))
    return model
