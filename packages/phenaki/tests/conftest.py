"""Tiny C-ViViT configurations and a stand-in perceptual network (nothing is downloaded)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

TINY: dict[str, Any] = {
    "dim": 32,
    "codebook_size": 64,
    "image_size": 16,
    "patch_size": 4,
    "temporal_patch_size": 2,
    "spatial_depth": 1,
    "temporal_depth": 1,
    "dim_head": 8,
    "heads": 2,
    "discr_base_dim": 4,
    "discr_attn_res_layers": (8,),
}


class TinyFeatures(nn.Module):
    """A small conv network standing in for VGG16 (any module mapping images to features)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_features() -> nn.Module:
    return TinyFeatures()


# Every lowercase letter appears, so any lowercase ASCII caption tokenizes without <unk>.
_SENTENCES = [
    "a cat runs on the grass",
    "the red ball jumps on the snow",
    "a blue bird flies in the sky over the sea",
    "a man walks on the road with a dog",
    "the quick brown fox jumps over the lazy dog",
    "video of a car moving fast, then slow!",
]


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like ``google/t5-v1_1-base`` on the hub: a tiny random
    ``T5ForConditionalGeneration`` (d_model 16, one layer) and only a SentencePiece model
    (``spiece.model``, trained here on a few sentences) for the tokenizer; fully offline."""
    spm = pytest.importorskip("sentencepiece")
    pytest.importorskip("google.protobuf")  # transformers 5 parses spiece.model with protobuf
    folder = tmp_path_factory.mktemp("tiny-t5")
    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_SENTENCES * 4),
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
    tokenizer = _transformers().AutoTokenizer.from_pretrained(folder, local_files_only=True)
    config = _transformers().T5Config(
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
        _transformers().T5ForConditionalGeneration(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random ``BertModel`` (hidden 32, 64 positions) and its tokenizer in a folder."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    words = sorted({w.strip(",!") for s in _SENTENCES for w in s.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # Positional: transformers 5 silently ignores `vocab_file=` (an empty vocabulary).
    tokenizer = _transformers().BertTokenizerFast(str(folder / "vocab.txt"), do_lower_case=True)
    assert tokenizer.tokenize("the cat runs") == ["the", "cat", "runs"]
    config = _transformers().BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        _transformers().BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _transformers() -> Any:
    return pytest.importorskip("transformers")
