"""Tiny C-ViViT configurations and a stand-in perceptual network (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from mp_layers.testing import save_tiny_bert, save_tiny_t5

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
    pytest.importorskip("sentencepiece")
    pytest.importorskip("google.protobuf")  # transformers 5 parses spiece.model with protobuf
    _transformers()
    return save_tiny_t5(tmp_path_factory.mktemp("tiny-t5"), _SENTENCES)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random ``BertModel`` (hidden 32, 64 positions) and its tokenizer in a folder."""
    _transformers()
    words = sorted({w.strip(",!") for s in _SENTENCES for w in s.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), vocab, num_layers=1)


def _transformers() -> Any:
    return pytest.importorskip("transformers")
