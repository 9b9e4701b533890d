"""Shared fixtures for the video-ddpm tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(TINY_BERT_VOCAB) + "\n", encoding="utf-8")
    # Positional: transformers 4 names it `vocab_file`, 5 names it `vocab` (and silently ignores
    # `vocab_file=`, leaving an empty vocabulary).
    tokenizer = transformers.BertTokenizerFast(str(vocab), do_lower_case=True)
    if tokenizer.tokenize("the cat runs") != ["the", "cat", "runs"]:
        raise RuntimeError("tiny BERT tokenizer did not load its vocab.txt")
    config = transformers.BertConfig(
        vocab_size=len(TINY_BERT_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
