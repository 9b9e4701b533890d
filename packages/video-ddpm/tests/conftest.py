"""Shared fixtures for the video-ddpm tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mp_layers.testing import save_tiny_bert

# ~100 wordpieces: specials, letters (and their continuations, so any lowercase ASCII word
# tokenizes), punctuation and a few caption words.
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
_WORDS = [
    "the", "cat", "dog", "runs", "jumps", "red", "blue", "ball", "on", "in", "grass", "snow",
    "video", "of", "fast", "slow", "bird", "flies", "sky", "sea", "car", "road", "man", "walks",
]  # fmt: skip
TINY_BERT_VOCAB = _SPECIALS + _LETTERS + [f"##{c}" for c in _LETTERS] + [".", ",", "!"] + _WORDS


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a tiny random ``BertModel`` and its tokenizer, saved with save_pretrained.

    hidden 32, 2 layers, 2 heads, intermediate 37, max_position_embeddings 64, a ~100-wordpiece
    lowercase vocab. The tokenizer's ``model_max_length`` is left unset (huge), so the model's 64
    positions are the real limit. Load it with ``transformers.AutoModel``/``AutoTokenizer`` or
    ``video_ddpm.text.TextEncoder(path)``; fully offline.
    """
    pytest.importorskip("transformers")
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), list(TINY_BERT_VOCAB))
