"""Helpers for the packages' tests (and users' own): a Hugging Face Hub cache without a network.

- `save_tiny_bert(folder, vocab)`, `save_tiny_t5(folder, sentences)`: tiny random text encoders
  saved as Hugging Face folders (transformers needed), for offline text-encoder tests;
- `populate_hub_cache(cache, repo_id, folder)`: lay `folder` out as `huggingface_hub` caches a
  download of `repo_id` (`models--org--name/snapshots/<commit>/`, `refs/main`), so that
  `from_pretrained(repo_id, cache_dir=cache)` under `HF_HUB_OFFLINE=1` finds it offline.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import Any

from mp_layers.typecheck import typechecked

__all__ = ["populate_hub_cache", "save_tiny_bert", "save_tiny_t5"]

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


@typechecked
def save_tiny_bert(folder: Path, vocab: list[str], *, num_layers: int = 2) -> Path:
    """A tiny random `BertModel` (hidden 32, 2 heads, intermediate 37, 64 positions; seed 0) and
    its lowercase WordPiece tokenizer over `vocab` (special tokens first), saved in `folder`.
    The tokenizer sets no length limit, so the 64 positions are the real one. Needs transformers."""
    import torch

    transformers: Any = importlib.import_module("transformers")

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # Positional: transformers 5 silently ignores `vocab_file=` (an empty vocabulary).
    tokenizer = transformers.BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=True)
    if tokenizer.tokenize("the cat runs") != ["the", "cat", "runs"]:
        raise RuntimeError("tiny BERT tokenizer did not load its vocab.txt")
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@typechecked
def save_tiny_t5(folder: Path, sentences: list[str]) -> Path:
    """A folder laid out like `google/t5-v1_1-base`: a tiny random `T5ForConditionalGeneration`
    (d_model 16, one layer, seed 0) and only a SentencePiece model (`spiece.model`, trained on
    `sentences`) for its tokenizer. Needs transformers, sentencepiece and protobuf."""
    import io
    import json

    import sentencepiece as spm
    import torch

    transformers: Any = importlib.import_module("transformers")

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences * 4),
        model_writer=model_bytes,
        vocab_size=48,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    (folder / "spiece.model").write_bytes(model_bytes.getvalue())
    tokenizer_config = {"tokenizer_class": "T5Tokenizer", "extra_ids": 0}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    config = transformers.T5Config(
        vocab_size=len(tokenizer),
        d_model=16,
        num_layers=1,
        num_heads=2,
        d_kv=8,
        d_ff=32,
        feed_forward_proj="gated-gelu",
        decoder_start_token_id=0,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        transformers.T5ForConditionalGeneration(config).save_pretrained(folder)
    return folder
