"""mp_layers.text_encoder.TextEncoder: lazy offline loading, pooled and per-token outputs,
truncation, devices, cache, injection, copies, errors (tiny random BERT and T5 in a tmp folder)."""

from __future__ import annotations

import shutil
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from mp_layers.testing import save_tiny_bert, save_tiny_t5
from mp_layers.text_encoder import MissingDimError, TextEncoder

transformers = pytest.importorskip("transformers")

CAPTIONS = ["a cat runs", "the red ball jumps on the snow in the sky"]
# ~100 wordpieces: specials, letters (and their continuations, so any lowercase ASCII word
# tokenizes), punctuation and a few caption words.
_LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
_WORDS = [
    "the", "cat", "dog", "runs", "jumps", "red", "blue", "ball", "on", "in", "grass", "snow",
    "video", "of", "fast", "slow", "bird", "flies", "sky", "sea", "car", "road", "man", "walks",
]  # fmt: skip
_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_LETTERS, *[f"##{c}" for c in _LETTERS]]
_VOCAB += [".", ",", "!", *_WORDS]
_SENTENCES = [  # every lowercase letter appears: any lowercase caption tokenizes without <unk>
    "a cat runs on the grass",
    "the red ball jumps on the snow",
    "a blue bird flies in the sky over the sea",
    "a man walks on the road with a dog",
    "the quick brown fox jumps over the lazy dog",
    "video of a car moving fast, then slow!",
]


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random ``BertModel`` (hidden 32, 2 layers, 64 positions; the tokenizer sets no
    limit, so the 64 positions are the real one) and its tokenizer, saved with save_pretrained."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), _VOCAB)


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like ``google/t5-v1_1-base``: a tiny random ``T5ForConditionalGeneration``
    (d_model 16, no position limit) and only a SentencePiece model trained here on a few lines."""
    pytest.importorskip("sentencepiece")
    pytest.importorskip("google.protobuf")  # transformers 5 parses spiece.model with protobuf
    return save_tiny_t5(tmp_path_factory.mktemp("tiny-t5"), _SENTENCES)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _load(folder: Path, model_class: str = "AutoModel") -> tuple[Any, Any]:
    model = getattr(transformers, model_class).from_pretrained(folder, local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def bert(tiny_bert_dir: Path) -> tuple[Any, Any]:
    return _load(tiny_bert_dir)


@pytest.fixture(scope="module")
def t5(tiny_t5_dir: Path) -> tuple[Any, Any]:
    """The tiny T5's encoder and tokenizer, loaded directly (the expected values)."""
    return _load(tiny_t5_dir, "T5EncoderModel")


def expected(model_and_tokenizer: tuple[Any, Any], texts: list[str], **kwargs: Any) -> Any:
    """Last hidden states ``(b, n, d)`` and bool mask ``(b, n)``, computed by hand."""
    model, tokenizer = model_and_tokenizer
    tokens = tokenizer(texts, padding=True, return_tensors="pt", **kwargs)
    with torch.no_grad():
        hidden = model.eval()(**tokens).last_hidden_state
    return hidden, tokens["attention_mask"].bool()


def no_weights(*args: object, **kwargs: object) -> None:
    raise AssertionError("must not load weights or a tokenizer")


class CountingModule(nn.Module):
    """Wraps a transformers encoder; records the batch size of every forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.config = model.config
        self.batches: list[int] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        self.batches.append(input_ids.shape[0])
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


@pytest.fixture
def counting(bert: tuple[Any, Any]) -> tuple[CountingModule, Any]:
    model, tokenizer = bert
    return CountingModule(model), tokenizer


# ---------------------------------------------------------------- loading by folder


def test_loads_lazily_from_a_folder_created_after_construction(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    later = tmp_path / "later"
    encoder = TextEncoder(later, pooling="mean")  # nothing there yet: construction must not look
    assert not encoder.is_loaded
    shutil.copytree(tiny_bert_dir, later)
    out = encoder(CAPTIONS)
    assert encoder.is_loaded
    assert out.shape == (2, 32)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_t5_folder_gives_states_and_the_tokenizers_mask(
    tiny_t5_dir: Path, t5: tuple[Any, Any]
) -> None:
    encoder = TextEncoder(tiny_t5_dir)  # pooling=None: per-token states and mask
    embeds, mask = encoder(CAPTIONS)
    hidden, real = expected(t5, CAPTIONS)
    assert embeds.shape == (2, hidden.shape[1], 16)
    assert (embeds.dtype, mask.dtype) == (torch.float32, torch.bool)
    assert torch.equal(mask, real)
    assert mask[1].all()
    assert not mask[0].all()
    assert (embeds[~mask] == 0).all()  # padded rows are zero
    torch.testing.assert_close(embeds[mask], hidden[real], atol=1e-5, rtol=1e-5)


def test_t5_loads_its_encoder_alone_in_both_modes(tiny_t5_dir: Path, t5: tuple[Any, Any]) -> None:
    pooled = TextEncoder(tiny_t5_dir, pooling="cls")
    out = pooled(CAPTIONS)
    assert type(pooled._model).__name__ == "T5EncoderModel"  # no decoder built
    hidden, _ = expected(t5, CAPTIONS)
    torch.testing.assert_close(out, hidden[:, 0], atol=1e-5, rtol=1e-5)


def test_other_encoders_load_with_automodel(tiny_bert_dir: Path) -> None:
    encoder = TextEncoder(str(tiny_bert_dir))  # a str path: never sent to the hub
    embeds, mask = encoder(CAPTIONS)
    tokens = transformers.AutoTokenizer.from_pretrained(tiny_bert_dir)(CAPTIONS, padding=True)
    assert embeds.shape == (2, len(tokens["input_ids"][0]), 32)
    assert mask.tolist() == [[bool(m) for m in row] for row in tokens["attention_mask"]]


def test_dim_reads_the_config_without_loading_weights(
    tiny_t5_dir: Path, tiny_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AutoModel", "T5EncoderModel", "AutoTokenizer"):
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", no_weights)
    for folder, width in ((tiny_t5_dir, 16), (str(tiny_bert_dir), 32)):
        for pooling in (None, "mean"):
            encoder = TextEncoder(folder, pooling=pooling)
            assert encoder.dim == width
            assert not encoder.is_loaded


def test_dim_argument_must_match_the_config(tiny_bert_dir: Path, tiny_t5_dir: Path) -> None:
    assert TextEncoder(tiny_bert_dir, dim=32).dim == 32
    with pytest.raises(ValueError, match="dim=16"):
        _ = TextEncoder(tiny_bert_dir, dim=16).dim
    with pytest.raises(ValueError, match="dim=8"):
        _ = TextEncoder(tiny_t5_dir, dim=8).dim


def test_a_config_without_a_width_needs_dim(bert: tuple[Any, Any]) -> None:
    model, tokenizer = bert
    module = CountingModule(model)
    module.config = types.SimpleNamespace()  # type: ignore[assignment]
    with pytest.raises(MissingDimError, match="d_model or hidden_size; pass dim=") as caught:
        TextEncoder(module=module, tokenizer=tokenizer)
    assert isinstance(caught.value, TypeError)  # video-ddpm's encoder raised a TypeError,
    assert isinstance(caught.value, ValueError)  # phenaki's a ValueError
    assert TextEncoder(module=module, tokenizer=tokenizer, dim=32).dim == 32


# ---------------------------------------------------------------- pooling and truncation


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooling_matches_a_manual_computation(
    tiny_bert_dir: Path, bert: tuple[Any, Any], pooling: str
) -> None:
    out = TextEncoder(tiny_bert_dir, pooling=pooling)(CAPTIONS)
    hidden, mask = expected(bert, CAPTIONS)
    if pooling == "cls":
        want = hidden[:, 0]
    else:  # real tokens except [CLS] (so [SEP] counts), as Video Diffusion Models' reference
        lengths = mask.sum(dim=1).tolist()
        want = torch.stack([hidden[i, 1:n].mean(dim=0) for i, n in enumerate(lengths)])
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_mean_and_cls_pooling_differ(tiny_bert_dir: Path) -> None:
    mean = TextEncoder(tiny_bert_dir, pooling="mean")(CAPTIONS)
    cls = TextEncoder(tiny_bert_dir, pooling="cls")(CAPTIONS)
    assert not torch.allclose(mean, cls)


def test_padding_does_not_change_a_pooled_embedding(tiny_bert_dir: Path) -> None:
    encoder = TextEncoder(tiny_bert_dir, pooling="mean", cache_size=0)
    alone = encoder("a cat runs")
    batched = encoder(["a cat runs", "the blue bird flies in the sky over the sea on the road"])
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)
    assert alone.shape == (1, 32)


def test_padding_and_the_cache_do_not_change_token_states(tiny_t5_dir: Path) -> None:
    uncached = TextEncoder(tiny_t5_dir, cache_size=0)
    alone, _ = uncached(["a cat runs"])
    batched, _ = uncached(CAPTIONS)
    n = alone.shape[1]
    torch.testing.assert_close(batched[0, :n], alone[0], atol=1e-5, rtol=1e-5)
    cached = TextEncoder(tiny_t5_dir)
    first = cached(CAPTIONS)
    again = cached(CAPTIONS[::-1])  # both from the cache, in another order
    torch.testing.assert_close(again[0], first[0].flip(0))
    assert torch.equal(again[1], first[1].flip(0))


def test_texts_longer_than_the_model_are_truncated(tiny_bert_dir: Path) -> None:
    # The tokenizer sets no limit; the 64 positions of the model must cap the tokens.
    long_text = " ".join(["the cat runs"] * 400)  # ~1200 tokens
    out = TextEncoder(tiny_bert_dir, pooling="mean", cache_size=0)([long_text, "a dog"])
    assert out.shape == (2, 32)
    assert torch.isfinite(out).all()
    embeds, mask = TextEncoder(tiny_bert_dir)([long_text, "a dog"])
    assert embeds.shape == (2, 64, 32)
    assert mask[0].all()


def test_max_length_keeps_only_the_first_tokens(tiny_bert_dir: Path) -> None:
    encoder = TextEncoder(tiny_bert_dir, pooling="mean", max_length=6, cache_size=0)
    # [CLS] + 4 wordpieces + [SEP]: the two differ only after the 4th word.
    same_prefix = encoder(["the cat runs fast on snow", "the cat runs fast in a car"])
    torch.testing.assert_close(same_prefix[0], same_prefix[1])
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        TextEncoder(tiny_bert_dir, max_length=65)("a cat")
    with pytest.raises(ValueError, match="max_length"):
        TextEncoder(tiny_bert_dir, max_length=0)


def test_texts_are_truncated_to_max_length(tiny_t5_dir: Path, t5: tuple[Any, Any]) -> None:
    embeds, mask = TextEncoder(tiny_t5_dir, max_length=4)(CAPTIONS)
    assert embeds.shape == (2, 4, 16)
    assert mask.all()
    hidden, _ = expected(t5, CAPTIONS, truncation=True, max_length=4)
    torch.testing.assert_close(embeds, hidden, atol=1e-5, rtol=1e-5)


def test_default_max_length_applies_only_when_the_model_sets_no_limit(
    tiny_t5_dir: Path, tiny_bert_dir: Path
) -> None:
    class Capped(TextEncoder):
        default_max_length = 7

    long_text = " ".join(["the cat runs"] * 200)  # ~600 tokens
    # T5: relative positions and a tokenizer without a limit.
    assert TextEncoder(tiny_t5_dir)([long_text])[1].shape[1] > 256
    assert Capped(tiny_t5_dir)([long_text])[1].shape == (1, 7)
    assert Capped(tiny_t5_dir, max_length=5)([long_text])[1].shape == (1, 5)
    assert Capped(tiny_bert_dir)([long_text])[1].shape == (1, 64)  # BERT's 64 positions
